r"""Likelihood over-optimisation in DAAs (Shi, Land, Locatelli, Geist, Bartolo, arXiv 2410.11677).

The paper finds that a higher likelihood of preferred completions (or a larger chosen − rejected margin) after DPO /
IPO / hinge training does not mean a better model: it may even degrade it, and two indicators computed on the
model's generations, a **decreasing entropy over the top-k tokens** and a **diminishing top-k probability mass**,
signal when over-optimised diversity starts to hurt. The paper runs 7B models on real preference data; here (our
construction, CPU budget) a small transformer (``toolkit.models.transformer``, 2 layers, d_model 32) is trained from
scratch on ``toolkit.alignment.synthetic_tasks``: a topic token + 2 distractors as the prompt, 3 content tokens as the
response, gold reward = fraction of response tokens in the topic's good set (64 equally good responses). Pipeline:

1. SFT on noisy demonstrations (each token good w.p. ``demo_good_prob``) of the training prompts;
2. preference pairs from SFT samples on the training prompts, labelled by the gold reward with label noise
   (``flip_prob``, as human labels are noisy), ties dropped;
3. DPO, IPO and hinge at each β and each weight λ of an NLL term on the chosen responses (λ = 0: the plain loss;
   λ > 0 raises the likelihood of the preferred completions; the paper compares "different regularisations"), from
   the SFT model (also the frozen reference), for many epochs with Adam;
4. every ``eval_every`` steps: mean log-likelihood of the chosen responses and mean margin h on the training pairs;
   on held-out prompts, ``num_samples`` samples each (one sampling key for every evaluation of every run): gold
   reward, diversity (distinct perfect responses / min(n, 64)), and the top-k entropy and top-k mass of the sampling
   distributions (``toolkit.alignment.indicators``), averaged over positions, samples and prompts.

The tests behind the claims: a curve's *turn* is the evaluation step of its maximum after a 3-point moving average;
the *quality peak* is the turn of the gold reward; a run *over-optimises* when its smoothed final gold reward is at
least ``min_drop`` below its peak. Controls: the same likelihood test on the first ``short_fraction`` of each run,
and the margin and the chosen likelihood used as "indicators" in the lead-time test.

  python -m experiments.over_optimisation --quick --out_dir=/tmp/over_optimisation
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from ml_collections import ConfigDict

from toolkit import experiment as xp
from toolkit.alignment import indicators, synthetic_tasks
from toolkit.alignment import preference_training as pt
from toolkit.losses import preference
from toolkit.models import transformer

PAPER = xp.Paper(
  "daa_overoptimisation", "Understanding Likelihood Over-optimisation in Direct Alignment Algorithms", "2410.11677"
)

LOSSES = {"dpo": preference.dpo_loss, "ipo": preference.ipo_loss, "hinge": preference.hinge_loss}


def get_config(scale: str = "full") -> ConfigDict:
  if scale not in ("quick", "full"):
    raise ValueError(f"scale must be 'quick' or 'full', got {scale!r}")
  quick = scale == "quick"
  config = ConfigDict()
  config.losses = ("dpo", "ipo", "hinge")
  config.betas = (0.1, 1.0) if quick else (0.01, 0.1, 1.0)
  # Weight λ of an NLL term on the chosen responses (RPO-style): the paper compares DAAs "under different
  # regularisations" (abstract); λ > 0 raises the likelihood of the preferred completions, λ = 0 is the plain loss.
  config.nll_weights = (0.0, 1.0) if quick else (0.0, 0.2, 1.0)
  # The task: 6 topics × 25 distractor pairs = 150 prompts, 100 for training, 50 held out.
  config.num_topics = 6
  config.num_content = 12
  config.num_good = 4
  config.num_distractors = 5
  config.num_train_prompts = 100
  config.demo_good_prob = 0.5
  config.demos_per_prompt = 16
  config.pairs_per_prompt = 8
  config.flip_prob = 0.2
  # The model and its training.
  config.d_model = 32
  config.num_layers = 2
  config.sft_steps = 300
  config.sft_learning_rate = 3e-3
  config.daa_steps = 420 if quick else 2000
  config.daa_learning_rate = 1e-3
  config.batch_size = 64
  config.eval_every = 30 if quick else 50
  config.num_samples = 16
  config.top_k = 4
  # The claims' tests.
  config.min_drop = 0.02
  config.short_fraction = 0.125
  return config


def validate_config(config: ConfigDict) -> None:
  for name in config.losses:
    if name not in LOSSES:
      raise xp.ConfigError(f"--config.losses: unknown loss {name!r}; known: {sorted(LOSSES)}")
  if not config.nll_weights or min(config.nll_weights) < 0:
    raise xp.ConfigError(f"--config.nll_weights must be non-empty and >= 0, got {config.nll_weights}")
  if not config.betas or min(config.betas) <= 0:
    raise xp.ConfigError(f"--config.betas must be non-empty and positive, got {config.betas}")
  if config.daa_steps < 4 * config.eval_every:
    raise xp.ConfigError("--config.daa_steps must be at least 4 × --config.eval_every")
  if not 0 < config.short_fraction < 1:
    raise xp.ConfigError(f"--config.short_fraction must be in (0, 1), got {config.short_fraction}")


# ----------------------------------------------------------------------------------------------------------------
# Data and models


def build_data(config: ConfigDict, key: jax.Array):
  k_task, k_split = jax.random.split(key)
  task = synthetic_tasks.make_topic_task(
    k_task,
    num_topics=config.num_topics,
    num_content=config.num_content,
    num_good=config.num_good,
    num_distractors=config.num_distractors,
  )
  prompts = synthetic_tasks.all_prompts(task)
  order = jax.random.permutation(k_split, prompts.shape[0])
  if not 0 < config.num_train_prompts < prompts.shape[0]:
    raise xp.ConfigError(f"--config.num_train_prompts must be in (0, {prompts.shape[0]})")
  return task, prompts[order[: config.num_train_prompts]], prompts[order[config.num_train_prompts :]]


def model_config(config: ConfigDict, task) -> transformer.TransformerConfig:
  return transformer.TransformerConfig(
    vocab_size=task.vocab_size,
    d_model=config.d_model,
    num_heads=2,
    num_layers=config.num_layers,
    max_len=task.prompt_len + task.response_len,
  )


def train_sft(config: ConfigDict, task, train_prompts, key):
  k_init, k_demo, k_batch = jax.random.split(key, 3)
  mconfig = model_config(config, task)
  apply_fn = transformer.Transformer(mconfig).apply
  demos = synthetic_tasks.demonstrations(
    k_demo, task, jnp.repeat(train_prompts, config.demos_per_prompt, axis=0), good_prob=config.demo_good_prob
  )
  mask = synthetic_tasks.response_mask(task, demos.shape[0])
  optimizer = optax.adam(config.sft_learning_rate)
  state = pt.init(transformer.init_params(k_init, mconfig), optimizer)

  @jax.jit
  def run(state):
    def body(state, k):
      idx = jax.random.choice(k, demos.shape[0], (config.batch_size,))
      return pt.sft_step(state, pt.SFTBatch(demos[idx], mask[idx]), apply_fn=apply_fn, optimizer=optimizer)

    return jax.lax.scan(body, state, jax.random.split(k_batch, config.sft_steps))

  state, info = run(state)
  return apply_fn, state.params, np.asarray(info.loss)


def build_pairs(config: ConfigDict, task, apply_fn, params, train_prompts, key):
  k1, k2, k_label = jax.random.split(key, 3)
  prompts = jnp.repeat(train_prompts, config.pairs_per_prompt, axis=0)
  first = pt.sample_responses(k1, apply_fn, params, prompts, num_new_tokens=task.response_len).tokens
  second = pt.sample_responses(k2, apply_fn, params, prompts, num_new_tokens=task.response_len).tokens
  chosen, rejected, keep = synthetic_tasks.label_pairs(k_label, task, first, second, flip_prob=config.flip_prob)
  keep = np.asarray(keep)
  chosen, rejected = chosen[keep], rejected[keep]
  mask = synthetic_tasks.response_mask(task, chosen.shape[0])
  return pt.PreferenceBatch(chosen, mask, rejected, mask)


# ----------------------------------------------------------------------------------------------------------------
# One DAA run


def evaluate(config, task, apply_fn, state, pairs, heldout, key) -> dict:
  params = state.params
  log_probs = functools.partial(pt.response_log_probs, apply_fn)
  chosen = log_probs(params, pairs.chosen, pairs.chosen_mask)
  rejected = log_probs(params, pairs.rejected, pairs.rejected_mask)
  ref_chosen = log_probs(state.reference_params, pairs.chosen, pairs.chosen_mask)
  ref_rejected = log_probs(state.reference_params, pairs.rejected, pairs.rejected_mask)
  margin = preference.implicit_reward_margin(chosen, rejected, ref_chosen, ref_rejected)
  prompts = jnp.repeat(heldout, config.num_samples, axis=0)
  out = pt.sample_responses(key, apply_fn, params, prompts, num_new_tokens=task.response_len)
  shape = (heldout.shape[0], config.num_samples)
  entropy = indicators.topk_entropy(out.logits, config.top_k).reshape(*shape, -1)
  mass = indicators.topk_probability_mass(out.logits, config.top_k).reshape(*shape, -1)
  return {
    "chosen_log_likelihood": jnp.mean(chosen),
    "rejected_log_likelihood": jnp.mean(rejected),
    "margin": jnp.mean(margin),
    "gold_reward": jnp.mean(synthetic_tasks.gold_reward(task, out.tokens)),
    # Average over positions, then over a prompt's samples and over prompts.
    "topk_entropy": jnp.mean(indicators.masked_sequence_mean(entropy)),
    "topk_mass": jnp.mean(indicators.masked_sequence_mean(mass)),
    "samples": out.tokens.reshape(*shape, -1),
  }


def make_runner(config, task, apply_fn, pairs, heldout, loss_name):
  """Jitted ``advance(state, start, beta, nll_weight, key)`` (``eval_every`` steps) and ``evaluate(state, key)``:
  β and the NLL weight are traced, so one loss compiles once for the whole sweep."""
  optimizer = optax.adam(config.daa_learning_rate)
  loss_fn = LOSSES[loss_name]
  num_pairs = pairs.chosen.shape[0]

  @jax.jit
  def advance(state, start, beta, nll_weight, key):
    def body(state, i):
      idx = jax.random.choice(jax.random.fold_in(key, i), num_pairs, (config.batch_size,), replace=False)
      batch = jax.tree.map(lambda a: a[idx], pairs)
      state, info = pt.preference_step(
        state, batch, apply_fn=apply_fn, optimizer=optimizer, loss_fn=loss_fn, beta=beta, nll_weight=nll_weight
      )
      return state, info.loss

    return jax.lax.scan(body, state, start + jnp.arange(config.eval_every))

  eval_fn = jax.jit(lambda state, k: evaluate(config, task, apply_fn, state, pairs, heldout, k))
  return optimizer, advance, eval_fn


def run_daa(config, task, runner, sft_params, beta, nll_weight, k_batch, k_eval) -> dict:
  optimizer, advance, eval_fn = runner
  state = pt.init(sft_params, optimizer)
  curves: dict[str, list] = {}
  for e in range(config.daa_steps // config.eval_every + 1):
    if e:
      state, losses = advance(state, (e - 1) * config.eval_every, beta, nll_weight, k_batch)
    # The same sampling key at every evaluation and in every run: the curves differ by the model only.
    record = eval_fn(state, k_eval)
    samples = record.pop("samples")
    record = {k: float(v) for k, v in record.items()}
    record["diversity"] = synthetic_tasks.distinct_perfect_fraction(task, samples)
    record["step"] = e * config.eval_every
    record["train_loss"] = float(jnp.mean(losses)) if e else float("nan")
    for k, v in record.items():
      curves.setdefault(k, []).append(v)
  return curves


# ----------------------------------------------------------------------------------------------------------------
# The tests behind the claims


def smooth(x) -> np.ndarray:
  x = np.asarray(x, float)
  padded = np.concatenate([x[:1], x, x[-1:]])
  return (padded[:-2] + padded[1:-1] + padded[2:]) / 3


def turn(x) -> int:
  """Index of the maximum of the 3-point moving average (first one on ties)."""
  return int(np.argmax(smooth(x)))


def overopt_test(curves: dict, min_drop: float, end: int | None = None) -> dict:
  """Quality peak, drop after it, and whether likelihood and margin rose past the peak, on curves[:end]."""
  cut = {k: np.asarray(v)[:end] for k, v in curves.items()}
  quality = smooth(cut["gold_reward"])
  peak = int(np.argmax(quality))
  drop = float(quality[peak] - quality[-1])
  likelihood, margin = smooth(cut["chosen_log_likelihood"]), smooth(cut["margin"])
  likelihood_rises, margin_rises = bool(likelihood[-1] > likelihood[peak]), bool(margin[-1] > margin[peak])
  return {
    "peak_index": peak,
    "peak_step": int(cut["step"][peak]),
    "drop": drop,
    "overoptimises": drop >= min_drop,
    "likelihood_rises": likelihood_rises,
    "margin_rises": margin_rises,
    "likelihood_passes": drop >= min_drop and likelihood_rises,
    "margin_passes": drop >= min_drop and margin_rises,
  }


def run(config: ConfigDict, ctx: xp.Context) -> dict[str, float]:
  start = time.perf_counter()
  k_data, k_sft, k_pairs, k_runs, k_eval = jax.random.split(ctx.key(), 5)
  task, train_prompts, heldout = build_data(config, k_data)
  apply_fn, sft_params, sft_losses = train_sft(config, task, train_prompts, k_sft)
  pairs = build_pairs(config, task, apply_fn, sft_params, train_prompts, k_pairs)
  cases = [
    (name, float(beta), float(nll)) for name in config.losses for beta in config.betas for nll in config.nll_weights
  ]
  keys = jax.random.split(k_runs, len(cases))
  runners = {}

  def run_one(i, case):
    name, beta, nll = case
    t0 = time.perf_counter()
    if name not in runners:
      runners[name] = make_runner(config, task, apply_fn, pairs, heldout, name)
    curves = run_daa(config, task, runners[name], sft_params, beta, nll, keys[i], k_eval)
    return {"loss": name, "beta": beta, "nll_weight": nll, "curves": curves, "seconds": time.perf_counter() - t0}

  def describe(r):
    c = r["curves"]
    return (
      f"{r['loss']} β={r['beta']:g} λ={r['nll_weight']:g}: gold {c['gold_reward'][0]:.3f} → "
      f"max {max(c['gold_reward']):.3f} → "
      f"{c['gold_reward'][-1]:.3f}, chosen loglik {c['chosen_log_likelihood'][0]:.2f} → "
      f"{c['chosen_log_likelihood'][-1]:.2f} ({r['seconds']:.1f} s)"
    )

  results = xp.run_cases(ctx, cases, run_one, describe)
  num_evals = len(results[0]["curves"]["step"])
  short_end = max(4, round(config.short_fraction * (num_evals - 1)) + 1)
  for r in results:
    c = r["curves"]
    r["test"] = overopt_test(c, config.min_drop)
    r["short_test"] = overopt_test(c, config.min_drop, short_end)
    peak = r["test"]["peak_index"]
    r["entropy_turn"] = turn(c["topk_entropy"])
    r["mass_turn"] = turn(c["topk_mass"])
    r["likelihood_turn"] = turn(c["chosen_log_likelihood"])
    r["margin_turn"] = turn(c["margin"])
    r["margin_leads"] = r["margin_turn"] <= peak
    r["entropy_leads"] = r["entropy_turn"] <= peak
    r["mass_leads"] = r["mass_turn"] <= peak
    r["likelihood_leads"] = r["likelihood_turn"] <= peak

  over = [r for r in results if r["test"]["overoptimises"]]
  frac = lambda rs, key: float(np.mean([bool(r[key]) for r in rs])) if rs else 0.0
  under = [r for r in results if not r["test"]["overoptimises"]]

  def drop_gap(field):
    """Mean start − end fall of a curve over over-optimising runs minus the same over the other runs."""
    fall = lambda rs: np.mean([smooth(r["curves"][field])[0] - smooth(r["curves"][field])[-1] for r in rs])
    return float(fall(over) - fall(under)) if over and under else float("nan")

  share = lambda key, test="test": float(np.mean([r[test][key] for r in results]))
  measured = {
    "frac_overopt_margin_rises": share("margin_passes"),
    "control_short_run_overopt_margin_rises": share("margin_passes", "short_test"),
    "frac_overopt_likelihood_rises": share("likelihood_passes"),
    "control_short_run_overopt_likelihood_rises": share("likelihood_passes", "short_test"),
    "entropy_fall_gap": drop_gap("topk_entropy"),
    "mass_fall_gap": drop_gap("topk_mass"),
    "control_margin_fall_gap": drop_gap("margin"),
    "control_likelihood_fall_gap": drop_gap("chosen_log_likelihood"),
    "frac_runs_overoptimising": len(over) / len(results),
    "frac_entropy_turns_before_quality_peak": frac(over, "entropy_leads"),
    "frac_mass_turns_before_quality_peak": frac(over, "mass_leads"),
    "control_likelihood_turns_before_quality_peak": frac(over, "likelihood_leads"),
    "control_margin_turns_before_quality_peak": frac(over, "margin_leads"),
    # Specificity, not a claim: the share of runs that do NOT over-optimise whose top-k entropy also turns no
    # later than their quality peak (near 1 means the indicator falls whether or not quality does).
    "entropy_turns_before_peak_in_non_overoptimising_runs": frac(under, "entropy_leads"),
    "mass_turns_before_peak_in_non_overoptimising_runs": frac(under, "mass_leads"),
    "mean_entropy_lead_steps": float(
      np.mean([r["curves"]["step"][r["test"]["peak_index"]] - r["curves"]["step"][r["entropy_turn"]] for r in over])
    )
    if over
    else float("nan"),
    "sft_final_loss": float(sft_losses[-20:].mean()),
    "sft_heldout_gold_reward": float(results[0]["curves"]["gold_reward"][0]),
    "num_pairs": int(pairs.chosen.shape[0]),
    "wall_seconds": time.perf_counter() - start,
  }
  write_table(results, config, ctx)
  plot(results, config, ctx)
  return measured


def _plt():
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def plot(results, config, ctx) -> None:
  plt = _plt()
  names = list(config.losses)
  fields = [
    ("gold_reward", "gold reward (held-out)"),
    ("diversity", "diversity (held-out)"),
    ("chosen_log_likelihood", "log π(y_w) (train pairs)"),
    ("margin", "margin h (train pairs)"),
    ("topk_entropy", f"top-{config.top_k} entropy"),
    ("topk_mass", f"top-{config.top_k} mass"),
  ]
  fig, axes = plt.subplots(len(fields), len(names), figsize=(4 * len(names), 2.2 * len(fields)), sharex=True)
  axes = np.asarray(axes).reshape(len(fields), len(names))
  for j, name in enumerate(names):
    for r in (r for r in results if r["loss"] == name):
      c = r["curves"]
      for i, (field, label) in enumerate(fields):
        style = "-" if r["nll_weight"] == 0 else "--"
        run_label = f"β={r['beta']:g}, λ={r['nll_weight']:g}"
        line = axes[i, j].plot(c["step"], c[field], style, label=run_label)[0]
        if field == "gold_reward":
          axes[i, j].axvline(r["test"]["peak_step"], color=line.get_color(), ls=":", lw=1)
        axes[i, j].set_ylabel(label, fontsize=8)
    axes[0, j].set_title(name.upper())
    axes[0, j].legend(fontsize=7)
    axes[-1, j].set_xlabel("DAA step")
  fig.suptitle("Over-optimisation: curves against step (dotted: quality peak)", fontsize=10)
  fig.tight_layout()
  ctx.save_figure(fig, "curves")


def write_table(results, config, ctx) -> None:
  k = config.top_k
  header = (
    "| loss | β | λ (NLL) | gold: SFT → peak (step) → end | drop (smoothed) | diversity: SFT → end "
    f"| log π(y_w): peak → end | margin: peak → end | top-{k} entropy turn | top-{k} mass turn "
    "| log π(y_w) turn | over-optimises |"
  )
  lines = [header, "|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in results:
    c, t = r["curves"], r["test"]
    p, step, gold = t["peak_index"], c["step"], c["gold_reward"]
    lines.append(
      f"| {r['loss']} | {r['beta']:g} | {r['nll_weight']:g} | {gold[0]:.3f} → {gold[p]:.3f} ({t['peak_step']}) → "
      f"{gold[-1]:.3f} | {t['drop']:.3f} | {c['diversity'][0]:.3f} → {c['diversity'][-1]:.3f} | "
      f"{c['chosen_log_likelihood'][p]:.2f} → {c['chosen_log_likelihood'][-1]:.2f} | "
      f"{c['margin'][p]:.2f} → {c['margin'][-1]:.2f} | {step[r['entropy_turn']]} | {step[r['mass_turn']]} | "
      f"{step[r['likelihood_turn']]} | {'yes' if t['overoptimises'] else 'no'} |"
    )
  ctx.write_text("table.md", "\n".join(lines))


_INDICATORS = "abstract and Sec. 5: 'Decreasing Entropy over Top-k Tokens' and 'Diminishing Top-k Probability Mass' "
_LIKELIHOOD = (
  "abstract and Sec. 4: 'higher likelihood of better completions and larger margins ... do not necessarily lead to "
  "better performance, and may even degrade it' (7B models, DPO / IPO / hinge)"
)

CLAIMS = (
  xp.Claim(
    metric="frac_overopt_margin_rises",
    statement="A larger margin does not imply better quality: some runs end with a held-out gold reward >= min_drop "
    "below their peak while the chosen−rejected margin ended higher than at the peak (share of loss × β × λ runs)",
    paper_value=_LIKELIHOOD,
    comparison=">",
    target=0.0,
  ),
  xp.Claim(
    metric="control_short_run_overopt_margin_rises",
    statement="Control: the same margin test on the first 1/8 of each run (too short to over-optimise) finds none",
    paper_value="(control, ours)",
    comparison="<=",
    target=0.0,
  ),
  xp.Claim(
    metric="frac_overopt_likelihood_rises",
    statement="A higher likelihood of preferred completions does not imply better quality: some runs end with a "
    "held-out gold reward >= min_drop below their peak while the chosen log-likelihood ended higher than at the peak",
    paper_value=_LIKELIHOOD,
    comparison=">",
    target=0.0,
  ),
  xp.Claim(
    metric="control_short_run_overopt_likelihood_rises",
    statement="Control: the same likelihood test on the first 1/8 of each run finds none",
    paper_value="(control, ours)",
    comparison="<=",
    target=0.0,
  ),
  xp.Claim(
    metric="frac_entropy_turns_before_quality_peak",
    statement="Decreasing top-k entropy signals over-optimisation: in most over-optimising runs its turn (maximum) "
    "comes no later than the quality peak",
    paper_value=_INDICATORS + "are reliable signs of declining performance",
    comparison=">",
    target=0.5,
  ),
  xp.Claim(
    metric="frac_mass_turns_before_quality_peak",
    statement="Diminishing top-k probability mass signals over-optimisation: in most over-optimising runs its turn "
    "comes no later than the quality peak",
    paper_value=_INDICATORS + "are reliable signs of declining performance",
    comparison=">",
    target=0.5,
  ),
  xp.Claim(
    metric="control_margin_turns_before_quality_peak",
    statement="Control: the margin used as the indicator does not turn before the quality peak in most runs",
    paper_value="(control, ours; the paper: larger margins are no sign of better performance)",
    comparison="<=",
    target=0.5,
  ),
  xp.Claim(
    metric="control_likelihood_turns_before_quality_peak",
    statement="Control: the chosen log-likelihood used as the indicator does not turn before the quality peak in "
    "most runs",
    paper_value="(control, ours; the paper: higher likelihood is no sign of better performance)",
    comparison="<=",
    target=0.5,
  ),
  xp.Claim(
    metric="entropy_fall_gap",
    statement="The top-k entropy is specific to over-optimisation: it falls more (start → end) in over-optimising "
    "runs than in the others",
    paper_value=_INDICATORS + "signal when over-optimised diversity begins to harm performance",
    comparison=">",
    target=0.0,
  ),
  xp.Claim(
    metric="mass_fall_gap",
    statement="The top-k mass is specific to over-optimisation: it falls more in over-optimising runs than in the "
    "others",
    paper_value=_INDICATORS + "signal when over-optimised diversity begins to harm performance",
    comparison=">",
    target=0.0,
  ),
  xp.Claim(
    metric="control_margin_fall_gap",
    statement="Control: the margin used as the indicator does not fall more in over-optimising runs",
    paper_value="(control, ours)",
    comparison="<=",
    target=0.0,
  ),
)

EXPERIMENT = xp.Experiment("over_optimisation", PAPER, CLAIMS, get_config, run, validate_config)

if __name__ == "__main__":
  xp.append_xla_flags("--xla_cpu_enable_concurrency_optimized_scheduler=false", "--xla_cpu_multi_thread_eigen=false")
  xp.define_flags(EXPERIMENT)
  xp.main(EXPERIMENT)
