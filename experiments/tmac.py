r"""T-MAC: CPU Renaissance via Table Lookup for Low-Bit LLM Deployment on Edge (Wei et al., EuroSys 2025,
arXiv 2407.00088).

A GEMV (one token, N = 1) and a GEMM (a batch of N = 32 tokens) with a 4096×4096 weight matrix quantized to 1–4
bits (group size 128, fp16 scales and zeros), on XLA:CPU. Side by side in one run, with interleaved repeats and
medians (the machine is shared):

  lut        T-MAC's table lookup (``toolkit.kernels.tmac.matmul``, impl="xla", algorithm=tmac.lut_gather: gathers
             from the 16-entry tables of each group of 4 activations, one pass per bit-plane);
  bitserial  the same bit-serial decomposition with the lookups replaced by b ±1 bit-plane matmuls;
  onehot     (full scale, N = 1) the lookup as a one-hot contraction;
  dequant    dequantize-then-matmul (rebuild the float32 matrix from the same packed weights, then ``W @ x``);
  fp32       the float32 matmul of the dequantized matrix (``W @ x``, XLA:CPU's fast layout).

The claims are the paper's contrast: the table-lookup kernel's time grows linearly with the bit width (fit of time
vs bits, R², and its growth from 1 to 4 bits) while dequantize-then-matmul, the control, stays flat; at 1 bit the
lookup beats dequantizing; and a 2-bit table-lookup GEMV beats the float32 GEMV, as reading 7× fewer bytes should.
The last fails here and stays in the report, failed: the paper's speed rests on register-resident int8 tables and
``tbl``/``pshufb`` shuffles, which XLA cannot express (a native kernel is issue 17's). Exactness against
dequantize-then-matmul, the lookup count ``b·N·M·K/4`` and the bytes (b/16 of fp16 plus the group scales) are true
by construction: they are measured and tested (tests/experiments/test_tmac_experiment.py), not claimed. The
memory-bandwidth bound (weight bytes over a measured read bandwidth) is reported beside the times. The Pallas kernel
is only checked for exactness here (interpret mode is not a performance number).

  python -m experiments.tmac --quick --out_dir=runs/tmac
  python -m experiments.tmac --out_dir=runs/tmac_full
"""

from __future__ import annotations

import os

import jax
import numpy as np
from ml_collections import ConfigDict

from toolkit import experiment as xp
from toolkit.kernels import tmac
from toolkit.kernels import tmac_benchmark as bench
from toolkit.kernels.tmac_benchmark import METHODS

PAPER = xp.Paper("tmac", "T-MAC: CPU Renaissance via Table Lookup for Low-Bit LLM Deployment on Edge", "2407.00088")
LABELS = {
  "lut": "T-MAC table lookup (XLA gather)",
  "bitserial": "bit-serial ±1 matmuls",
  "onehot": "one-hot table contraction",
  "dequant": "dequantize → matmul",
  "fp32": "fp32 matmul",
}


def get_config(scale: str = "full") -> ConfigDict:
  """``quick``: 4096×4096, N = 1 and 32, 1–4 bits, 11 repeats. ``full``: the one-hot formulation too, and
  the Pallas exactness check at every bit width."""
  if scale not in ("quick", "full"):
    raise ValueError(f"scale must be 'quick' or 'full', got {scale!r}")
  quick = scale == "quick"
  config = ConfigDict()
  config.m = 4096
  config.k = 4096
  config.n = (1, 32)
  config.bits = (1, 2, 3, 4)
  config.group_size = 128
  config.repeats = 11
  config.methods = ("lut", "bitserial", "dequant", "fp32") if quick else METHODS
  config.onehot_max_n = 1  # the one-hot operand is (M, K/4, 16): 256 MB of float32 at 4096², more work per row
  config.bandwidth_mib = 256  # array read to measure the memory bandwidth
  # Exactness: integer activations, scales and zero points at a small size, every XLA method and Pallas.
  config.exact = ConfigDict(
    {"m": 136, "k": 512, "n": 3, "group_size": 64, "pallas_bits": (2,) if quick else (1, 2, 3, 4)}
  )
  return config


def validate_config(config: ConfigDict) -> None:
  for b in config.bits:
    if b not in tmac.SUPPORTED_BITS:
      raise xp.ConfigError(f"--config.bits: {b} is not one of {tmac.SUPPORTED_BITS}")
  if len(set(config.bits)) < 2:
    raise xp.ConfigError("--config.bits needs at least two bit widths to fit time against bits")
  for name in config.methods:
    if name not in METHODS:
      raise xp.ConfigError(f"--config.methods: unknown method {name!r}; known: {METHODS}")
  if "lut" not in config.methods:
    raise xp.ConfigError("--config.methods must include 'lut' (the method under test)")
  if config.group_size % 4 or config.k % config.group_size:
    raise xp.ConfigError(
      f"--config.group_size ({config.group_size}) must be a multiple of 4 dividing --config.k ({config.k})"
    )
  if config.m < 8 or min(config.n) < 1 or config.repeats < 1:
    raise xp.ConfigError("--config.m must be >= 8, every --config.n >= 1 and --config.repeats >= 1")
  if config.exact.k % config.exact.group_size or config.exact.group_size % 4:
    raise xp.ConfigError("--config.exact.group_size must be a multiple of 4 dividing --config.exact.k")


# ------------------------------------------------------------------------------------------------------------
# The experiment.


def cases(config: ConfigDict) -> list[tuple]:
  return [("bandwidth",), ("exact",)] + [("time", n) for n in config.n]


def run_case(case: tuple, config: ConfigDict, key: jax.Array) -> dict:
  if case[0] == "bandwidth":
    return {"kind": "bandwidth", "gbs": bench.measure_bandwidth(config.bandwidth_mib)}
  if case[0] == "exact":
    c = config.exact
    return {
      "kind": "exact",
      **bench.exact_check(
        key,
        m=c.m,
        k=c.k,
        n=c.n,
        group_size=c.group_size,
        bits_list=tuple(config.bits),
        pallas_bits=tuple(c.pallas_bits),
      ),
    }
  _, n = case
  methods = [m for m in config.methods if m != "onehot" or n <= config.onehot_max_n]
  sweep = bench.time_sweep(key, config.m, config.k, n, tuple(config.bits), config.group_size, methods, config.repeats)
  return {"kind": "time", "n": n, "sweep": sweep}


def plot(results: list[dict], ctx: xp.Context) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  ns = sorted({r["n"] for r in results})
  fig, axes = plt.subplots(1, len(ns) + 1, figsize=(5.2 * (len(ns) + 1), 4.2))
  all_fits = bench.fits(results)
  for ax, n in zip(axes, ns):
    rows = sorted((r for r in results if r["n"] == n), key=lambda r: r["bits"])
    bits = np.array([r["bits"] for r in rows])
    for method in (m for m in METHODS if m in rows[0]["ms"]):
      t = np.array([r["ms"][method] for r in rows])
      (line,) = ax.plot(bits, t, "o-" if method != "fp32" else "s:", label=LABELS[method])
      if method == "lut":
        f = all_fits[(n, method)]
        ax.plot(
          bits,
          f["slope_ms_per_bit"] * bits + f["intercept_ms"],
          "--",
          color=line.get_color(),
          lw=1,
          label=f"linear fit, R² = {f['r2']:.3f}",
        )
    ax.plot(
      bits,
      [r["bandwidth_bound_ms"] for r in rows],
      "k:",
      lw=1,
      label="bandwidth bound (packed weights)",
    )
    ax.set(
      xlabel="weight bits",
      ylabel="ms (median)",
      yscale="log",
      xticks=bits,
      title=f"{'GEMV' if n == 1 else 'GEMM'} N = {n}, {rows[0]['m']}×{rows[0]['k']}, XLA:CPU",
    )
    ax.legend(fontsize=7)
  ax = axes[-1]
  rows = sorted((r for r in results if r["n"] == ns[0]), key=lambda r: r["bits"])
  bits = np.array([r["bits"] for r in rows])
  ax.bar(bits - 0.2, [r["index_bytes"] / 2**20 for r in rows], 0.4, label="packed indices")
  ax.bar(
    bits + 0.2,
    [(r["weight_bytes"] - r["index_bytes"]) / 2**20 for r in rows],
    0.4,
    label="fp16 scales + zeros",
  )
  ax.axhline(rows[0]["fp16_bytes"] / 2**20, color="gray", ls=":", label="fp16 weights")
  ax.set(
    xlabel="weight bits",
    ylabel="MiB",
    yscale="log",
    xticks=bits,
    title="weight bytes read per product",
  )
  ax.legend(fontsize=7)
  fig.tight_layout()
  ctx.save_figure(fig, "time_vs_bits")


def run(config: ConfigDict, ctx: xp.Context) -> dict[str, float]:
  key = ctx.key()

  def describe(r):
    if r["kind"] == "bandwidth":
      return f"read bandwidth {r['gbs']:.1f} GB/s"
    if r["kind"] == "exact":
      return f"exactness: max |error| {r['max_abs_err']:g}"
    return f"N={r['n']}: " + "; ".join(
      f"{b['bits']} bits " + " ".join(f"{k}={v:.1f}ms" for k, v in b["ms"].items()) for b in r["sweep"]
    )

  # One checkpoint per case: a restarted run skips the cases already measured.
  all_results = xp.run_cases(
    ctx, cases(config), lambda i, case: run_case(case, config, jax.random.fold_in(key, i)), describe
  )
  bandwidth = next(r["gbs"] for r in all_results if r["kind"] == "bandwidth")
  exact = next(r for r in all_results if r["kind"] == "exact")
  timed = [bench.with_bounds(b, bandwidth) for r in all_results if r["kind"] == "time" for b in r["sweep"]]

  lines = [
    (
      f"# T-MAC on XLA:CPU ({jax.devices()[0].device_kind}, {os.cpu_count()} cores, shared machine), "
      f"group size {config.group_size}, fp16 scales and zeros, medians of {config.repeats} interleaved "
      "repeats"
    ),
    "",
  ] + bench.table_lines(timed, bandwidth)
  lines += [
    "",
    f"Exactness (integer activations, scales, zeros; {config.exact.m}×{config.exact.k}, N = "
    f"{config.exact.n}): max |error| = {exact['max_abs_err']:g} over " + ", ".join(sorted(exact["errors"])),
  ]
  ctx.write_text("table.md", "\n".join(lines) + "\n", echo=True)
  plot(timed, ctx)

  measured: dict[str, float] = {
    "read_bandwidth_gbs": bandwidth,
    "exact_max_abs_err": exact["max_abs_err"],
  }
  for r in timed:
    for method, ms in r["ms"].items():
      measured[f"n{r['n']}_w{r['bits']}_{method}_ms"] = ms
    if "fp32" in r["ms"]:
      measured[f"n{r['n']}_w{r['bits']}_lut_vs_fp32_speedup"] = r["ms"]["fp32"] / r["ms"]["lut"]
    measured[f"n{r['n']}_w{r['bits']}_lut_vs_dequant_speedup"] = (
      r["ms"]["dequant"] / r["ms"]["lut"] if "dequant" in r["ms"] else float("nan")
    )
    measured[f"n{r['n']}_w{r['bits']}_max_rel_err"] = max(
      r["max_rel_err"][m] for m in ("lut", "bitserial", "onehot") if m in r["max_rel_err"]
    )
    measured[f"n{r['n']}_w{r['bits']}_bandwidth_bound_ms"] = r["bandwidth_bound_ms"]
  for (n, method), f in bench.fits(timed).items():
    measured[f"n{n}_{method}_time_vs_bits_r2"] = f["r2"]
    measured[f"n{n}_{method}_slope_ms_per_bit"] = f["slope_ms_per_bit"]
  gemv = sorted((r for r in timed if r["n"] == min(config.n)), key=lambda r: r["bits"])
  measured["gemv_lut_time_vs_bits_r2"] = measured[f"n{gemv[0]['n']}_lut_time_vs_bits_r2"]
  measured["gemm_lut_time_vs_bits_r2"] = measured[f"n{max(config.n)}_lut_time_vs_bits_r2"]
  # The lookup count and the index bytes are exactly proportional to the bit width.
  measured["lookups_and_index_bytes_exactly_linear"] = float(
    all(
      r["lookups"] * gemv[0]["bits"] == gemv[0]["lookups"] * r["bits"]
      and r["index_bytes"] * 8 == r["bits"] * (-(-r["m"] // 8) * 8) * r["k"]
      for r in gemv
    )
  )
  by_bits = {r["bits"]: r for r in gemv}
  if 2 in by_bits:
    measured["w2_compression_vs_fp16"] = by_bits[2]["fp16_bytes"] / by_bits[2]["weight_bytes"]
  if 1 in by_bits and "dequant" in by_bits[1]["ms"]:
    measured["gemv_w1_lut_vs_dequant_speedup"] = by_bits[1]["ms"]["dequant"] / by_bits[1]["ms"]["lut"]
  if 2 in by_bits and "fp32" in by_bits[2]["ms"]:
    measured["gemv_w2_lut_vs_fp32_speedup"] = measured[f"n{gemv[0]['n']}_w2_lut_vs_fp32_speedup"]
  # The paper's contrast, on the batch of tokens: time at the widest over the narrowest bit width, per method.
  gemm = {r["bits"]: r for r in timed if r["n"] == max(config.n)}
  narrow, wide = gemm[min(gemm)]["ms"], gemm[max(gemm)]["ms"]
  for method in ("lut", "dequant"):
    if method in narrow:
      measured[f"gemm_{method}_growth_over_bits"] = wide[method] / narrow[method]
  measured["max_rel_err_vs_dequant"] = max(measured[f"n{r['n']}_w{r['bits']}_max_rel_err"] for r in timed)
  return measured


CLAIMS = (
  # Judged on the batch of tokens (GEMM), where the lookups dominate the time. The single-token GEMV's fit is in
  # the metrics too (gemv_lut_time_vs_bits_r2): at 4096² its one-bit steps (3–6 ms) are the size of this shared
  # 2-core machine's timing noise, and its R² ranged 0.88–0.99 over five runs.
  xp.Claim(
    metric="gemm_lut_time_vs_bits_r2",
    statement="The table-lookup kernel's time grows linearly with the weight bit width (R² of time vs bits, 1–4 "
    "bits, a batch of 32 tokens, medians on a shared CPU)",
    paper_value="GEMV kernel figure (Llama-2 shapes, 1 thread): T-MAC latency rises about linearly from 1 to 4 bits "
    "while dequantization kernels stay flat",
    comparison=">=",
    target=0.9,
  ),
  xp.Claim(
    metric="gemm_lut_growth_over_bits",
    statement="The table-lookup time grows with the bit width: 4-bit over 1-bit time ≥ 2.5 (4 for a line through "
    "the origin; a batch of 32 tokens)",
    paper_value="GEMV kernel figure: T-MAC latency rises about linearly from 1 to 4 bits (one table pass per "
    "bit-plane)",
    comparison=">=",
    target=2.5,
  ),
  xp.Claim(
    metric="gemm_dequant_growth_over_bits",
    statement="Control: dequantize-then-matmul stays flat in the bit width: 4-bit over 1-bit time ≤ 1.5 (same "
    "packed weights, same batch)",
    paper_value="GEMV kernel figure: llama.cpp's dequantization kernels stay flat across 1–4 bits (3 bits often worst)",
    comparison="<=",
    target=1.5,
  ),
  xp.Claim(
    metric="gemv_w1_lut_vs_dequant_speedup",
    statement="At 1 bit the table-lookup GEMV beats dequantize-then-matmul on this CPU (no claim against fp32)",
    paper_value="largest gains at 1–2 bits, where dequantization kernels pay their flat cost",
    comparison=">=",
    target=1.5,
  ),
  xp.Claim(
    metric="gemv_w2_lut_vs_fp32_speedup",
    statement="A 2-bit table-lookup GEMV beats the float32 GEMV (it reads 7× fewer weight bytes); fails on XLA:CPU, "
    "which cannot keep the tables in registers",
    paper_value="repository README: Llama-2-7B W2 prefill on a Surface Laptop 7 (4 threads) 50.1 tok/s vs 21.5 for "
    "OpenBLAS's float matmul; kernel figure: 4096² GEMV ≈ 0.05–0.1 ms at 1–2 bits on M2 (1 thread)",
    comparison=">=",
    target=1.0,
  ),
)

EXPERIMENT = xp.Experiment("tmac", PAPER, CLAIMS, get_config, run, validate_config)

if __name__ == "__main__":
  xp.define_flags(EXPERIMENT)
  xp.main(EXPERIMENT)
