r"""GliODIL (Balcerak et al., Nature Communications 2025, arXiv 2312.05063) on synthetic 2-D patients.

Each synthetic patient (``toolkit.pde.tumour_growth.synthetic_patient``) is a brain-like slice (white matter, a
folded grey-matter cortex, CSF ventricles and rim) on a 48² grid of 2 mm voxels, with a tumour grown for 100 days
by the Fisher–Kolmogorov model from a Gaussian seed in white matter, with random D_w, ρ, r = D_w/D_g and
segmentation thresholds. What the inverse solver sees is what a scan shows at day 100: the tissue, the segmentation
at the two thresholds (edema, core) and a PET-like signal on the lesion. GliODIL (``toolkit.pde.odil``) optimises
the whole space-time field (48² × 33, four multigrid levels) with D_w, ρ, r, the seed centre, the two thresholds and
the PET scale, by L-BFGS (``optax.lbfgs``) from the authors' initial guess (a forward run with characteristic
parameters, stopped where it best matches the lesion).

Measured against the forward truth: the relative errors of D_w and ρ; the Dice score of the 10% tumour-cell
contour *outside the visible lesion* (the infiltration a radiotherapy target must cover); the RMSE of the final
field. Controls run in the same experiment: the initial guess itself (what the solver starts from) for D_w and ρ,
and for the Dice the standard clinical target: the visible lesion grown by a uniform margin (within the brain) to
the same area as GliODIL's 10% contour.

The quick truth is simulated with 4× finer time steps on the working grid; the full config also refines space 2×
(block-averaged back), which adds a tissue-discretisation discrepancy the inverse solver cannot represent.

  python -m experiments.gliodil --quick --out_dir=/tmp/gliodil
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from ml_collections import ConfigDict

from toolkit import experiment as xp
from toolkit.pde import odil
from toolkit.pde import tumour_growth as tg

PAPER = xp.Paper(
  "gliodil",
  "Individualizing Glioma Radiotherapy Planning by Optimization of Data and Physics-Informed Discrete Loss",
  "2312.05063",
)


def get_config(scale: str = "full") -> ConfigDict:
  if scale not in ("quick", "full"):
    raise ValueError(f"scale must be 'quick' or 'full', got {scale!r}")
  quick = scale == "quick"
  config = ConfigDict()
  config.num_patients = 2 if quick else 10
  config.shape = (48, 48)
  config.spacing = 2.0  # mm
  config.duration = 100.0  # days
  config.num_steps = 32
  config.refine = 1 if quick else 2  # spatial refinement of the forward truth
  config.time_refine = 4
  config.num_levels = 4  # multigrid levels of the unknown field (the authors use 4)
  config.num_iterations = 2000 if quick else 8000  # L-BFGS iterations
  # The initial guess's characteristic parameters (mid-range of the generator's draws).
  config.guess_d_white = 0.85
  config.guess_rho = 0.06
  config.guess_ratio = 20.0
  config.search_radius = 2
  config.use_pet = True
  return config


def validate_config(config: ConfigDict) -> None:
  for name in ("num_patients", "num_steps", "refine", "time_refine", "num_levels", "num_iterations"):
    if int(config[name]) < 1:
      raise xp.ConfigError(f"--config.{name} must be >= 1, got {config[name]}")
  if len(config.shape) not in (2, 3) or min(config.shape) < 16:
    raise xp.ConfigError(f"--config.shape must be 2-D or 3-D with >= 16 cells per axis, got {config.shape}")
  if not config.spacing > 0 or not config.duration > 0:
    raise xp.ConfigError("--config.spacing and --config.duration must be > 0")


def run_patient(i: int, config: ConfigDict, key: jax.Array, fit_fn) -> dict:
  start = time.perf_counter()
  p = tg.synthetic_patient(
    key,
    tuple(config.shape),
    spacing=config.spacing,
    duration=config.duration,
    num_steps=config.num_steps,
    refine=config.refine,
    time_refine=config.time_refine,
  )
  scan = odil.TumourScan(p.tissue, p.labels, p.pet if config.use_pet else None, config.duration, config.spacing)
  guess = odil.initial_guess(
    scan,
    config.num_steps,
    d_white=config.guess_d_white,
    rho=config.guess_rho,
    ratio=config.guess_ratio,
    search_radius=config.search_radius,
    num_levels=config.num_levels,
  )
  out = fit_fn(guess, scan)
  jax.block_until_ready(out)
  q = out.unknowns.params
  u_fit, u_true = np.asarray(out.field[-1]), np.asarray(p.field[-1])
  lesion = np.asarray(p.labels) > 0
  brain = np.asarray(p.tissue.white + p.tissue.grey) >= tg.TISSUE_THRESHOLD
  pred10, true10 = u_fit >= 0.1, u_true >= 0.1
  margin = tg.uniform_margin(lesion, int(pred10.sum()), spacing=config.spacing, mask=brain)
  return {
    "patient": i,
    "true_d_white": p.d_white,
    "true_rho": p.rho,
    "true_ratio": p.ratio,
    "d_white": float(q.d_white),
    "rho": float(q.rho),
    "ratio": float(q.ratio),
    "guess_d_white": float(guess.params.d_white),
    "guess_rho": float(guess.params.rho),
    "d_white_rel_error": abs(float(q.d_white) / p.d_white - 1),
    "rho_rel_error": abs(float(q.rho) / p.rho - 1),
    "guess_d_white_rel_error": abs(float(guess.params.d_white) / p.d_white - 1),
    "guess_rho_rel_error": abs(float(guess.params.rho) / p.rho - 1),
    "centre_error_mm": float(np.linalg.norm(np.asarray(q.centre) - p.centre)),
    "dice_odil": tg.dice(pred10 & ~lesion, true10 & ~lesion),
    "dice_margin": tg.dice(margin & ~lesion, true10 & ~lesion),
    "rmse_final": float(np.sqrt(np.mean((u_fit - u_true) ** 2))),
    "rmse_spacetime": float(jnp.sqrt(jnp.mean((out.field - p.field) ** 2))),
    "rmse_guess_final": float(np.sqrt(np.mean((np.asarray(odil.field_from_levels(guess.levels))[-1] - u_true) ** 2))),
    "loss_initial": float(out.losses[0]),
    "loss_final": float(out.loss),
    "seconds": time.perf_counter() - start,
    "_maps": {
      "white": np.asarray(p.tissue.white),
      "grey": np.asarray(p.tissue.grey),
      "u_true": u_true,
      "u_fit": u_fit,
      "lesion": lesion,
      "margin": margin,
    },
  }


def run(config: ConfigDict, ctx: xp.Context) -> dict[str, float]:
  keys = jax.random.split(ctx.key(), config.num_patients)

  @jax.jit
  def fit_fn(guess, scan):
    return odil.fit(guess, scan, optimizer=optax.lbfgs(), num_iterations=config.num_iterations)

  maps = {}

  def run_one(i, _):
    r = run_patient(i, config, keys[i], fit_fn)
    maps[i] = r.pop("_maps")
    return r

  def describe(r):
    return (
      f"D err {100 * r['d_white_rel_error']:.1f}%, ρ err {100 * r['rho_rel_error']:.1f}%, Dice {r['dice_odil']:.3f} "
      f"(margin {r['dice_margin']:.3f}), {r['seconds']:.1f} s"
    )

  results = xp.run_cases(ctx, list(range(config.num_patients)), run_one, describe)
  plot(results, maps, ctx)
  write_table(results, ctx)
  mean = lambda k: float(np.mean([r[k] for r in results]))
  worst = lambda k: float(np.max([r[k] for r in results]))
  return {
    "max_d_white_rel_error": worst("d_white_rel_error"),
    "max_rho_rel_error": worst("rho_rel_error"),
    "guess_max_d_white_rel_error": worst("guess_d_white_rel_error"),
    "guess_max_rho_rel_error": worst("guess_rho_rel_error"),
    "mean_dice_odil": mean("dice_odil"),
    "mean_dice_margin": mean("dice_margin"),
    "min_dice_gain_over_margin": float(np.min([r["dice_odil"] - r["dice_margin"] for r in results])),
    "mean_rmse_final": mean("rmse_final"),
    "mean_rmse_guess_final": mean("rmse_guess_final"),
    "mean_centre_error_mm": mean("centre_error_mm"),
    "max_patient_seconds": worst("seconds"),
  }


def plot(results, maps, ctx: xp.Context) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  n = len(maps)
  fig, axes = plt.subplots(n, 3, figsize=(12, 4 * n), squeeze=False)
  for row, (i, m) in zip(axes, sorted(maps.items())):
    r = next(r for r in results if r["patient"] == i)
    brain = m["white"] + 0.5 * m["grey"]
    row[0].imshow(m["u_true"].T, origin="lower", cmap="magma", vmin=0, vmax=1)
    row[0].contour(m["lesion"].T.astype(float), [0.5], colors="w", origin="lower")
    row[0].set_title(f"patient {i}: truth u(T), visible lesion (white)")
    row[1].imshow(m["u_fit"].T, origin="lower", cmap="magma", vmin=0, vmax=1)
    row[1].set_title(f"GliODIL u(T): D err {100 * r['d_white_rel_error']:.1f}%, ρ err {100 * r['rho_rel_error']:.1f}%")
    row[2].imshow(brain.T, origin="lower", cmap="gray")
    for field, color in ((m["u_true"], "lime"), (m["u_fit"], "red")):
      row[2].contour(field.T, [0.1], colors=color, origin="lower")
    row[2].contour(m["margin"].T.astype(float), [0.5], colors="cyan", origin="lower", linestyles="--")
    row[2].set_title(
      f"10% contours: truth (green), GliODIL (red, Dice {r['dice_odil']:.2f}),\n"
      f"uniform margin of equal area (cyan, Dice {r['dice_margin']:.2f})",
      fontsize=9,
    )
  fig.tight_layout()
  ctx.save_figure(fig, "patients")


def write_table(results, ctx: xp.Context) -> None:
  lines = [
    (
      "| patient | D_w true | D_w GliODIL (guess) | ρ true | ρ GliODIL (guess) | Dice@10% outside lesion: GliODIL | "
      "uniform margin | RMSE u(T) GliODIL (guess) | centre error mm | s |"
    ),
    "|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r in results:
    lines.append(
      f"| {r['patient']} | {r['true_d_white']:.3f} | {r['d_white']:.3f} ({r['guess_d_white']:.3f}) | "
      f"{r['true_rho']:.4f} | {r['rho']:.4f} ({r['guess_rho']:.4f}) | {r['dice_odil']:.3f} | {r['dice_margin']:.3f} | "
      f"{r['rmse_final']:.4f} ({r['rmse_guess_final']:.4f}) | {r['centre_error_mm']:.2f} | {r['seconds']:.1f} |"
    )
  ctx.write_text("table.md", "\n".join(lines))


_SYNTHETIC = "synthetic study: n = 50 per group, Dice at 10% cell concentration and RMSE against the ground truth"
CLAIMS = (
  xp.Claim(
    metric="max_d_white_rel_error",
    statement="GliODIL recovers the white-matter diffusion D_w from one scan: within 10% on every patient",
    paper_value=f"— (no per-parameter figure; {_SYNTHETIC})",
    comparison="<=",
    target=0.10,
  ),
  xp.Claim(
    metric="max_rho_rel_error",
    statement="... and the proliferation rate ρ within 10% on every patient",
    paper_value=f"— ({_SYNTHETIC})",
    comparison="<=",
    target=0.10,
  ),
  xp.Claim(
    metric="guess_max_d_white_rel_error",
    statement="control: the initial guess (forward run with characteristic parameters fitted to the lesion's "
    "extent) misses D_w by more than 10% — the recovery is the optimisation's, not the initialisation's",
    paper_value="—",
    comparison=">",
    target=0.10,
  ),
  xp.Claim(
    metric="min_dice_gain_over_margin",
    statement="GliODIL's 10% contour matches the true infiltration outside the visible lesion better than the "
    "standard uniform margin of the same area, on every patient (Dice gain > 0)",
    paper_value="real patients at equal RT volume (SourceData, 152 patients): recurrence coverage 67.8% vs 63.6% "
    "(standard 1.5 cm margin), enhancing-core recurrence 84.4% vs 82.4%",
    comparison=">",
    target=0.0,
  ),
)

EXPERIMENT = xp.Experiment("gliodil", PAPER, CLAIMS, get_config, run, validate_config)

if __name__ == "__main__":
  xp.append_xla_flags("--xla_cpu_multi_thread_eigen=false")
  xp.define_flags(EXPERIMENT)
  xp.main(EXPERIMENT)
