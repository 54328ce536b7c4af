"""Benchmark constructions and measurements for T-MAC's table-lookup matmul (apart from the method itself).

Shared by ``experiments/tmac.py`` and ``experiments/bench_tmac.py``: random low-bit weights, the memory read
bandwidth, interleaved timing of every formulation against dequantize-then-matmul and the fp32 matmul, the
exactness check in integer arithmetic, the linear fit of time against bits, and the markdown table.

>>> round(linear_fit([1, 2, 3, 4], [3.0, 5.0, 7.0, 9.0])["slope_ms_per_bit"], 9)
2.0
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from toolkit.kernels import tmac

# The timed methods: the three XLA formulations of the lookup, then the two baselines.
METHODS = ("lut", "bitserial", "onehot", "dequant", "fp32")
ALGORITHMS = {"lut": tmac.lut_gather, "bitserial": tmac.bitserial_matmul, "onehot": tmac.onehot_lut}


def random_weights(key: jax.Array, m: int, k: int, bits: int, group_size: int, integer: bool = False):
  """Uniform codes with fp16 scales and zeros (integer-valued ones when ``integer``)."""
  kc, ks, kz = jax.random.split(key, 3)
  codes = jax.random.randint(kc, (m, k), 0, 2**bits, dtype=jnp.int32)
  g = k // group_size
  if integer:
    scales = jax.random.randint(ks, (m, g), 1, 4).astype(jnp.float16)
    zeros = jax.random.randint(kz, (m, g), 0, 2**bits).astype(jnp.float16)
  else:
    scales = jax.random.uniform(ks, (m, g), minval=0.005, maxval=0.02).astype(jnp.float16)
    zeros = jax.random.uniform(kz, (m, g), maxval=2**bits - 1).astype(jnp.float16)
  return codes, scales, zeros


def measure_bandwidth(mib: int = 256, num_repeats: int = 5) -> float:
  """Memory read bandwidth in GB/s: median time of summing a ``mib`` MiB float32 array (no write-back)."""
  a = jnp.ones((mib * (1 << 20) // 4,), jnp.float32)
  total = jax.jit(jnp.sum)
  total(a).block_until_ready()
  times = []
  for _ in range(num_repeats):
    start = time.perf_counter()
    total(a).block_until_ready()
    times.append(time.perf_counter() - start)
  return a.nbytes / float(np.median(times)) / 1e9


def method_fn(method: str):
  """``f(x, packed, w)`` for each method of ``METHODS``; ``w`` is the dense float32 matrix, read by ``fp32`` only."""
  if method in ALGORITHMS:
    return jax.jit(lambda x, packed, w: tmac.matmul(x, packed, impl="xla", algorithm=ALGORITHMS[method]))
  if method == "dequant":
    return jax.jit(lambda x, packed, w: jnp.dot(tmac.dequantize(packed), x.T).T)
  if method == "fp32":
    return jax.jit(lambda x, packed, w: jnp.dot(w, x.T).T)
  raise ValueError(f"unknown method {method!r}")


def time_sweep(key: jax.Array, m: int, k: int, n: int, bits_list, group_size: int, methods, num_repeats: int) -> list:
  """Times every method at every bit width on the same activations, all interleaved in each repeat (so a change
  of load on the shared machine hits every bit width alike), and returns one dict of medians (ms) per bit width."""
  kx, kw = jax.random.split(key)
  x = jax.random.normal(kx, (n, k), jnp.float32)
  fns = {name: method_fn(name) for name in methods}
  setups, rel_err = {}, {}
  for bits in bits_list:
    codes, scales, zeros = random_weights(jax.random.fold_in(kw, bits), m, k, bits, group_size)
    packed = tmac.preprocess(codes, scales, zeros, bits=bits, group_size=group_size)
    w = tmac.dequantize(packed)
    reference = jnp.dot(w, x.T, precision=jax.lax.Precision.HIGHEST).T
    setups[bits] = (packed, w)
    rel_err[bits] = {}
    for name, f in fns.items():  # compile, and check every method against the reference
      out = f(x, packed, w).block_until_ready()
      rel_err[bits][name] = float(jnp.max(jnp.abs(out - reference)) / jnp.max(jnp.abs(reference)))
  times = {(bits, name): [] for bits in bits_list for name in fns}
  for _ in range(num_repeats):
    for bits in bits_list:
      packed, w = setups[bits]
      for name, f in fns.items():
        start = time.perf_counter()
        f(x, packed, w).block_until_ready()
        times[bits, name].append(time.perf_counter() - start)
  medians = {key: 1e3 * float(np.median(t)) for key, t in times.items()}
  if "fp32" in fns:
    # The same dense product at every bit width: one median over all its samples, so the per-row ratios are not
    # swayed by where in the loop (after which cache-flushing call) a bit width's fp32 sample fell.
    pooled = 1e3 * float(np.median([v for bits in bits_list for v in times[bits, "fp32"]]))
    medians.update({(bits, "fp32"): pooled for bits in bits_list})
  results = []
  for bits in bits_list:
    packed = setups[bits][0]
    results.append(
      {
        "n": n,
        "bits": bits,
        "m": m,
        "k": k,
        "ms": {name: medians[bits, name] for name in fns},
        "ms_all": {name: [1e3 * v for v in times[bits, name]] for name in fns},
        "max_rel_err": rel_err[bits],
        "weight_bytes": packed.nbytes,
        "index_bytes": int(packed.indices.size) * 4,
        "fp16_bytes": 2 * m * k,
        "lookups": tmac.lookup_count(packed, n),
      }
    )
  return results


def with_bounds(result: dict, bandwidth_gbs: float) -> dict:
  """Adds the time to read the packed weights (and the fp32 matrix) once at the measured bandwidth."""
  return {
    **result,
    "bandwidth_bound_ms": 1e3 * result["weight_bytes"] / (bandwidth_gbs * 1e9),
    "fp32_bandwidth_bound_ms": 1e3 * 4 * result["m"] * result["k"] / (bandwidth_gbs * 1e9),
  }


def exact_check(key: jax.Array, *, m: int, k: int, n: int, group_size: int, bits_list, pallas_bits) -> dict:
  """Max |y − x·Ŵᵀ| with integer activations, scales and zeros (every sum exact in float32) for every XLA
  algorithm and bit width, and for Pallas (interpret mode on CPU) at ``pallas_bits``: ``{"errors": {name: max
  error}, "max_abs_err": the largest}``."""
  errors = {}
  for bits in bits_list:
    kw, kx = jax.random.split(jax.random.fold_in(key, bits))
    codes, scales, zeros = random_weights(kw, m, k, bits, group_size, integer=True)
    x = jax.random.randint(kx, (n, k), -8, 9).astype(jnp.float32)
    w = np.repeat(np.asarray(scales, np.int64), group_size, 1) * (
      np.asarray(codes, np.int64) - np.repeat(np.asarray(zeros, np.int64), group_size, 1)
    )
    expected = np.asarray(x, np.int64) @ w.T
    packed = tmac.preprocess(codes, scales, zeros, bits=bits, group_size=group_size)
    runs = {name: {"impl": "xla", "algorithm": algorithm} for name, algorithm in ALGORITHMS.items()}
    if bits in pallas_bits:
      runs["pallas"] = {"impl": "pallas"}
    for name, kwargs in runs.items():
      y = np.asarray(tmac.matmul(x, packed, **kwargs), np.float64)
      errors[f"{name}_w{bits}"] = float(np.max(np.abs(y - expected)))
    errors[f"dequantize_w{bits}"] = float(np.max(np.abs(np.asarray(tmac.dequantize(packed), np.float64) - w)))
  return {"errors": errors, "max_abs_err": max(errors.values())}


def linear_fit(bits, times) -> dict:
  """Least-squares line ``time = slope·bits + intercept`` and its R²."""
  b, t = np.asarray(bits, np.float64), np.asarray(times, np.float64)
  slope, intercept = np.polyfit(b, t, 1)
  residual = t - (slope * b + intercept)
  total = np.sum((t - t.mean()) ** 2)
  r2 = 1.0 - float(np.sum(residual**2) / total) if total > 0 else 1.0
  return {"slope_ms_per_bit": float(slope), "intercept_ms": float(intercept), "r2": r2}


def fits(results: list[dict]) -> dict:
  """Per (N, method): the linear fit of median time against bits."""
  out = {}
  for n in sorted({r["n"] for r in results}):
    rows = sorted((r for r in results if r["n"] == n), key=lambda r: r["bits"])
    for method in rows[0]["ms"]:
      if method != "fp32":  # one pooled median: flat by construction
        out[(n, method)] = linear_fit([r["bits"] for r in rows], [r["ms"][method] for r in rows])
  return out


def table_lines(results: list[dict], bandwidth_gbs: float) -> list[str]:
  """The benchmark's Markdown table: milliseconds per method, ratios to the baselines and the bandwidth bound."""
  methods = [m for m in METHODS if any(m in r["ms"] for r in results)]
  head = " | ".join(f"{m} ms" for m in methods)
  lines = [
    (
      f"| N | bits | {head} | lut speed-up vs dequant | vs fp32 | weight MiB | fp16 / weight bytes | "
      f"bandwidth bound ms | lookups |"
    ),
    "|---" * (len(methods) + 8) + "|",
  ]
  for r in results:
    ms = r["ms"]
    cells = " | ".join(f"{ms[m]:.2f}" if m in ms else "—" for m in methods)
    ratio = lambda base, ms=ms: f"{ms[base] / ms['lut']:.2f}×" if base in ms else "—"
    lines.append(
      f"| {r['n']} | {r['bits']} | {cells} | {ratio('dequant')} | {ratio('fp32')} | "
      f"{r['weight_bytes'] / 2**20:.2f} | {r['fp16_bytes'] / r['weight_bytes']:.2f} | "
      f"{r['bandwidth_bound_ms']:.3f} | {r['lookups']:,} |"
    )
  fp32_bound = results[0]["fp32_bandwidth_bound_ms"]
  lines += [
    "",
    (
      f"fp32: one median pooled over the bit widths (the same product). Read bandwidth {bandwidth_gbs:.1f} "
      f"GB/s (sum of a float32 array larger than the caches); at that rate the fp32 matrix takes "
      f"{fp32_bound:.2f} ms, which the fp32 product can beat when part of the matrix stays in the last-level "
      "cache."
    ),
    "",
    "| N | method | slope ms/bit | intercept ms | R² |",
    "|---|---|---|---|---|",
  ]
  for (n, method), f in fits(results).items():
    lines.append(f"| {n} | {method} | {f['slope_ms_per_bit']:.2f} | {f['intercept_ms']:.2f} | {f['r2']:.3f} |")
  return lines


__all__ = [
  "ALGORITHMS",
  "METHODS",
  "exact_check",
  "fits",
  "linear_fit",
  "measure_bandwidth",
  "method_fn",
  "random_weights",
  "table_lines",
  "time_sweep",
  "with_bounds",
]
