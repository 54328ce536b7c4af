r"""Grokking at the Edge of Numerical Stability (Prieto et al., ICLR 2025, arXiv 2501.04697).

(a + b) mod p over all pairs, 40% of them for training, a bias-free ReLU MLP (2p-200-200-p) trained full batch:

  (a) softmax cross-entropy + AdamW, no weight decay, float32: fits the training set, never generalises, and
      drifts into Softmax Collapse (SC);
  (b) StableMax cross-entropy + AdamW, no weight decay: groks, late;
  (c) softmax cross-entropy + ⊥AdamW: generalises within a few hundred epochs;
  (d) full scale only: softmax cross-entropy computed in float64 + AdamW, the paper's other remedy for SC.

  python -m experiments.grokking --quick --out_dir=runs/grokking
  python -m experiments.grokking --out_dir=runs/grokking_full          # paper scale, long
  python -m experiments.grokking --quick --config.runs.perp_adamw.lr=0.005
"""

from __future__ import annotations

import functools
import json
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from ml_collections import ConfigDict

from toolkit import experiment as xp
from toolkit.data import modular_arithmetic
from toolkit.losses import (
  softmax_collapse_fraction,
  stablemax_collapse_fraction,
  stablemax_cross_entropy,
)
from toolkit.models import MLP
from toolkit.optim import perp_adamw

PAPER = xp.Paper("grokking", "Grokking at the Edge of Numerical Stability", "2501.04697")

RUNS = ("softmax_adamw", "stablemax_adamw", "perp_adamw", "softmax64_adamw")
OPTIONAL_RUNS = ("softmax64_adamw",)  # skipped when their epochs are 0 (the quick scale)
MATCHED = "adamw_matched_to_perp"  # derived from the perp_adamw run's config, not a config of its own
LOSSES = ("softmax", "stablemax")
OPTIMIZERS = ("adamw", "perp_adamw")


def _run_config(
  loss: str,
  optimizer: str,
  lr: float,
  b2: float,
  eps: float,
  epochs: int,
  loss_dtype: str = "float32",
) -> ConfigDict:
  return ConfigDict(
    {
      "loss": loss,
      "optimizer": optimizer,
      "lr": lr,
      "b1": 0.9,
      "b2": b2,
      "eps": eps,
      "weight_decay": 0.0,
      "epochs": epochs,
      "loss_dtype": loss_dtype,
    }
  )


def get_config(scale: str = "full") -> ConfigDict:
  """``quick``: the three runs over 300 epochs at p = 113. ``full``: long enough for SC and StableMax grokking."""
  if scale not in ("quick", "full"):
    raise ValueError(f"scale must be 'quick' or 'full', got {scale!r}")
  quick = scale == "quick"
  config = ConfigDict()
  config.p = 113
  config.op = "add"
  config.train_fraction = 0.4
  config.hidden = (200, 200)
  config.eval_every = 10  # epochs per jitted chunk and per recorded point
  config.checkpoint_every = 100 if quick else 500
  # Hyperparameters from the authors' run_main_experiments.sh: AdamW with eps 1e-25 and beta2 0.99 for the
  # softmax baseline (their defaults), beta2 0.999 for StableMax, torch's AdamW defaults under ⊥AdamW.
  config.runs = ConfigDict()
  # 3000 epochs (~40 s on 2 CPU cores) are enough for the baseline to drift into Softmax Collapse.
  config.runs.softmax_adamw = _run_config("softmax", "adamw", 0.01, 0.99, 1e-25, 3000 if quick else 10000)
  # The authors' StableMax loss casts the (float32) logits to float64 whatever the precision setting; in float32
  # the StableMax run collapses too, after ~35k epochs, and stalls at ~20% test accuracy (measured here).
  config.runs.stablemax_adamw = _run_config(
    "stablemax", "adamw", 0.01, 0.999, 1e-25, 300 if quick else 80000, loss_dtype="float64"
  )
  config.runs.perp_adamw = _run_config("softmax", "perp_adamw", 0.01, 0.999, 1e-8, 300)
  # Figure 1's float64 softmax: the baseline's settings with the loss in float64, where SC needs logit gaps of
  # ~37 instead of ~17 (the float64 and float32 machine epsilons), so it comes late enough for grokking.
  config.runs.softmax64_adamw = _run_config(
    "softmax", "adamw", 0.01, 0.99, 1e-25, 0 if quick else 80000, loss_dtype="float64"
  )
  return config


def validate_config(config: ConfigDict) -> None:
  if not (isinstance(config.p, int) and config.p >= 2):
    raise xp.ConfigError(f"--config.p must be an integer >= 2, got {config.p!r}")
  if not 0.0 < config.train_fraction < 1.0:
    raise xp.ConfigError(f"--config.train_fraction must lie in (0, 1), got {config.train_fraction}")
  if config.eval_every <= 0 or config.checkpoint_every <= 0:
    raise xp.ConfigError("--config.eval_every and --config.checkpoint_every must be positive")
  for name in RUNS:
    run = config.runs[name]
    if run.loss not in LOSSES:
      raise xp.ConfigError(f"--config.runs.{name}.loss must be one of {LOSSES}, got {run.loss!r}")
    if run.optimizer not in OPTIMIZERS:
      raise xp.ConfigError(f"--config.runs.{name}.optimizer must be one of {OPTIMIZERS}, got {run.optimizer!r}")
    if not run.lr > 0:
      raise xp.ConfigError(f"--config.runs.{name}.lr must be > 0, got {run.lr}")
    if run.loss_dtype not in ("float32", "float64"):
      raise xp.ConfigError(f"--config.runs.{name}.loss_dtype must be float32 or float64, got {run.loss_dtype!r}")
    if run.epochs < 0:
      raise xp.ConfigError(f"--config.runs.{name}.epochs must be >= 0, got {run.epochs}")


# ------------------------------------------------------------------------------------------------------------
# Training: pure functions of (state, data).


class TrainState(NamedTuple):
  params: Any
  opt_state: Any


def make_optimizer(run: ConfigDict) -> optax.GradientTransformation:
  if run.optimizer == "perp_adamw":
    return perp_adamw(run.lr, b1=run.b1, b2=run.b2, eps=run.eps, weight_decay=run.weight_decay)
  return optax.adamw(run.lr, b1=run.b1, b2=run.b2, eps=run.eps, weight_decay=run.weight_decay)


def loss_fn(loss: str):
  if loss == "stablemax":
    return stablemax_cross_entropy
  return optax.losses.softmax_cross_entropy_with_integer_labels


def train_epochs(
  state: TrainState, x, y, *, model, tx, loss: str, num_epochs: int, loss_dtype=jnp.float32
) -> TrainState:
  """``num_epochs`` full-batch steps (the whole training set is one batch, as in the paper).

  The network runs in float32; its logits are cast to ``loss_dtype`` for the loss (float64 needs x64 mode).
  """
  per_example = loss_fn(loss)

  def objective(params):
    return jnp.mean(per_example(model.apply(params, x).astype(loss_dtype), y))

  def step(state, _):
    grads = jax.grad(objective)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return TrainState(optax.apply_updates(state.params, updates), opt_state), None

  state, _ = jax.lax.scan(step, state, None, length=num_epochs)
  return state


def evaluate(params, data, *, model, loss: str, loss_dtype=jnp.float32) -> dict[str, jax.Array]:
  per_example = loss_fn(loss)
  train_logits = model.apply(params, data.x_train)
  test_logits = model.apply(params, data.x_test)
  return {
    "train_loss": jnp.mean(per_example(train_logits.astype(loss_dtype), data.y_train)),
    "train_accuracy": jnp.mean(jnp.argmax(train_logits, -1) == data.y_train),
    "test_accuracy": jnp.mean(jnp.argmax(test_logits, -1) == data.y_test),
    # Both collapse tests on the same (training) logits, whichever loss trained them: softmax at float32, the
    # baseline's precision; StableMax at the precision of this run's loss.
    "softmax_collapse": softmax_collapse_fraction(train_logits, data.y_train),
    "stablemax_collapse": stablemax_collapse_fraction(train_logits.astype(loss_dtype), data.y_train),
    "weight_norm": optax.global_norm(params),
  }


def train_run(name: str, run: ConfigDict, config: ConfigDict, data, key, ctx: xp.Context) -> list[dict]:
  if run.loss_dtype == "float64":
    with jax.enable_x64(True):
      return _train_run(name, run, config, data, key, ctx)
  return _train_run(name, run, config, data, key, ctx)


def _train_run(name: str, run: ConfigDict, config: ConfigDict, data, key, ctx: xp.Context) -> list[dict]:
  loss_dtype = jnp.dtype(run.loss_dtype)
  model = MLP(features=(*config.hidden, config.p), use_bias=False)
  params = model.init(key, data.x_train[:1])
  tx = make_optimizer(run)
  state = TrainState(params, tx.init(params))
  advance_jit = jax.jit(
    lambda state, n: train_epochs(
      state,
      data.x_train,
      data.y_train,
      model=model,
      tx=tx,
      loss=run.loss,
      num_epochs=n,
      loss_dtype=loss_dtype,
    ),
    static_argnums=1,
  )
  evaluate_jit = jax.jit(functools.partial(evaluate, model=model, loss=run.loss, loss_dtype=loss_dtype))

  def record(state, epoch):
    del epoch
    return {k: float(v) for k, v in evaluate_jit(state.params, data).items()}

  _, history = xp.resumable_loop(
    ctx,
    name,
    state,
    run.epochs,
    config.eval_every,
    advance_jit,
    record,
    checkpoint_every=config.checkpoint_every,
    unit="epoch",
  )
  return history


def first_epoch_reaching(history: list[dict], metric: str, threshold: float) -> float:
  for h in history:
    if h[metric] >= threshold:
      return float(h["step"])
  return math.inf


def at_epoch(history: list[dict], epoch: int) -> dict:
  """The record at ``epoch`` (or the last one before it)."""
  eligible = [h for h in history if h["step"] <= epoch]
  return eligible[-1]


def plot(histories: dict[str, list[dict]], ctx: xp.Context) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  labels = {
    "softmax_adamw": "(a) softmax CE + AdamW",
    "stablemax_adamw": "(b) StableMax CE + AdamW",
    "perp_adamw": "(c) softmax CE + ⊥AdamW",
    "softmax64_adamw": "(d) float64 softmax CE + AdamW",
    MATCHED: "control: softmax CE + AdamW with ⊥AdamW's β₂, ε",
  }
  colors = {
    "softmax_adamw": "tab:red",
    "stablemax_adamw": "tab:blue",
    "perp_adamw": "tab:green",
    "softmax64_adamw": "tab:purple",
    MATCHED: "tab:gray",
  }
  fig, ax = plt.subplots(figsize=(7, 4))
  for name, history in histories.items():
    epochs = [h["step"] for h in history]
    ax.plot(epochs, [h["train_accuracy"] for h in history], "--", color=colors[name], alpha=0.7)
    ax.plot(epochs, [h["test_accuracy"] for h in history], "-", color=colors[name], label=labels[name])
  ax.set_xscale("symlog", linthresh=100)
  ax.set_xlabel("epoch")
  ax.set_ylabel("accuracy (solid: test, dashed: train)")
  ax.set_ylim(-0.02, 1.02)
  ax.legend(loc="center right")
  ax.set_title("(a + b) mod p, 40% train, no weight decay")
  ctx.save_figure(fig, "accuracy")

  fig, ax = plt.subplots(figsize=(7, 4))
  for name, history in histories.items():
    epochs = [h["step"] for h in history]
    ax.plot(
      epochs,
      [h["softmax_collapse"] for h in history],
      "-",
      color=colors[name],
      label=f"{labels[name]}: softmax SC",
    )
    ax.plot(
      epochs,
      [h["stablemax_collapse"] for h in history],
      ":",
      color=colors[name],
      label=f"{labels[name]}: StableMax on the same logits",
    )
  ax.set_xscale("symlog", linthresh=100)
  ax.set_xlabel("epoch")
  ax.set_ylabel("fraction of training samples collapsed")
  ax.set_ylim(-0.02, 1.02)
  ax.legend(fontsize=7)
  ax.set_title("Softmax Collapse: loss and correct-class gradient exactly 0 in float32")
  ctx.save_figure(fig, "softmax_collapse")


def run(config: ConfigDict, ctx: xp.Context) -> dict[str, float]:
  data_key, init_key = jax.random.split(ctx.key())
  data = modular_arithmetic(data_key, config.p, config.train_fraction, config.op)
  histories = {}
  for name in RUNS:
    if name in OPTIONAL_RUNS and not config.runs[name].epochs:
      continue
    # The same initialisation for every run: they differ only by loss and optimiser.
    histories[name] = train_run(name, config.runs[name], config, data, init_key, ctx)
  # The control the comparison needs: AdamW with exactly ⊥AdamW's settings (β₂, ε, learning rate, epochs), so
  # that only the projection of the gradient differs.
  matched = ConfigDict(config.runs.perp_adamw.to_dict())
  matched.optimizer = "adamw"
  histories[MATCHED] = train_run(MATCHED, matched, config, data, init_key, ctx)
  plot(histories, ctx)
  ctx.write_text("history.json", json.dumps(histories))

  baseline, stablemax, perp = (histories[n] for n in RUNS[:3])
  perp_epochs = config.runs.perp_adamw.epochs
  at_perp_end = at_epoch(baseline, perp_epochs)
  perp_95 = first_epoch_reaching(perp, "test_accuracy", 0.95)
  # Judged where ⊥AdamW passes 95% (or at its last epoch if it never does).
  matched_at = at_epoch(histories[MATCHED], int(min(perp_95, perp_epochs)))
  softmax64 = {}
  if "softmax64_adamw" in histories:
    h64 = histories["softmax64_adamw"]
    softmax64 = {
      "softmax64_epochs_to_90pct_test": first_epoch_reaching(h64, "test_accuracy", 0.90),
      "softmax64_final_test_accuracy": h64[-1]["test_accuracy"],
      "softmax64_max_test_accuracy": max(h["test_accuracy"] for h in h64),
    }
  return {
    **softmax64,
    "perp_adamw_epochs_to_95pct_test": perp_95,
    "matched_adamw_test_accuracy_at_perp_95pct": matched_at["test_accuracy"],
    "matched_adamw_train_accuracy_at_perp_95pct": matched_at["train_accuracy"],
    "perp_adamw_final_test_accuracy": perp[-1]["test_accuracy"],
    "baseline_test_accuracy_at_perp_end": at_perp_end["test_accuracy"],
    "baseline_train_accuracy_at_perp_end": at_perp_end["train_accuracy"],
    "baseline_max_softmax_collapse": max(h["softmax_collapse"] for h in baseline),
    "baseline_max_stablemax_collapse": max(h["stablemax_collapse"] for h in baseline),
    "baseline_final_test_accuracy": baseline[-1]["test_accuracy"],
    "stablemax_epochs_to_90pct_test": first_epoch_reaching(stablemax, "test_accuracy", 0.90),
    "stablemax_final_test_accuracy": stablemax[-1]["test_accuracy"],
    "stablemax_max_collapse": max(h["stablemax_collapse"] for h in stablemax),
    "stablemax_run_softmax_collapse": stablemax[-1]["softmax_collapse"],
  }


CLAIMS = (
  xp.Claim(
    metric="perp_adamw_epochs_to_95pct_test",
    statement="⊥AdamW (softmax CE, no weight decay) generalises without delay",
    paper_value="Fig. 1 / Fig. 6: ⊥AdamW reaches full test accuracy within a few hundred epochs",
    comparison="<=",
    target=300,
  ),
  xp.Claim(
    metric="matched_adamw_test_accuracy_at_perp_95pct",
    statement="Control: AdamW with exactly ⊥AdamW's β₂, ε, learning rate and initialisation stays below 5% test "
    "accuracy at the epoch where ⊥AdamW passes 95%",
    paper_value="the authors' run_main_experiments.sh compares ⊥AdamW with plain AdamW on the same MLP (lr 5e-3, "
    "500 epochs; figure number unverified): ⊥AdamW generalises, AdamW without weight decay does not",
    comparison="<",
    target=0.05,
  ),
  xp.Claim(
    metric="baseline_test_accuracy_at_perp_end",
    statement="softmax CE + AdamW without regularisation does not generalise in that time",
    paper_value="Fig. 1: the unregularised float32 baseline stays at chance while fitting the training set",
    comparison="<",
    target=0.05,
  ),
  xp.Claim(
    metric="baseline_train_accuracy_at_perp_end",
    statement="... although it fits the training set",
    paper_value="Fig. 1: 100% training accuracy",
    comparison=">=",
    target=1.0,
  ),
  xp.Claim(
    metric="baseline_max_stablemax_collapse",
    statement="StableMax does not collapse on the baseline's logits",
    paper_value="Sec. 4: StableMax avoids SC",
    comparison="<=",
    target=0.0,
  ),
  xp.Claim(
    metric="baseline_max_softmax_collapse",
    statement="the float32 softmax baseline drifts into Softmax Collapse",
    paper_value="Fig. 2: SC rises after the training set is fitted, and learning stops",
    comparison=">=",
    target=0.01,
  ),
  xp.Claim(
    metric="stablemax_epochs_to_90pct_test",
    statement="StableMax CE groks without weight decay (full scale only: tens of thousands of epochs)",
    paper_value="Fig. 1: StableMax + AdamW reaches high test accuracy within its 80,000-epoch run",
    comparison="<=",
    target=80000,
    scales=("full",),
  ),
  xp.Claim(
    metric="softmax64_epochs_to_90pct_test",
    statement="Softmax CE in float64 groks without weight decay (full scale only), where float32 softmax collapses",
    paper_value="Fig. 1: float64 softmax + AdamW generalises, late, within the 80,000-epoch run",
    comparison="<=",
    target=80000,
    scales=("full",),
  ),
  xp.Claim(
    metric="stablemax_max_collapse",
    statement="StableMax training never collapses, though softmax would on its logits",
    paper_value="Sec. 4: StableMax prevents SC (compare `stablemax_run_softmax_collapse`)",
    comparison="<=",
    target=0.0,
  ),
)

EXPERIMENT = xp.Experiment("grokking", PAPER, CLAIMS, get_config, run, validate_config)

if __name__ == "__main__":
  xp.define_flags(EXPERIMENT)
  xp.main(EXPERIMENT)
