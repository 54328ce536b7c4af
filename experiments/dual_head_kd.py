r"""Dual-Head Knowledge Distillation (Yang, Zong, Huang, Feng, An; arXiv 2411.08937) on MNIST-1D.

A pretrained 1-D CNN teacher (``toolkit.models.classifier.pretrained_classifier``, cached) is distilled into a
small MLP student (``toolkit.models.dual_head.DualHeadMLP``: the same two-head network in every arm, tested on its
original head) under six objectives, each trained from the same three seeds (same initialisation and batch order
per seed, so arms are compared seed by seed):

- ``ce``: cross-entropy only;
- ``ce_kd``: CE + classic KD (softened KL, T = 4) on the original head;
- ``ce_binary_kl``: CE + BinaryKL (T = 2) on the original head (the combination of Fig. 1(b));
- ``binary_kl``: BinaryKL alone on the original head (the other "alone" of Fig. 1(b));
- ``dual_head``: DHKD, CE on the original head and BinaryKLNorm (T = 2) on the auxiliary head;
- ``dual_head_ga``: DHKD with the gradient alignment.

Claims are judged on paired differences of test accuracy over seeds with a 95% Student-t interval; a claim whose
interval does not support it fails. The training loop also records the cosine between the CE and distillation
gradients on the heads and on the backbone (Sec. 4: they conflict on a shared classifier, not in the backbone).

  python -m experiments.dual_head_kd --quick --out_dir=runs/dual_head_kd
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.stats
from ml_collections import ConfigDict

from toolkit import experiment as xp
from toolkit.losses import distillation
from toolkit.models import classifier
from toolkit.models import dual_head as dh
from toolkit.models.cnn import CNN

PAPER = xp.Paper(
  "dual_head_kd", "Dual-Head Knowledge Distillation: Enhancing Logits Utilization with an Auxiliary Head", "2411.08937"
)
ARMS = ("ce", "ce_kd", "ce_binary_kl", "binary_kl", "dual_head", "dual_head_ga")
LABELS = {
  "ce": "CE",
  "ce_kd": "CE + KD",
  "ce_binary_kl": "CE + BinaryKL (one head)",
  "binary_kl": "BinaryKL alone",
  "dual_head": "DHKD",
  "dual_head_ga": "DHKD + GA",
}
# The non-inferiority margin of "at least as good as CE + KD" (accuracy, fixed before any run).
MARGIN = 0.01


def get_config(scale: str = "full") -> ConfigDict:
  if scale not in ("quick", "full"):
    raise ValueError(f"scale must be 'quick' or 'full', got {scale!r}")
  config = ConfigDict()
  config.dataset = "mnist1d"
  config.teacher_features = (16, 32, 32)
  config.teacher_kernel = 5
  config.teacher_epochs = 60
  config.student_hidden = (100, 100)
  config.aux_hidden = 0  # 0: linear auxiliary head; > 0: Dense(aux_hidden) -> ReLU -> Dense
  config.arms = ARMS
  config.num_seeds = 3 if scale == "quick" else 5
  config.num_epochs = 40 if scale == "quick" else 120
  config.batch_size = 64
  config.learning_rate = 0.05  # the authors' SGD: lr 0.05, momentum 0.9, weight decay 5e-4 (cosine decay here)
  config.momentum = 0.9
  config.weight_decay = 5e-4
  config.kd_temperature = 4.0
  config.binary_kl_temperature = 2.0  # the authors' BinaryKL_T
  config.ce_weight = 1.0  # γ
  config.distillation_weight = 1.0  # α
  return config


def validate_config(config: ConfigDict) -> None:
  unknown = [a for a in config.arms if a not in ARMS]
  if unknown or not config.arms:
    raise xp.ConfigError(f"--config.arms: unknown arm(s) {unknown}; known: {ARMS}")
  if config.dataset not in classifier.DATASETS:
    raise xp.ConfigError(f"--config.dataset must be one of {classifier.DATASETS}, got {config.dataset!r}")
  for name in ("num_seeds", "num_epochs", "batch_size", "teacher_epochs", "teacher_kernel"):
    if config[name] < 1:
      raise xp.ConfigError(f"--config.{name} must be >= 1, got {config[name]}")
  if config.num_seeds < 2:
    raise xp.ConfigError(f"--config.num_seeds must be >= 2 for a confidence interval, got {config.num_seeds}")
  for name in ("learning_rate", "kd_temperature", "binary_kl_temperature"):
    if not config[name] > 0:
      raise xp.ConfigError(f"--config.{name} must be > 0, got {config[name]}")
  if config.aux_hidden < 0:
    raise xp.ConfigError(f"--config.aux_hidden must be >= 0, got {config.aux_hidden}")


def arm_setup(arm: str, config: ConfigDict) -> tuple[dh.Objective, float, bool]:
  """The objective, the CE weight and the alignment flag of an arm."""
  kd = lambda s, t: distillation.kd_loss(s, t, temperature=config.kd_temperature)
  bkl = lambda s, t: distillation.binary_kl(s, t, temperature=config.binary_kl_temperature)
  bkl_norm = lambda s, t: distillation.binary_kl_norm(s, t, temperature=config.binary_kl_temperature)
  return {
    "ce": (dh.single_head_objective(None), config.ce_weight, False),
    "ce_kd": (dh.single_head_objective(kd), config.ce_weight, False),
    "ce_binary_kl": (dh.single_head_objective(bkl), config.ce_weight, False),
    "binary_kl": (dh.single_head_objective(bkl), 0.0, False),
    "dual_head": (dh.dual_head_objective(bkl_norm), config.ce_weight, False),
    "dual_head_ga": (dh.dual_head_objective(bkl_norm), config.ce_weight, True),
  }[arm]


def paired_interval(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
  """Mean of ``a - b`` over seeds and its two-sided Student-t interval ``(mean, low, high)``."""
  d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
  half = scipy.stats.t.ppf(0.5 + level / 2, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size)
  return float(d.mean()), float(d.mean() - half), float(d.mean() + half)


def run(config: ConfigDict, ctx: xp.Context) -> dict[str, float]:
  start = time.perf_counter()
  teacher = CNN(features=tuple(config.teacher_features), kernel_size=(config.teacher_kernel,))
  recipe = classifier.ClassifierRecipe(dataset=config.dataset, num_epochs=config.teacher_epochs)
  pre = classifier.pretrained_classifier(teacher, recipe, layout="image")
  teacher_seconds = time.perf_counter() - start
  teacher_logits = teacher.apply({"params": pre.params}, jnp.asarray(pre.data.x_train))
  flat = classifier.classification_data(config.dataset, layout="flat", num_train=recipe.num_train, seed=recipe.seed)
  x, y, x_test, y_test = (jnp.asarray(a) for a in flat)
  if not np.array_equal(np.asarray(flat.y_train), np.asarray(pre.data.y_train)):
    raise RuntimeError("the flat and image splits disagree: teacher logits would not match the student's inputs")

  student = dh.DualHeadMLP(
    hidden=tuple(config.student_hidden),
    num_classes=int(teacher_logits.shape[-1]),
    aux_hidden=config.aux_hidden or None,
  )
  steps_per_epoch = x.shape[0] // config.batch_size
  schedule = optax.cosine_decay_schedule(config.learning_rate, config.num_epochs * steps_per_epoch)
  optimizer = optax.chain(optax.add_decayed_weights(config.weight_decay), optax.sgd(schedule, config.momentum))
  keys = jax.random.split(ctx.key(), config.num_seeds)

  def run_arm(i, arm):
    objective, ce_weight, align = arm_setup(arm, config)
    t0 = time.perf_counter()

    def one(key):
      result = dh.train(
        key,
        x,
        y,
        teacher_logits,
        model=student,
        optimizer=optimizer,
        objective=objective,
        num_epochs=config.num_epochs,
        batch_size=config.batch_size,
        ce_weight=ce_weight,
        distillation_weight=config.distillation_weight,
        align=align,
      )
      return (
        dh.accuracy(student, result.params, x_test, y_test),
        dh.accuracy(student, result.params, x, y),
        result.history,
      )

    test_acc, train_acc, history = jax.jit(jax.vmap(one))(keys)
    return {
      "arm": arm,
      "test_accuracy": np.asarray(test_acc).tolist(),
      "train_accuracy": np.asarray(train_acc).tolist(),
      "head_cosine": np.asarray(history.head_cosine).mean(0).tolist(),  # per epoch, mean over seeds
      "backbone_cosine": np.asarray(history.backbone_cosine).mean(0).tolist(),
      "seconds": time.perf_counter() - t0,
    }

  def describe(r):
    acc = np.asarray(r["test_accuracy"])
    return f"{r['arm']}: test accuracy {acc.mean():.4f} ± {acc.std(ddof=1):.4f} ({r['seconds']:.1f} s)"

  results = {r["arm"]: r for r in xp.run_cases(ctx, list(config.arms), run_arm, describe)}
  teacher_test = float(pre.test_accuracy)

  measured: dict[str, float] = {
    "teacher_test_accuracy": teacher_test,
    "teacher_seconds": teacher_seconds,
    "num_seeds": float(config.num_seeds),
  }
  for arm, r in results.items():
    acc = np.asarray(r["test_accuracy"])
    measured[f"{arm}_test_accuracy"] = float(acc.mean())
    measured[f"{arm}_test_accuracy_ci"] = float(
      scipy.stats.t.ppf(0.975, acc.size - 1) * acc.std(ddof=1) / np.sqrt(acc.size)
    )
    half = len(r["head_cosine"]) // 2
    measured[f"{arm}_head_cosine"] = float(np.mean(r["head_cosine"][half:]))
    measured[f"{arm}_backbone_cosine"] = float(np.mean(r["backbone_cosine"][half:]))

  def diff(a, b):
    if a in results and b in results:
      mean, low, high = paired_interval(results[a]["test_accuracy"], results[b]["test_accuracy"])
      measured[f"{a}_minus_{b}"], measured[f"{a}_minus_{b}_ci_low"], measured[f"{a}_minus_{b}_ci_high"] = (
        mean,
        low,
        high,
      )

  for a, b in (
    ("ce_binary_kl", "ce"),
    ("ce_binary_kl", "binary_kl"),
    ("dual_head", "ce"),
    ("dual_head", "ce_kd"),
    ("dual_head_ga", "ce_kd"),
    ("dual_head_ga", "dual_head"),
    ("ce", "ce_kd"),
    ("ce_kd", "ce"),
  ):
    diff(a, b)
  if "ce_binary_kl_minus_ce_ci_high" in measured and "ce_binary_kl_minus_binary_kl_ci_high" in measured:
    measured["same_head_worse_than_either_ci_high"] = max(
      measured["ce_binary_kl_minus_ce_ci_high"], measured["ce_binary_kl_minus_binary_kl_ci_high"]
    )
  write_table(results, measured, teacher_test, ctx)
  plot_results(results, teacher_test, ctx)
  return measured


def write_table(results: dict, measured: dict, teacher_test: float, ctx: xp.Context) -> None:
  lines = [
    f"Teacher (1-D CNN) test accuracy {teacher_test:.4f}.",
    "",
    "| arm | test accuracy (mean ± 95% CI) | per seed | train accuracy | head cos(g_CE, g_dist) | backbone cos |",
    "|---|---|---|---|---|---|",
  ]
  for arm, r in results.items():
    seeds = ", ".join(f"{v:.4f}" for v in r["test_accuracy"])
    lines.append(
      f"| {LABELS[arm]} | {measured[f'{arm}_test_accuracy']:.4f} ± {measured[f'{arm}_test_accuracy_ci']:.4f} | "
      f"{seeds} | {np.mean(r['train_accuracy']):.4f} | {measured[f'{arm}_head_cosine']:+.3f} | "
      f"{measured[f'{arm}_backbone_cosine']:+.3f} |"
    )
  lines += ["", "Paired differences of test accuracy (same seeds), mean [95% t-interval]:", ""]
  for key in sorted(k for k in measured if k.endswith("_ci_low")):
    name = key[: -len("_ci_low")]
    lines.append(f"- {name}: {measured[name]:+.4f} [{measured[key]:+.4f}, {measured[name + '_ci_high']:+.4f}]")
  lines += ["", "Cosines are means over the second half of training (over seeds and epochs), before alignment."]
  ctx.write_text("table.md", "\n".join(lines))


def plot_results(results: dict, teacher_test: float, ctx: xp.Context) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, (ax, ax_cos) = plt.subplots(1, 2, figsize=(13, 4.2))
  arms = list(results)
  xs = np.arange(len(arms))
  for i, arm in enumerate(arms):
    acc = np.asarray(results[arm]["test_accuracy"])
    half = scipy.stats.t.ppf(0.975, acc.size - 1) * acc.std(ddof=1) / np.sqrt(acc.size)
    ax.bar(i, acc.mean(), yerr=half, capsize=4, color="tab:orange" if arm.startswith("dual") else "tab:blue")
    ax.scatter(np.full(acc.size, i), acc, color="k", s=10, zorder=3)
  ax.axhline(teacher_test, color="gray", ls=":", label=f"teacher {teacher_test:.3f}")
  lows = [min(results[a]["test_accuracy"]) for a in arms]
  ax.set_ylim(min(lows) - 0.03, max(teacher_test, max(max(results[a]["test_accuracy"]) for a in arms)) + 0.01)
  ax.set_xticks(xs, [LABELS[a] for a in arms], rotation=20, ha="right", fontsize=8)
  ax.set_ylabel("student test accuracy (original head)")
  ax.set_title("MNIST-1D, CNN teacher -> MLP student (mean, 95% CI, seeds)")
  ax.legend(fontsize=8)
  # BinaryKL alone has no CE gradient and DHKD's losses share no head: those cosines are 0 by construction.
  for arm, color in (("ce_binary_kl", "tab:red"), ("ce_kd", "tab:green"), ("dual_head", "tab:orange")):
    if arm in results:
      epochs = np.arange(1, len(results[arm]["head_cosine"]) + 1)
      if arm != "dual_head":
        ax_cos.plot(epochs, results[arm]["head_cosine"], color=color, label=f"{LABELS[arm]}: heads")
      ax_cos.plot(epochs, results[arm]["backbone_cosine"], color=color, ls="--", label=f"{LABELS[arm]}: backbone")
  ax_cos.axhline(0, color="k", lw=0.5)
  ax_cos.set_xlabel("epoch")
  ax_cos.set_ylabel("cos(g_CE, g_distillation), epoch mean")
  ax_cos.set_title("cos(g_CE, g_distillation) on the heads and the backbone (Sec. 4)")
  ax_cos.legend(fontsize=7)
  ctx.save_figure(fig, "accuracy")


CLAIMS = (
  xp.Claim(
    metric="same_head_worse_than_either_ci_high",
    statement="CE + BinaryKL on one head is worse than either loss alone: the upper 95% bound of the paired "
    "accuracy difference to CE alone and to BinaryKL alone is below 0",
    paper_value="Fig. 1(b) (CIFAR-100): CE + BinaryKL on one head collapses, below CE alone and BinaryKL alone; "
    "DHKD highest (bar values not checked here: —)",
    comparison="<",
    target=0.0,
  ),
  xp.Claim(
    metric="dual_head_minus_ce_ci_high",
    statement="control for the claim above: DHKD, which keeps the logit loss off the original head, is not worse "
    "than CE alone (the same test, upper bound below 0, must fail)",
    paper_value="Fig. 1(b): DHKD above CE (values: —)",
    comparison=">=",
    target=0.0,
  ),
  xp.Claim(
    metric="dual_head_minus_ce_kd_ci_low",
    statement=f"DHKD is at least as good as CE + KD: lower 95% bound of the paired accuracy difference above "
    f"-{MARGIN:g} (non-inferiority margin)",
    paper_value="Tables (CIFAR-100, e.g. resnet32x4 -> ShuffleV2): DHKD above KD for every teacher-student pair "
    "(values not checked here: —)",
    comparison=">",
    target=-MARGIN,
  ),
  xp.Claim(
    metric="ce_minus_ce_kd_ci_low",
    statement=f"control for the claim above: plain CE is not non-inferior to CE + KD (the same test, lower bound above "
    f"-{MARGIN:g}, must fail, else the task cannot tell distillation methods apart)",
    paper_value="KD above CE in every table of the paper (values: —)",
    comparison="<=",
    target=-MARGIN,
  ),
  xp.Claim(
    metric="ce_binary_kl_head_cosine",
    statement="With both losses on one head, the CE and BinaryKL gradients conflict on the classifier (mean cosine "
    "over the second half of training below 0)",
    paper_value="Sec. 4 (neural-collapse analysis) and abstract: the gradients contradict in the linear classifier",
    comparison="<",
    target=0.0,
  ),
  xp.Claim(
    metric="ce_binary_kl_backbone_cosine",
    statement="... but not in the backbone (mean cosine over the second half of training above 0)",
    paper_value="Sec. 4 and abstract: no such conflict within the backbone",
    comparison=">",
    target=0.0,
  ),
)

EXPERIMENT = xp.Experiment("dual_head_kd", PAPER, CLAIMS, get_config, run, validate_config)

if __name__ == "__main__":
  xp.define_flags(EXPERIMENT)
  xp.main(EXPERIMENT)
