r"""ZeroQuant-V2 (Yao et al., AAAI 2024, arXiv 2303.08302): RTN, GPTQ and LoRC weight-only quantization of the
toolkit's small byte-level transformer LM.

Every ``nn.Dense`` of the quick-trained model of ``toolkit.models.lm_training.pretrained`` (q/k/v/o projections,
the MLP's up/down projections and the LM head: 3.2M of its 3.3M parameters) is quantized to b ∈ {8, 4, 3} bits
(W8A16, W4A16, W3A16: activations stay in float32), in asymmetric groups of ``group_size`` = 128 consecutive input
channels (the GPTQ convention; ``--config.group_size=0`` for per-row), with

  rtn        round to nearest (the baseline of ZeroQuant-V2's study);
  gptq       GPTQ (Frantar et al., ICLR 2023, arXiv 2210.17323), calibrated sequentially: each layer's Hessian
             2XᵀX/n is measured on training windows passed through the model whose earlier layers are already
             quantized;
  + LoRC     low-rank compensation of each layer's error W − Ŵ with rank 8 (ZeroQuant-V2's LoRC), Û and V̂ stored
             at 8 bits, folded into the kernel for evaluation.

The metric is the perplexity per byte on consecutive windows of the validation split, as long as the model's
training windows (and the KL divergence of the quantized model's next-byte distributions from the fp32 model's).
The model size
counts the b-bit codes, fp16 group scales and b-bit zero points, the LoRC factors and their scales, and the
remaining parameters (embedding, norms) at fp16.

  python -m experiments.zeroquant --quick --out_dir=runs/zeroquant
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np
from absl import logging
from ml_collections import ConfigDict

from toolkit import experiment as xp
from toolkit.data import text
from toolkit.models import lm_training
from toolkit.models import transformer as tfm
from toolkit.quant import zeroquant as zq

PAPER = xp.Paper(
  "zeroquant_v2",
  "ZeroQuant-V2: Exploring Post-training Quantization in LLMs from Comprehensive Study to Low Rank Compensation",
  "2303.08302",
)
METHODS = ("rtn", "gptq")
LABELS = {
  ("rtn", False): "RTN",
  ("rtn", True): "RTN + LoRC",
  ("gptq", False): "GPTQ",
  ("gptq", True): "GPTQ + LoRC",
}


def get_config(scale: str = "full") -> ConfigDict:
  if scale not in ("quick", "full"):
    raise ValueError(f"scale must be 'quick' or 'full', got {scale!r}")
  quick = scale == "quick"
  config = ConfigDict()
  # 2 bits is the sensitive setting, where RTN costs several % perplexity on this small model (3 bits per row
  # costs only ~1%: measured 6.659 against 6.585).
  config.bits = (8, 4, 3, 2)
  config.methods = METHODS
  config.group_size = 128  # consecutive input channels per scale; 0 means one scale per output row
  # The same methods with one scale per output row at these bits (empty: no per-row study).
  config.row_bits = ()
  # Token-wise activations at activation_bits into every nn.Dense (0: no activation cases): alone (W32A8, against
  # RTN W8A16 per row, the same bits and granularity), and with the weights of each (method, bits) in groups.
  config.activation_bits = 8
  config.activation_weights = (("rtn", 8), ("gptq", 4))
  config.symmetric = False
  config.lorc_rank = 8  # the paper's default m
  config.lorc_bits = 8  # bits of Û and V̂ (0: fp16)
  config.damp = 0.01
  config.block_size = 128
  config.sequential = True  # GPTQ calibration on the outputs of the already-quantized layers
  config.exclude = ()  # names of layers kept in floating point, e.g. ("lm_head",)
  config.seq_len = 0  # tokens per window; 0: the pretrained model's training length (TrainRecipe().seq_len)
  config.calibration_tokens = 8192 if quick else 32768  # random training windows of seq_len tokens, in total
  config.calibration_batch = 8  # windows per calibration batch
  config.eval_tokens = 32_768 if quick else 0  # first validation tokens scored (0: the whole split)
  config.eval_batch = 32
  config.train_steps = 0  # 0: the cached pretrained model; > 0: a fresh tiny model (tests only)
  return config


def validate_config(config: ConfigDict) -> None:
  bad_bits = [b for b in config.bits if b not in zq.SUPPORTED_BITS]
  if bad_bits or not config.bits:
    raise xp.ConfigError(f"--config.bits must be a non-empty tuple from {zq.SUPPORTED_BITS}, got {config.bits}")
  if any(b not in zq.SUPPORTED_BITS for b in config.row_bits):
    raise xp.ConfigError(f"--config.row_bits must be a tuple from {zq.SUPPORTED_BITS}, got {config.row_bits}")
  if config.activation_bits and config.activation_bits not in zq.SUPPORTED_BITS:
    raise xp.ConfigError(
      f"--config.activation_bits must be 0 (no activation cases) or in {zq.SUPPORTED_BITS}, "
      f"got {config.activation_bits}"
    )
  for pair in config.activation_weights:
    if len(pair) != 2 or pair[0] not in METHODS or pair[1] not in zq.SUPPORTED_BITS:
      raise xp.ConfigError(
        f"--config.activation_weights must hold (method, bits) pairs with a method of {METHODS} and bits in "
        f"{zq.SUPPORTED_BITS}; got {pair!r}"
      )
  if not config.methods or any(m not in METHODS for m in config.methods):
    raise xp.ConfigError(f"--config.methods must be a non-empty tuple from {METHODS}, got {config.methods}")
  if config.group_size < 0:
    raise xp.ConfigError(f"--config.group_size must be >= 0 (0: per row), got {config.group_size}")
  if config.lorc_rank < 0 or (config.lorc_bits and config.lorc_bits not in zq.SUPPORTED_BITS):
    raise xp.ConfigError(
      f"--config.lorc_rank must be >= 0 and --config.lorc_bits 0 or in {zq.SUPPORTED_BITS}, "
      f"got {config.lorc_rank} and {config.lorc_bits}"
    )
  for name in ("calibration_tokens", "calibration_batch", "eval_batch", "block_size"):
    if config[name] < 1:
      raise xp.ConfigError(f"--config.{name} must be >= 1, got {config[name]}")
  if config.seq_len < 0 or (config.train_steps and not config.seq_len):
    raise xp.ConfigError(
      f"--config.seq_len must be >= 0 (0: the pretrained model's), and set with train_steps; got {config.seq_len}"
    )
  if config.eval_tokens < 0:
    raise xp.ConfigError(f"--config.eval_tokens must be >= 0 (0: the whole validation split), got {config.eval_tokens}")


def describe_model(model: lm_training.Pretrained, config: ConfigDict) -> str:
  if model.record is None:
    return f"tiny model trained {config.train_steps} steps"
  return f"pretrained {os.path.basename(model.path)} (validation perplexity {model.record.valid_perplexity:.3f})"


def algorithm(method: str, config: ConfigDict):
  """The weight quantizer that ``config.methods`` names."""
  return {
    "rtn": zq.RTNQuantizer(),
    "gptq": zq.GPTQQuantizer(damp=config.damp, block_size=config.block_size),
  }[method]


def eval_windows(tokens: np.ndarray, config: ConfigDict, seq_len: int) -> np.ndarray:
  """Consecutive non-overlapping windows of seq_len + 1 tokens (as ``lm_training.evaluate``)."""
  if config.eval_tokens:
    tokens = tokens[: config.eval_tokens + 1]
  windows = text.consecutive_windows(tokens, seq_len)
  if windows.shape[0] < 1:
    raise xp.ConfigError(f"--config.eval_tokens leaves no window of {seq_len} tokens")
  return windows


def cases(config: ConfigDict) -> list[dict]:
  """fp32; each method × bits (× LoRC) in groups, then per row; then the weight-and-activation cases."""
  fp32 = {"method": "fp32", "bits": 32, "lorc": False, "group": 0, "act_bits": 0}
  out = [fp32]
  lorcs = (False, True) if config.lorc_rank else (False,)
  studies = [(config.group_size, config.bits)]
  if config.group_size:  # with group_size = 0 the main study is already per row
    studies.append((0, config.row_bits))
  for group, bits_list in studies:
    for bits in bits_list:
      for method in config.methods:
        out += [{"method": method, "bits": bits, "lorc": lorc, "group": group, "act_bits": 0} for lorc in lorcs]
  a = config.activation_bits
  if a:
    # Activations alone (W32Aa) against weights alone at the same bits and granularity (RTN WaA16, one scale per
    # row), then activations with quantized weights.
    twin = {"method": "rtn", "bits": a, "lorc": False, "group": 0, "act_bits": 0}
    out += [{**fp32, "act_bits": a}] + ([twin] if twin not in out else [])
    for method, bits in config.activation_weights:  # methods of METHODS (validate_config)
      out.append({"method": method, "bits": bits, "lorc": False, "group": config.group_size, "act_bits": a})
  return out


def run(config: ConfigDict, ctx: xp.Context) -> dict[str, float]:
  lm = lm_training.load_model(config.train_steps, max_len=config.seq_len)
  params, model_config = lm.params, lm.config
  description = describe_model(lm, config)
  logging.info("model: %s", description)
  corpus = text.split(text.encode(text.load_corpus()))
  model = tfm.Transformer(model_config)
  seq_len = config.seq_len or lm_training.TrainRecipe().seq_len
  windows = eval_windows(corpus.valid, config, seq_len)
  evaluate = lm_training.make_evaluator(model_config, windows, batch_size=config.eval_batch, reference_params=params)
  n_calib = max(1, config.calibration_tokens // seq_len)
  calib = np.asarray(text.batches(jax.random.fold_in(ctx.key(), 1), corpus.train, n_calib, seq_len))[:, :-1]
  calibration = [calib[i : i + config.calibration_batch] for i in range(0, len(calib), config.calibration_batch)]
  fp_bytes = sum(int(np.size(x)) for x in jax.tree.leaves(params))

  def run_case(i, case):
    start = time.perf_counter()
    if case["method"] == "fp32":
      quantized, size = params, None
    else:
      out = zq.quantize_model(
        model.apply,
        params,
        calibration,
        algorithm=algorithm(case["method"], config),
        bits=case["bits"],
        group_size=case["group"] or None,
        symmetric=config.symmetric,
        lorc_rank=config.lorc_rank if case["lorc"] else None,
        lorc_bits=config.lorc_bits or None,
        exclude=tuple(config.exclude),
        sequential=config.sequential,
      )
      quantized, size = out.params, out.size
    activations = zq.DenseInputQuantizer(case["act_bits"]) if case["act_bits"] else None
    evaluation = evaluate(quantized, activations)
    ppl, kl = evaluation.perplexity, evaluation.kl
    result = dict(case, perplexity=ppl, kl=kl, seconds=time.perf_counter() - start)
    if size is None:
      result.update(bytes=4.0 * fp_bytes, lorc_fraction=0.0)
    else:
      result.update(
        bytes=size.total_bytes,
        weight_bytes=size.weight_bytes,
        scale_bytes=size.scale_bytes,
        lorc_bytes=size.lorc_bytes,
        lorc_fraction=size.lorc_fraction,
        fp16_bytes=size.fp16_bytes,
        quantized_params=size.quantized_params,
      )
    return result

  def describe(r):
    return (
      f"{label(r)} {setting(r)}: perplexity {r['perplexity']:.4f}, KL to fp32 {r['kl']:.2e}, "
      f"{r['bytes'] / 1e6:.3f} MB, {r['seconds']:.1f} s"
    )

  results = xp.run_cases(ctx, cases(config), run_case, describe)
  write_table(results, config, description, len(windows), seq_len, n_calib, ctx)
  plot(results, config, ctx)
  return measure(results, config)


def label(r: dict) -> str:
  return "fp32" if r["method"] == "fp32" else LABELS[(r["method"], r["lorc"])]


def setting(r: dict) -> str:
  """W4A16 g128, W3A16 row, W32A8, ... (A16: activations left in floating point, as the paper's fp16 ones)."""
  weights = "" if r["method"] == "fp32" else (f" g{r['group']}" if r["group"] else " row")
  return f"W{r['bits']}A{r['act_bits'] or 16}{weights}"


def case_name(r: dict) -> str:
  """The metrics' prefix: rtn_w4 (groups), rtn_w4_row, gptq_w3_row_lorc, gptq_w4_a8, fp32_a8."""
  if r["method"] == "fp32":
    return "fp32" + (f"_a{r['act_bits']}" if r["act_bits"] else "")
  name = f"{r['method']}_w{r['bits']}" + ("" if r["group"] else "_row")
  return name + (f"_a{r['act_bits']}" if r["act_bits"] else "") + ("_lorc" if r["lorc"] else "")


def find(results, method, bits, lorc=False, *, row=False, act_bits=0):
  """The result of one case (``row``: weights with one scale per output row); ``None`` if it did not run."""
  for r in results:
    per_row = r["method"] != "fp32" and not r["group"]
    if (r["method"], r["bits"], r["lorc"], per_row, r["act_bits"]) == (method, bits, lorc, row, act_bits):
      return r
  return None


def measure(results: list[dict], config: ConfigDict) -> dict[str, float]:
  fp = find(results, "fp32", 32)
  measured = {"fp32_perplexity": fp["perplexity"], "fp32_bytes": fp["bytes"]}

  def gap(r):  # the perplexity a case adds to the fp32 model's
    return r["perplexity"] - fp["perplexity"]

  for r in results[1:]:
    name = case_name(r)
    measured[f"{name}_perplexity"] = r["perplexity"]
    measured[f"{name}_kl"] = r["kl"]
    measured[f"{name}_bytes"] = r["bytes"]
    if r["lorc"]:
      base = find(results, r["method"], r["bits"], row=not r["group"])
      base_name = case_name(base)
      measured["lorc_extra_param_fraction"] = r["lorc_fraction"]
      measured[f"lorc_ppl_ratio_{base_name}"] = r["perplexity"] / base["perplexity"]
      measured[f"lorc_kl_ratio_{base_name}"] = r["kl"] / base["kl"]
      # The share of the weight quantization's perplexity gap that LoRC wins back (1: all of it).
      measured[f"lorc_gap_recovered_{base_name}"] = (base["perplexity"] - r["perplexity"]) / gap(base)
  main_row = not config.group_size
  for bits in config.bits:
    rtn, gptq = find(results, "rtn", bits, row=main_row), find(results, "gptq", bits, row=main_row)
    if rtn:
      measured[f"rtn_w{bits}_ppl_increase"] = rtn["perplexity"] / fp["perplexity"] - 1.0
    if rtn and gptq:
      measured[f"gptq_over_rtn_ppl_w{bits}"] = gptq["perplexity"] / rtn["perplexity"]
      measured[f"gptq_over_rtn_gap_w{bits}"] = gap(gptq) / gap(rtn)
  for bits in config.row_bits if config.group_size else ():
    rtn, gptq = find(results, "rtn", bits, row=True), find(results, "gptq", bits, row=True)
    if rtn:
      measured[f"rtn_w{bits}_row_ppl_increase"] = rtn["perplexity"] / fp["perplexity"] - 1.0
    if rtn and gptq:
      measured[f"gptq_over_rtn_gap_w{bits}_row"] = gap(gptq) / gap(rtn)
  a = config.activation_bits
  acts, weights = find(results, "fp32", 32, act_bits=a), find(results, "rtn", a, row=True)
  if a and acts and weights:
    # Equal bits and equal granularity (one scale per row of the activations, one per row of the weights).
    measured[f"a{a}_over_w{a}_kl"] = acts["kl"] / weights["kl"]
    measured[f"a{a}_ppl_increase"] = acts["perplexity"] / fp["perplexity"] - 1.0
  for method, bits in config.activation_weights if a else ():
    both, alone = find(results, method, bits, act_bits=a), find(results, method, bits, row=main_row)
    if both and alone:
      measured[f"{method}_w{bits}_a{a}_over_a16_kl"] = both["kl"] / alone["kl"]
  return measured


def write_table(
  results: list[dict],
  config: ConfigDict,
  description: str,
  n_windows: int,
  seq_len: int,
  n_calib: int,
  ctx: xp.Context,
):
  fp = find(results, "fp32", 32)
  fp16 = next((r["fp16_bytes"] for r in results if "fp16_bytes" in r), fp["bytes"] / 2)
  granularity = f"groups of {config.group_size}" if config.group_size else "per row"
  lorc = f"rank {config.lorc_rank}, factors at {config.lorc_bits or 16} bits" if config.lorc_rank else "off"
  lines = [
    (
      f"Model: {description}. Perplexity per byte on {n_windows * seq_len} validation tokens ({n_windows} windows of "
      f"{seq_len}). Weights: {'symmetric' if config.symmetric else 'asymmetric'}, {granularity} (g) or one scale per "
      f"output row (row); activations (A < 16): token-wise symmetric, dynamic; GPTQ calibrated "
      f"{'sequentially' if config.sequential else 'on the fp32 activations'} on {n_calib} random training windows; "
      f"LoRC {lorc}. Sizes: codes + fp16 scales + zero points + LoRC, other parameters at fp16."
    ),
    "",
    "| method | setting | perplexity | Δ vs fp32 | KL to fp32 (nats/byte) | model bytes | vs fp16 | LoRC params |",
    "|---|---|---|---|---|---|---|---|",
  ]
  for r in results:
    extra = f"{100 * r['lorc_fraction']:.2f}%" if r["lorc"] else "—"
    lines.append(
      f"| {label(r)} | {setting(r)} | {r['perplexity']:.4f} | {r['perplexity'] - fp['perplexity']:+.4f} | "
      f"{r['kl']:.2e} | {r['bytes']:,.0f} | {r['bytes'] / fp16:.3f} | {extra} |"
    )
  ctx.write_text("table.md", "\n".join(lines) + "\n", echo=True)


def plot(results: list[dict], config: ConfigDict, ctx: xp.Context) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fp = find(results, "fp32", 32)
  fig, axes = plt.subplots(1, 4, figsize=(21, 4))
  colors = {"rtn": "C0", "gptq": "C1"}
  granularity = f"g{config.group_size}" if config.group_size else "row"
  # Line styles: (without LoRC, with LoRC) for the group study and the per-row study.
  studies = [(bool(config.group_size), granularity, ("-", "--"))]
  studies += [(False, "row", (":", "-."))] if config.group_size else []
  for grouped, tag, line_styles in studies:
    for method in config.methods:
      for lorc in (False, True):
        rows = sorted(
          (
            r
            for r in results
            if r["method"] == method and r["lorc"] == lorc and bool(r["group"]) == grouped and not r["act_bits"]
          ),
          key=lambda r: r["bits"],
        )
        if not rows:
          continue
        style = {"color": colors[method], "ls": line_styles[lorc], "marker": "s" if lorc else "o"}
        name = f"{LABELS[(method, lorc)]} ({tag})"
        bits = [r["bits"] for r in rows]
        axes[0].plot(bits, [r["perplexity"] for r in rows], label=name, **style)
        axes[1].plot(bits, [r["kl"] for r in rows], label=name, **style)
        axes[2].plot([r["bytes"] / 1e6 for r in rows], [r["perplexity"] for r in rows], label=name, **style)
  for ax in (axes[0], axes[2]):
    ax.axhline(fp["perplexity"], color="gray", ls=":", label="fp32")
    ax.set_ylabel("validation perplexity (per byte)")
  for ax in axes[:2]:
    ax.set_xlabel("weight bits")
    ax.set_xticks(sorted(set(config.bits) | set(config.row_bits)))
  axes[0].set_title("weight-only quantization (A16)")
  axes[1].set_yscale("log")
  axes[1].set_ylabel("KL(fp32 ‖ quantized), nats per byte")
  axes[1].set_title("distance to the fp32 model's predictions")
  axes[2].axvline(fp["bytes"] / 2e6, color="gray", ls="--", lw=0.8, label="fp16 size")
  axes[2].set_xlabel("model size (MB)")
  axes[2].set_title("perplexity vs size")
  for ax in axes[:3]:
    ax.legend(fontsize=7)
  # The paper's sensitivity question: the same bits on the activations or on the weights.
  a = config.activation_bits
  bars = [find(results, "rtn", a, row=True), find(results, "fp32", 32, act_bits=a)] if a else []
  for method, bits in config.activation_weights if a else ():
    bars += [find(results, method, bits, row=not config.group_size), find(results, method, bits, act_bits=a)]
  bars = [r for r in bars if r is not None]
  if bars:
    names = [f"{label(r)}\n{setting(r)}" for r in bars]
    axes[3].bar(range(len(bars)), [r["kl"] for r in bars], color=["C2" if r["act_bits"] else "C7" for r in bars])
    axes[3].set_xticks(range(len(bars)), names, fontsize=7)
    axes[3].set_yscale("log")
    axes[3].set_ylabel("KL(fp32 ‖ quantized), nats per byte")
    axes[3].set_title(f"A{a} (green, token-wise) vs weights alone (gray)")
  fig.tight_layout()
  ctx.save_figure(fig, "perplexity_vs_bits")


CLAIMS = (
  xp.Claim(
    metric="gptq_over_rtn_ppl_w4",
    statement="GPTQ's perplexity is at most RTN's at 4 bits (same groups)",
    paper_value="GPTQ README, LLaMA-7B WikiText-2: 4-bit RTN 6.29, GPTQ 6.09 (ZeroQuant-V2: GPTQ is the stronger "
    "weight-only PTQ)",
    comparison="<=",
    target=1.0,
  ),
  xp.Claim(
    metric="gptq_over_rtn_ppl_w3",
    statement="... and at 3 bits",
    paper_value="GPTQ README, LLaMA-7B WikiText-2: 3-bit RTN 25.54, GPTQ 8.07",
    comparison="<=",
    target=1.0,
  ),
  # The sensitive setting (2 bits, where RTN costs several % perplexity): GPTQ must close most of RTN's gap to
  # fp32, not merely edge below it. The gap ratio is (GPTQ − fp32) / (RTN − fp32) in perplexity.
  xp.Claim(
    metric="gptq_over_rtn_gap_w2",
    statement="At 2 bits (groups of 128), GPTQ's perplexity gap to fp32 is at most half of RTN's",
    paper_value="GPTQ README, LLaMA-7B WikiText-2 at 3 bits per row (its lowest width): fp16 5.68, RTN 25.54, "
    "GPTQ 8.07 (gap ratio 0.12)",
    comparison="<=",
    target=0.5,
  ),
  xp.Claim(
    metric="lorc_gap_recovered_rtn_w2",
    statement="LoRC (rank 8, 8-bit factors) wins back at least 10% of RTN W2's perplexity gap",
    paper_value="ZeroQuant-V2 abstract: LoRC enhances model quality recovery with a minimal increase in model size",
    comparison=">=",
    target=0.1,
  ),
  xp.Claim(
    metric="lorc_gap_recovered_gptq_w2",
    statement="... and of GPTQ W2's",
    paper_value="ZeroQuant-V2 abstract (LoRC on top of GPTQ and RTN)",
    comparison=">=",
    target=0.1,
  ),
  # ZeroQuant-V2's finding (1), judged at equal bits and granularity: token-wise activations (one scale per row of
  # the activation matrix) against row-wise weights (one scale per row of the weight), both at 8 bits.
  xp.Claim(
    metric="a8_over_w8_kl",
    statement="Activation quantization is the more sensitive: W32A8 (token-wise) moves the predictions further "
    "from fp32 than W8A16 (per row), in KL per byte",
    paper_value='ZeroQuant-V2 abstract, finding (1): activation quantization is "generally more susceptible" than '
    "weight quantization (OPT, BLOOM 125M-176B)",
    comparison=">",
    target=1.0,
  ),
  # LoRC is judged on the KL divergence from the fp32 model's next-byte distributions: on this small model W4 moves
  # perplexity by < 0.3%, and LoRC's share of that (≤ 0.05%, ``lorc_ppl_ratio_*`` in the metrics) is at the level
  # of the checkpoint-to-checkpoint noise (it changed sign on an earlier checkpoint), while the KL resolves it.
  xp.Claim(
    metric="lorc_kl_ratio_rtn_w4",
    statement="LoRC (rank 8) brings RTN W4 closer to the fp32 model (lower KL per byte to its predictions)",
    paper_value="ZeroQuant-V2 abstract: LoRC improves the quantized models at a small increase in model size",
    comparison="<",
    target=1.0,
  ),
  xp.Claim(
    metric="lorc_kl_ratio_rtn_w3",
    statement="... and RTN W3",
    paper_value="ZeroQuant-V2, LoRC (rank m = 8 default)",
    comparison="<",
    target=1.0,
  ),
  xp.Claim(
    metric="lorc_kl_ratio_gptq_w4",
    statement="... and GPTQ W4",
    paper_value="ZeroQuant-V2, LoRC (rank m = 8 default)",
    comparison="<",
    target=1.0,
  ),
  xp.Claim(
    metric="lorc_kl_ratio_gptq_w3",
    statement="... and GPTQ W3",
    paper_value="ZeroQuant-V2, LoRC (rank m = 8 default)",
    comparison="<",
    target=1.0,
  ),
  xp.Claim(
    metric="rtn_w8_ppl_increase",
    statement="8-bit weights are close to lossless (relative perplexity increase of RTN W8)",
    paper_value="ZeroQuant-V2 study: INT8 weight-only quantization (W8A16) keeps the fp16 quality",
    comparison="<",
    target=0.01,
  ),
)

EXPERIMENT = xp.Experiment("zeroquant", PAPER, CLAIMS, get_config, run, validate_config)

if __name__ == "__main__":
  xp.define_flags(EXPERIMENT)
  xp.main(EXPERIMENT)
