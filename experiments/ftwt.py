r"""Fire Together Wire Together (Elkerdawy, Elhoushi, Zhang, Ray; CVPR 2022, arXiv 2110.08232) on the 8×8 digits.

The shared small CNN (``toolkit.models.cnn.CNN``, three 3×3 convolutions of 16, 32, 32 channels, global average
pooling, dense head), pretrained once by ``toolkit.models.classifier.pretrained_classifier``, gets one FTWT mask
predictor per convolution. For each mass threshold τ ∈ {0.8, 0.9, 0.95, 1.0}:

* the FLOPs reduction estimated *before* training, from the mass targets of the pretrained dense network on the
  training set (``ftwt.flops_estimate``);
* decoupled FTWT fine-tuning from the pretrained network: task cross-entropy plus the mask loss (weight 1 for the
  first ``cooldown`` fraction of the epochs, then 0), Adam at 1e-3 on the backbone (the authors' fine-tune learning
  rate) and 0.1 on the predictors (their ``mlr``), batch 64, binary masks without gradient as in the authors' code
  (``straight_through=False``; see ``get_config``);
* on the test set with binary masks: accuracy, the measured convolution-FLOPs reduction, and the predictors'
  accuracy against the targets;
* the control, static filter pruning by L1 norm (Li et al. 2017) at the same FLOPs (a common keep fraction per
  layer, the smallest whose FLOPs are at least FTWT's measured FLOPs), fine-tuned with the same budget.

The operating point is the largest τ whose measured reduction is ≥ 40%; its accuracy drop (against the pretrained
network) is compared with the control's.

  python -m experiments.ftwt --quick --out_dir=runs/ftwt
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from ml_collections import ConfigDict

from toolkit import experiment as xp
from toolkit.models import classifier
from toolkit.models.cnn import CNN
from toolkit.pruning import ftwt

PAPER = xp.Paper(
  "ftwt", "Fire Together Wire Together: A Dynamic Pruning Approach with Self-Supervised Mask Prediction", "2110.08232"
)
# The paper's CIFAR-10 results (authors' README, selkerdawy/FTWT; the paper's Table 1): (model, τ, mode) ->
# (baseline %, accuracy %, FLOPs reduction %).
PAPER_RESULTS = {
  ("VGG16-bn", 0.92, "joint"): (93.82, 93.55, 65.0),
  ("VGG16-bn", 0.92, "decoupled"): (93.82, 93.73, 56.0),
  ("ResNet-56", 0.80, "decoupled"): (93.66, 92.63, 66.0),
  ("MobileNetV1", 1.00, "decoupled"): (90.89, 91.06, 78.0),
}


def get_config(scale: str = "full") -> ConfigDict:
  if scale not in ("quick", "full"):
    raise ValueError(f"scale must be 'quick' or 'full', got {scale!r}")
  config = ConfigDict()
  config.features = (16, 32, 32)
  config.thresholds = (0.8, 0.9, 0.95, 1.0)
  config.num_epochs = 10 if scale == "quick" else 60
  config.batch_size = 64
  config.learning_rate = 1e-3  # backbone (the authors' fine-tune variant)
  config.predictor_learning_rate = 0.1  # the authors' mlr
  config.cooldown = 0.5  # the mask loss weight is 0 after this fraction of the epochs
  config.decoupled = True
  # The authors' code (utils/layers.py) computes the binary mask without gradient: after the cool-down the
  # predictors are frozen and the backbone adapts to them. With the paper's straight-through estimator the task loss
  # also pulls the masks back on (an earlier 20-epoch quick run: measured reduction 20.6% against an estimate of
  # 34.4% at τ = 0.9, accuracy claims failed as well).
  config.straight_through = False
  config.min_reduction = 0.4  # the operating point: the largest τ with at least this measured FLOPs reduction
  return config


def validate_config(config: ConfigDict) -> None:
  if not config.thresholds or not all(0 < float(t) <= 1 for t in config.thresholds):
    raise xp.ConfigError(f"--config.thresholds must be non-empty values in (0, 1], got {config.thresholds}")
  if config.num_epochs < 1 or config.batch_size < 1:
    raise xp.ConfigError(
      f"--config.num_epochs and batch_size must be >= 1, got {config.num_epochs}, {config.batch_size}"
    )
  if not 0 <= config.cooldown <= 1:
    raise xp.ConfigError(f"--config.cooldown must be in [0, 1], got {config.cooldown}")
  if not 0 < config.min_reduction < 1:
    raise xp.ConfigError(f"--config.min_reduction must be in (0, 1), got {config.min_reduction}")


def _batches(key: jax.Array, n: int, batch_size: int) -> np.ndarray:
  order = np.asarray(jax.random.permutation(key, n))
  num = n // batch_size
  return order[: num * batch_size].reshape(num, batch_size)


def make_trainers(model, config: ConfigDict):
  """The jitted training and evaluation steps, built once per run: the threshold and the static masks are traced
  arguments, so the four thresholds share one compilation."""
  optimizer = optax.multi_transform(
    {"backbone": optax.adam(config.learning_rate), "predictors": optax.adam(config.predictor_learning_rate)},
    {"backbone": "backbone", "predictors": "predictors"},
  )
  static_optimizer = optax.adam(config.learning_rate)

  @jax.jit
  def ftwt_step(state, xb, yb, threshold, weight):
    return ftwt.step(
      state,
      xb,
      yb,
      model=model,
      optimizer=optimizer,
      threshold=threshold,
      mask_weight=weight,
      decoupled=config.decoupled,
      straight_through=config.straight_through,
    )[0]

  @jax.jit
  def evaluate(params, predictors, x, threshold):
    return ftwt.dynamic_forward(model, params, predictors, x, threshold=threshold)

  @jax.jit
  def static_step(params, opt_state, masks, xb, yb):
    def loss(p):
      logits = model.apply({"params": p}, xb, list(masks))
      return optax.losses.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    updates, opt_state = static_optimizer.update(jax.grad(loss)(params), opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  return optimizer, ftwt_step, evaluate, static_optimizer, static_step


def train_ftwt(model, params, data, threshold: float, config: ConfigDict, key: jax.Array, trainers):
  """Fine-tunes the backbone and trains the predictors; returns the final ``FTWTState``."""
  optimizer, ftwt_step = trainers[:2]
  x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
  predictors = ftwt.init_predictors(jax.random.fold_in(key, 0), model, x)
  state = ftwt.init(params, predictors, optimizer)
  tau = jnp.asarray(threshold, jnp.float32)
  for epoch in range(config.num_epochs):
    weight = jnp.asarray(1.0 if epoch < config.cooldown * config.num_epochs else 0.0, jnp.float32)
    for idx in _batches(jax.random.fold_in(key, epoch + 1), x.shape[0], config.batch_size):
      state = ftwt_step(state, x[idx], y[idx], tau, weight)
  return state


def train_static(params, masks, data, config: ConfigDict, key: jax.Array, trainers):
  """Fine-tunes the backbone under fixed channel masks with the task loss alone (the same budget as FTWT)."""
  static_optimizer, static_step = trainers[3:]
  x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
  opt_state = static_optimizer.init(params)
  for epoch in range(config.num_epochs):
    for idx in _batches(jax.random.fold_in(key, epoch + 1), x.shape[0], config.batch_size):
      params, opt_state = static_step(params, opt_state, masks, x[idx], y[idx])
  return params


def run_threshold(model, pre, threshold: float, config: ConfigDict, key: jax.Array, trainers) -> dict:
  data = pre.data
  x_test, y_test = jnp.asarray(data.x_test), jnp.asarray(data.y_test)
  geometry = ftwt.model_geometry(model, x_test)
  dense = ftwt.dense_flops(model, x_test)
  start = time.perf_counter()
  estimate = float(ftwt.flops_estimate(model, pre.params, jnp.asarray(data.x_train), threshold=threshold).reduction)

  state = train_ftwt(model, pre.params, data, threshold, config, key, trainers)
  out = trainers[2](state.params, state.predictors, x_test, jnp.asarray(threshold, jnp.float32))
  flops = float(jnp.mean(ftwt.conv_flops(out.active_channels, **geometry)))
  accuracy = float(jnp.mean(jnp.argmax(out.logits, -1) == y_test))
  ftwt_seconds = time.perf_counter() - start

  start = time.perf_counter()
  keep = ftwt.uniform_keep_counts(config.features, flops, **geometry)
  masks = ftwt.l1_channel_masks(pre.params, keep)
  # The same batch order as FTWT's fine-tuning (common random numbers): at τ = 1, where nothing is pruned, the two
  # runs differ only by the predictors, instead of by ±1.5 points of fine-tuning noise.
  static_params = train_static(pre.params, masks, data, config, key, trainers)
  static_accuracy = classifier.accuracy(model, static_params, x_test, y_test, channel_masks=list(masks))
  static_flops = float(ftwt.conv_flops(jnp.asarray(keep, jnp.float32), **geometry))
  return {
    "threshold": float(threshold),
    "estimate_reduction": estimate,
    "reduction": 1.0 - flops / dense,
    "accuracy": accuracy,
    "predictor_accuracy": float(ftwt.predictor_accuracy(out.masks, out.targets)),
    "active_channels": np.asarray(out.active_channels).mean(0).tolist(),
    "static_keep": list(keep),
    "static_reduction": 1.0 - static_flops / dense,
    "static_accuracy": static_accuracy,
    "ftwt_seconds": ftwt_seconds,
    "static_seconds": time.perf_counter() - start,
  }


def run(config: ConfigDict, ctx: xp.Context) -> dict[str, float]:
  model = CNN(features=tuple(config.features))
  start = time.perf_counter()
  pre = classifier.pretrained_classifier(model, layout="image")
  pretrain_seconds = time.perf_counter() - start
  keys = jax.random.split(ctx.key(), len(config.thresholds))
  cases = [float(t) for t in config.thresholds]
  trainers = make_trainers(model, config)

  def run_one(i, threshold):
    return run_threshold(model, pre, threshold, config, keys[i], trainers)

  def describe(r):
    return (
      f"τ {r['threshold']:g}: accuracy {100 * r['accuracy']:.1f}%, FLOPs reduction {100 * r['reduction']:.1f}% "
      f"(estimate {100 * r['estimate_reduction']:.1f}%), static L1 {100 * r['static_accuracy']:.1f}%"
    )

  results = list(xp.run_cases(ctx, cases, run_one, describe))
  baseline = pre.test_accuracy
  plot_results(results, baseline, ctx)
  write_table(results, baseline, ctx)

  measured: dict[str, float] = {"baseline_accuracy": baseline, "pretrain_seconds": pretrain_seconds}
  for r in results:
    name = f"tau{r['threshold']:g}"
    for field in ("accuracy", "reduction", "estimate_reduction", "predictor_accuracy", "static_accuracy"):
      measured[f"{name}_{field}"] = r[field]
  measured["max_estimate_error_points"] = max(100 * abs(r["estimate_reduction"] - r["reduction"]) for r in results)
  eligible = [r for r in results if r["reduction"] >= config.min_reduction]
  if eligible:
    point = max(eligible, key=lambda r: r["threshold"])
    measured["operating_threshold"] = point["threshold"]
    measured["operating_reduction"] = point["reduction"]
    measured["ftwt_accuracy_drop_points"] = 100 * (baseline - point["accuracy"])
    measured["static_accuracy_drop_points"] = 100 * (baseline - point["static_accuracy"])
    measured["static_minus_ftwt_drop_points"] = (
      measured["static_accuracy_drop_points"] - measured["ftwt_accuracy_drop_points"]
    )
  else:  # no threshold reaches the reduction: the operating-point claims fail (NaN)
    for name in (
      "operating_threshold",
      "operating_reduction",
      "ftwt_accuracy_drop_points",
      "static_accuracy_drop_points",
      "static_minus_ftwt_drop_points",
    ):
      measured[name] = float("nan")
  return measured


def _plt():
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def plot_results(results: list[dict], baseline: float, ctx: xp.Context) -> None:
  plt = _plt()
  fig, (ax, ax_est) = plt.subplots(1, 2, figsize=(11, 4.2))
  red = [100 * r["reduction"] for r in results]
  ax.plot(red, [100 * r["accuracy"] for r in results], "o-", label="FTWT (decoupled), dynamic")
  ax.plot(
    [100 * r["static_reduction"] for r in results],
    [100 * r["static_accuracy"] for r in results],
    "s--",
    label="static L1 filter pruning, same FLOPs",
  )
  for r, x in zip(results, red):
    ax.annotate(
      f"τ={r['threshold']:g}", (x, 100 * r["accuracy"]), fontsize=8, textcoords="offset points", xytext=(3, 4)
    )
  ax.axhline(100 * baseline, color="gray", ls=":", label="pretrained dense")
  ax.set_xlabel("convolution FLOPs reduction (%)")
  ax.set_ylabel("test accuracy (%)")
  ax.set_title("digits CNN (16, 32, 32)")
  ax.legend(fontsize=8)
  est = [100 * r["estimate_reduction"] for r in results]
  ax_est.plot(est, red, "o")
  lim = max(max(est), max(red), 1.0) * 1.1
  ax_est.plot([0, lim], [0, lim], "k:", lw=1, label="measured = estimate")
  ax_est.fill_between([0, lim], [-5, lim - 5], [5, lim + 5], color="gray", alpha=0.15, label="±5 points")
  ax_est.set_xlabel("FLOPs reduction estimated before training (%)")
  ax_est.set_ylabel("measured FLOPs reduction (%)")
  ax_est.legend(fontsize=8)
  fig.tight_layout()
  ctx.save_figure(fig, "accuracy_vs_flops")


def write_table(results: list[dict], baseline: float, ctx: xp.Context) -> None:
  lines = [
    f"Pretrained dense CNN: {100 * baseline:.1f}% test accuracy.",
    "",
    (
      "| τ | FTWT accuracy (%) | FLOPs reduction (%) | estimate before training (%) | predictor accuracy (%) | "
      "active channels per layer | static L1 accuracy (%) | static reduction (%) | static keep |"
    ),
    "|---|---|---|---|---|---|---|---|---|",
  ]
  for r in results:
    active = ", ".join(f"{a:.1f}" for a in r["active_channels"])
    lines.append(
      f"| {r['threshold']:g} | {100 * r['accuracy']:.1f} | {100 * r['reduction']:.1f} | "
      f"{100 * r['estimate_reduction']:.1f} | {100 * r['predictor_accuracy']:.1f} | {active} | "
      f"{100 * r['static_accuracy']:.1f} | {100 * r['static_reduction']:.1f} | {r['static_keep']} |"
    )
  lines += [
    "",
    "Paper (CIFAR-10, authors' README / Table 1): "
    + "; ".join(
      f"{m} τ = {t:g} {mode}: {acc:.2f}% (baseline {base:.2f}%) at {red:.0f}% FLOPs reduction"
      for (m, t, mode), (base, acc, red) in PAPER_RESULTS.items()
    ),
  ]
  ctx.write_text("table.md", "\n".join(lines))


CLAIMS = (
  xp.Claim(
    metric="max_estimate_error_points",
    statement="The FLOPs reduction estimated before training from the pretrained network's mass targets is within "
    "5 points of the reduction measured after training, at every threshold",
    paper_value="§4: the mass threshold gives a FLOPs estimate before training, close to the final reduction "
    "(VGG16-bn CIFAR-10, τ = 0.92 decoupled: 56% measured)",
    comparison="<=",
    target=5.0,
  ),
  xp.Claim(
    metric="ftwt_accuracy_drop_points",
    statement="At the largest τ giving ≥ 40% FLOPs reduction, FTWT loses at most 2 accuracy points",
    paper_value="Table 1 / README: VGG16-bn CIFAR-10 τ = 0.92 decoupled 93.73% vs 93.82% baseline at 56% FLOPs "
    "reduction; ResNet-56 τ = 0.8 92.63% vs 93.66% at 66%",
    comparison="<=",
    target=2.0,
  ),
  xp.Claim(
    metric="static_minus_ftwt_drop_points",
    statement="... a smaller drop than static L1-norm filter pruning at the same FLOPs, fine-tuned alike",
    paper_value="Abstract: 15% (CIFAR) more FLOPs reduction than static and dynamic baselines at similar accuracy",
    comparison=">",
    target=0.0,
  ),
  xp.Claim(
    metric="static_accuracy_drop_points",
    statement="The control, static L1 filter pruning at the same FLOPs, fails the 2-point test",
    paper_value="Table 1: static pruning baselines lose more accuracy at a given FLOPs reduction",
    comparison=">",
    target=2.0,
  ),
)

EXPERIMENT = xp.Experiment("ftwt", PAPER, CLAIMS, get_config, run, validate_config)

if __name__ == "__main__":
  # XLA:CPU (jaxlib 0.10.2): the concurrency-optimised scheduler has hung jitted training on this machine.
  xp.append_xla_flags("--xla_cpu_enable_concurrency_optimized_scheduler=false")
  xp.define_flags(EXPERIMENT)
  xp.main(EXPERIMENT)
