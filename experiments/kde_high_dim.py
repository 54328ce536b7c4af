r"""Kernel density estimators in large dimensions (Biroli & Mézard, arXiv 2408.05807): regimes and optimal bandwidth.

Gaussian data ``y_i ~ N(0, I_d)``, ``n = e^{αd}`` points, Gaussian kernel of bandwidth ``h``. For each ``α``:

1. **KL-optimal bandwidth.** The held-out log-likelihood of ``ρ̂_h`` on fresh points ``x ~ N(0, I)`` (minus it is the
   Monte Carlo ``KL(ρ ‖ ρ̂_h)`` up to the entropy of ρ) on a log grid of ``h``, refined by a parabola; compared with
   the paper's ``h_CLT(α)`` (claim: it lies below), with ``h_G(α)`` and with the leading-order optimum ``h_KL(α)``
   of :mod:`toolkit.stats.kde_theory`. Control: the same measurement in the classical regime (``d = 2``,
   ``n`` = a few thousand, so ``α = log(n)/2`` is large), where the optimum must lie *above* ``h_CLT(α)``.
2. **Measured thresholds.** The stable index of the kernel terms at the top of the database, read from the two
   largest terms ``z_(1) ≥ z_(2)`` at each point: for terms whose tail is a power ``t^{-μ}``, ``log(z_(1)/z_(2))``
   is exponential with mean ``1/μ``, so ``μ̂(h) = 1/E[log(z_(1)/z_(2))]``. The measured ``ĥ_G`` and ``ĥ_CLT`` are
   where ``μ̂`` crosses 1 (a few points dominate) and 2 (the CLT holds). Since ``log(z_(1)/z_(2)) =
   (D_(2) − D_(1))/(2h²)`` with ``D`` the squared distances, ``μ̂ ∝ h²`` exactly and ``ĥ_CLT = √2 ĥ_G`` by
   construction: the two measured thresholds are one measurement. A second, independent reading of ``ĥ_G`` (reported,
   not claimed) fits the Poisson–Dirichlet law ``E[Σ w_i²] = 1 − (h/h_G)²`` to the participation below ``h_G``.
   Control: the threshold that a naive annealed-variance argument gives (``n = E[z²]/E[z]²``).
3. **The estimate at a fixed point.** ``ρ̂_h(x)/E ρ̂_h(x)`` over many databases at a fixed ``x``, above ``h_CLT``,
   between the thresholds and below ``h_G`` (figure; its quantile skewness is a Gaussianity statistic).

Finite size: the thresholds are asymptotic (``d → ∞`` at fixed α). At finite ``d`` the number of data points at the
relevant distances carries a prefactor polynomial in ``d``, which shifts the effective α by ``O(log(d)/d)``; the
measured thresholds therefore sit above the formulas by a relative amount that decays like ``1/log n`` (about
10% at ``log n ≈ 11``). The quick configuration uses ``n ≈ 6·10⁴`` (``log n = 11``), the full one ``n ≈ 4·10⁵``.

  python -m experiments.kde_high_dim --quick --out_dir=/tmp/kde_high_dim
"""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from toolkit import experiment as xp
from toolkit.stats import kde, kde_theory

PAPER = xp.Paper("kde", "Kernel Density Estimators in Large Dimensions", "2408.05807")


def get_config(scale: str = "full") -> ConfigDict:
  if scale not in ("quick", "full"):
    raise ValueError(f"scale must be 'quick' or 'full', got {scale!r}")
  quick = scale == "quick"
  config = ConfigDict()
  config.alphas = (0.1, 0.2, 0.3) if quick else (0.1, 0.15, 0.2, 0.3, 0.5)
  config.log_n = 11.0 if quick else 13.0  # d = round(log_n / α), n = round(e^{α d})
  config.num_threshold_points = 512 if quick else 1024  # points x per database for the top-two ratio
  config.num_threshold_databases = 2 if quick else 4
  config.num_heldout = 192 if quick else 1000  # held-out points of the KL
  config.num_bandwidths = 32 if quick else 60  # log grid from 0.4 h_G to 1.6 h_CLT
  config.num_participation_bandwidths = 14 if quick else 30  # grid of the participation curve
  config.chunk_size = 1024
  # The estimate at a fixed point over many databases (smaller n, so that many databases fit).
  config.fixed_alpha = 0.2
  config.fixed_log_n = 8.0
  config.num_fixed_points = 4
  config.num_databases = 200 if quick else 1000
  # Control: the classical regime (small d, n fixed).
  config.classical_dim = 2
  config.classical_n = 3000
  return config


def validate_config(config: ConfigDict) -> None:
  if not config.alphas or any(not a > 0 for a in config.alphas):
    raise xp.ConfigError(f"--config.alphas must be a non-empty tuple of values > 0, got {config.alphas}")
  if not config.log_n >= 2 or not config.fixed_log_n >= 2:
    raise xp.ConfigError(f"--config.log_n and fixed_log_n must be >= 2, got {config.log_n}, {config.fixed_log_n}")
  for name in (
    "num_threshold_points",
    "num_threshold_databases",
    "num_heldout",
    "num_bandwidths",
    "num_participation_bandwidths",
    "num_fixed_points",
    "num_databases",
    "classical_dim",
    "classical_n",
  ):
    if config[name] < 1:
      raise xp.ConfigError(f"--config.{name} must be >= 1, got {config[name]}")
  if config.num_bandwidths < 3 or config.num_databases < 20:
    raise xp.ConfigError("--config.num_bandwidths must be >= 3 and --config.num_databases >= 20")


def sizes(alpha: float, log_n: float) -> tuple[int, int]:
  d = max(1, round(log_n / alpha))
  return d, round(math.exp(alpha * d))


def _gaussian_log_density(points: jax.Array) -> jax.Array:
  d = points.shape[1]
  return -0.5 * jnp.sum(points**2, axis=1) - 0.5 * d * jnp.log(2.0 * jnp.pi)


def kl_optimum(key, d: int, n: int, num_heldout: int, bandwidths, chunk_size: int) -> dict:
  k_data, k_x = jax.random.split(key)
  data = jax.random.normal(k_data, (n, d))
  x = jax.random.normal(k_x, (num_heldout, d))
  search = kde.select_bandwidth(x, data, jnp.asarray(bandwidths), chunk_size=max(64, chunk_size // 4))
  # KL(ρ ‖ ρ̂_h) per dimension = (E log ρ − mean log ρ̂_h) / d, with E log ρ estimated on the same points.
  entropy_term = float(jnp.mean(_gaussian_log_density(x)))
  return {
    "h_kl_measured": float(search.refined_bandwidth),
    "h_kl_grid": float(search.bandwidth),
    "kl_per_dim": ((entropy_term - np.asarray(search.mean_log_likelihood)) / d).tolist(),
  }


# vmap over h: the distances do not depend on h, so they are computed once per chunk for the whole grid.
_stats_over_h = jax.jit(jax.vmap(kde.kernel_weight_stats, in_axes=(None, None, 0)))


def threshold_measurements(key, alpha: float, d: int, n: int, config: ConfigDict) -> dict:
  hg = float(kde_theory.h_glass(alpha))
  hs = hg * np.linspace(0.5, 1.25, config.num_participation_bandwidths)
  ratios, participation = [], []
  for b in range(config.num_threshold_databases):
    k_data, k_x = jax.random.split(jax.random.fold_in(key, b))
    data = jax.random.normal(k_data, (n, d))
    x = jax.random.normal(k_x, (config.num_threshold_points, d))
    stats = _stats_over_h(x, data, jnp.asarray(hs))
    # log(z1/z2) = (D2 − D1)/(2h²) at every h: read it at the first one.
    ratios.append(np.asarray(stats.log_top_ratio[0]) * hs[0] ** 2)
    participation.append(np.asarray(stats.participation))  # (num_h, m)
  gap = float(np.mean(np.concatenate(ratios)))  # E[(D2 − D1)/2]
  # μ̂(h) = h² / gap: crosses 1 at ĥ_G = √gap and 2 at ĥ_CLT = √(2 gap).
  h_g_top = math.sqrt(gap)
  y2 = np.mean(np.stack(participation), axis=(0, 2))  # (num_h,)
  # Poisson–Dirichlet reading: 1 − Y2 = (h/h_G)² on the points where 0.2 < Y2 < 0.8 (least squares through 0).
  sel = (y2 > 0.2) & (y2 < 0.8)
  if sel.sum() >= 2:
    c = float(np.sum((1 - y2[sel]) * hs[sel] ** 2) / np.sum(hs[sel] ** 4))
    h_g_participation = 1.0 / math.sqrt(c)
  else:
    h_g_participation = float("nan")
  return {
    "h_g_measured": h_g_top,
    "h_clt_measured": math.sqrt(2.0) * h_g_top,
    "h_g_participation": h_g_participation,
    "participation_bandwidths": hs.tolist(),
    "participation": y2.tolist(),
  }


def run_alpha(key, alpha: float, config: ConfigDict) -> dict:
  d, n = sizes(alpha, config.log_n)
  hg, hc = float(kde_theory.h_glass(alpha)), float(kde_theory.h_clt(alpha))
  start = time.perf_counter()
  k_kl, k_thr = jax.random.split(key)
  bandwidths = np.geomspace(0.4 * hg, 1.6 * hc, config.num_bandwidths)
  kl = kl_optimum(k_kl, d, n, config.num_heldout, bandwidths, config.chunk_size)
  thr = threshold_measurements(k_thr, alpha, d, n, config)
  naive = float(kde_theory.naive_clt_bandwidth(alpha))
  return {
    "alpha": alpha,
    "dim": d,
    "n": n,
    "h_g": hg,
    "h_clt": hc,
    "h_kl_theory": float(kde_theory.h_kl(alpha)),
    "h_naive": naive,
    "bandwidths": bandwidths.tolist(),
    "kl_theory_per_dim": np.asarray(kde_theory.asymptotic_kl_per_dim(bandwidths, alpha)).tolist(),
    **kl,
    **thr,
    "kl_opt_over_h_clt": kl["h_kl_measured"] / hc,
    "h_g_rel_error": thr["h_g_measured"] / hg - 1.0,
    "h_clt_rel_error": thr["h_clt_measured"] / hc - 1.0,
    "naive_rel_error": thr["h_clt_measured"] / naive - 1.0,
    "seconds": time.perf_counter() - start,
  }


def fixed_point_distribution(key, config: ConfigDict) -> dict:
  """``ρ̂_h(x) / E ρ̂_h(x)`` over ``num_databases`` databases at fixed points, on a grid of ``h``."""
  alpha = config.fixed_alpha
  d, n = sizes(alpha, config.fixed_log_n)
  hg, hc = float(kde_theory.h_glass(alpha)), float(kde_theory.h_clt(alpha))
  hs = jnp.asarray(np.geomspace(0.6 * hg, 2.0 * hc, 16))
  shown = jnp.asarray([0.75 * hg, 0.5 * (hg + hc), 1.6 * hc])
  k_x, k_db = jax.random.split(key)
  x = jax.random.normal(k_x, (config.num_fixed_points, d))
  log_mean = jax.vmap(lambda h: kde_theory.log_mean_density(x, h))

  @jax.jit
  def one_database(k):
    data = jax.random.normal(k, (n, d))
    grid = jax.vmap(lambda h: kde.log_density(x, data, h, chunk_size=config.chunk_size))(hs) - log_mean(hs)
    extra = jax.vmap(lambda h: kde.log_density(x, data, h, chunk_size=config.chunk_size))(shown) - log_mean(shown)
    return grid, extra

  grid, extra = jax.lax.map(one_database, jax.random.split(k_db, config.num_databases))
  ratio = np.exp(np.asarray(grid, dtype=np.float64))  # (B, k, m): ρ̂/Eρ̂
  q10, q50, q90 = np.quantile(ratio, [0.1, 0.5, 0.9], axis=0)
  bowley = np.mean((q90 + q10 - 2 * q50) / (q90 - q10), axis=-1)  # (k,)
  return {
    "alpha": alpha,
    "dim": d,
    "n": n,
    "h_g": hg,
    "h_clt": hc,
    "bandwidths": np.asarray(hs).tolist(),
    "bowley_skewness": bowley.tolist(),
    "shown_bandwidths": np.asarray(shown).tolist(),
    "shown_log_ratio": np.asarray(extra)[:, :, 0].T.tolist(),  # (3, B) at the first point
  }


def classical_control(key, config: ConfigDict) -> dict:
  d, n = config.classical_dim, config.classical_n
  alpha = math.log(n) / d
  hc = float(kde_theory.h_clt(alpha))
  bandwidths = np.geomspace(0.01, 2.0, config.num_bandwidths)
  kl = kl_optimum(key, d, n, 2000, bandwidths, config.chunk_size)
  return {"alpha": alpha, "dim": d, "n": n, "h_clt": hc, **kl, "kl_opt_over_h_clt": kl["h_kl_measured"] / hc}


def run(config: ConfigDict, ctx: xp.Context) -> dict[str, float]:
  alphas = [float(a) for a in config.alphas]
  key_alpha, key_fixed, key_classical = jax.random.split(ctx.key(), 3)
  keys = jax.random.split(key_alpha, len(alphas))

  def describe(r):
    return (
      f"α={r['alpha']:g} d={r['dim']} n={r['n']}: ĥ_KL={r['h_kl_measured']:.3f} (h_CLT {r['h_clt']:.3f}), "
      f"ĥ_G={r['h_g_measured']:.3f} (h_G {r['h_g']:.3f}), {r['seconds']:.1f} s"
    )

  results = xp.run_cases(ctx, alphas, lambda i, a: run_alpha(keys[i], a, config), describe)
  fixed = fixed_point_distribution(key_fixed, config)
  classical = classical_control(key_classical, config)
  plot(results, fixed, classical, ctx)
  write_table(results, classical, ctx)

  measured: dict[str, float] = {}
  for r in results:
    tag = f"alpha{r['alpha']:g}"
    for field in ("h_kl_measured", "h_g_measured", "h_clt_measured", "h_g_participation", "kl_opt_over_h_clt"):
      measured[f"{tag}_{field}"] = r[field]
    measured[f"{tag}_h_kl_over_h_g"] = r["h_kl_measured"] / r["h_g"]
  measured["max_kl_opt_over_h_clt"] = max(r["kl_opt_over_h_clt"] for r in results)
  measured["control_classical_kl_opt_over_h_clt"] = classical["kl_opt_over_h_clt"]
  measured["max_threshold_rel_error"] = max(max(abs(r["h_g_rel_error"]), abs(r["h_clt_rel_error"])) for r in results)
  measured["max_threshold_rel_error_participation"] = max(abs(r["h_g_participation"] / r["h_g"] - 1) for r in results)
  measured["control_naive_threshold_min_rel_error"] = min(abs(r["naive_rel_error"]) for r in results)
  b = np.asarray(fixed["bowley_skewness"])
  hs = np.asarray(fixed["bandwidths"])
  measured["fixed_point_bowley_above_h_clt"] = float(b[hs >= 1.5 * fixed["h_clt"]].mean())
  measured["fixed_point_bowley_below_h_g"] = float(b[hs <= fixed["h_g"]].mean())
  return measured


def _plt():
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def plot(results: list[dict], fixed: dict, classical: dict, ctx: xp.Context) -> None:
  plt = _plt()
  fig, axes = plt.subplots(2, 2, figsize=(12, 9))
  ax = axes[0, 0]
  for r in results:
    (line,) = ax.plot(r["bandwidths"], r["kl_per_dim"], label=f"α={r['alpha']:g} (d={r['dim']}) measured")
    ax.plot(r["bandwidths"], r["kl_theory_per_dim"], ls=":", color=line.get_color())
    ax.axvline(r["h_clt"], color=line.get_color(), ls="--", lw=0.8)
    ax.axvline(r["h_g"], color=line.get_color(), ls="-.", lw=0.8)
    ax.plot([r["h_kl_measured"]], [np.min(r["kl_per_dim"])], "o", color=line.get_color())
  ax.set_xscale("log")
  ax.set_xlabel("bandwidth h")
  ax.set_ylabel("KL(ρ‖ρ̂_h)/d (nats)")
  ax.set_title("held-out KL (solid), leading order (dotted); h_CLT --, h_G -.")
  ax.legend(fontsize=7)

  ax = axes[0, 1]
  for r in results:
    hs = np.asarray(r["participation_bandwidths"]) / r["h_g"]
    (line,) = ax.plot(hs, r["participation"], "o-", ms=3, label=f"α={r['alpha']:g}: E Σ w² (measured)")
  grid = np.linspace(0.5, 1.25, 100)
  ax.plot(grid, np.clip(1 - grid**2, 0, None), "k:", label="1 − (h/h_G)² (d → ∞)")
  ax.axvline(1.0, color="k", lw=0.8)
  ax.set_xlabel("h / h_G(α)")
  ax.set_ylabel("participation Σ_i w_i²")
  ax.set_title("a few points carry the sum below h_G")
  ax.legend(fontsize=7)

  ax = axes[1, 0]
  names = ["below h_G", "between", "above h_CLT"]
  for name, h, vals in zip(names, fixed["shown_bandwidths"], fixed["shown_log_ratio"]):
    ax.hist(np.asarray(vals) / np.log(10), bins=40, alpha=0.5, density=True, label=f"h={h:.2f} ({name})")
  ax.set_xlabel("log10 ρ̂_h(x) / E ρ̂_h(x) over databases, fixed x")
  ax.set_title(f"α={fixed['alpha']:g}, d={fixed['dim']}, n={fixed['n']}")
  ax.legend(fontsize=7)

  ax = axes[1, 1]
  ax.plot(fixed["bandwidths"], fixed["bowley_skewness"], "o-")
  ax.axvline(fixed["h_clt"], ls="--", color="k", lw=0.8, label="h_CLT")
  ax.axvline(fixed["h_g"], ls="-.", color="k", lw=0.8, label="h_G")
  ax.axhline(0.0, color="gray", lw=0.5)
  ax.set_xscale("log")
  ax.set_xlabel("bandwidth h")
  ax.set_ylabel("quantile skewness of ρ̂_h(x) over databases")
  ax.set_title(
    f"Gaussianity at a fixed point (0 for a Gaussian); classical control ĥ_KL/h_CLT = "
    f"{classical['kl_opt_over_h_clt']:.1f}",
    fontsize=9,
  )
  ax.legend(fontsize=7)
  fig.tight_layout()
  ctx.save_figure(fig, "kde_regimes")


def write_table(results: list[dict], classical: dict, ctx: xp.Context) -> None:
  lines = [
    (
      "| α | d | n | h_G | ĥ_G (top two) | ĥ_G (participation) | h_CLT | ĥ_CLT | naive h | ĥ_KL "
      "| h_KL (leading order) | ĥ_KL / h_CLT | s |"
    ),
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r in results:
    lines.append(
      f"| {r['alpha']:g} | {r['dim']} | {r['n']} | {r['h_g']:.3f} | {r['h_g_measured']:.3f} "
      f"({r['h_g_rel_error']:+.1%}) | {r['h_g_participation']:.3f} | {r['h_clt']:.3f} | {r['h_clt_measured']:.3f} "
      f"| {r['h_naive']:.3f} | {r['h_kl_measured']:.3f} | {r['h_kl_theory']:.3f} | {r['kl_opt_over_h_clt']:.3f} "
      f"| {r['seconds']:.1f} |"
    )
  lines.append(
    f"| control: classical regime, α={classical['alpha']:.2f} | {classical['dim']} | {classical['n']} | | | | "
    f"{classical['h_clt']:.4f} | | | {classical['h_kl_measured']:.3f} | | {classical['kl_opt_over_h_clt']:.1f} | |"
  )
  ctx.write_text("table.md", "\n".join(lines))


CLAIMS = (
  xp.Claim(
    metric="max_kl_opt_over_h_clt",
    statement="the KL-optimal (held-out likelihood) bandwidth lies below h_CLT(α), outside the classical CLT regime, "
    "at every α tried (Gaussian data, n = e^{αd})",
    paper_value="abstract: 'the optimal bandwidth threshold based on Kullback-Leibler divergence lies in the new "
    "statistical regime identified in this paper' (below h_CLT)",
    comparison="<",
    target=1.0,
  ),
  xp.Claim(
    metric="control_classical_kl_opt_over_h_clt",
    statement="control: in the classical regime (d = 2, n = 3000) the same measurement lands above h_CLT(α), so the "
    "test above can fail",
    paper_value="classical fixed-d KDE: optimal h ~ n^{-1/(d+4)}, inside the CLT regime",
    comparison=">=",
    target=1.0,
  ),
  xp.Claim(
    metric="max_threshold_rel_error",
    statement="the measured thresholds ĥ_G, ĥ_CLT (where the stable index of the top kernel terms crosses 1 and 2) "
    "agree with h_G(α), h_CLT(α) within 10% at every α",
    paper_value="the thresholds h_G(α) < h_CLT(α) of the Gaussian-data analysis (asymptotic, d → ∞); our "
    "derivation: I_1(h_G) = α, I_2(h_CLT) = α",
    comparison="<=",
    target=0.10,
  ),
  xp.Claim(
    metric="control_naive_threshold_min_rel_error",
    statement="control: the naive annealed-variance threshold (n = E[z²]/E[z]²) misses the measured ĥ_CLT by more "
    "than 10% at every α",
    paper_value="the CLT breaks down where E[z²] is carried by points absent from the database, not where the "
    "annealed variance reaches the mean squared",
    comparison=">",
    target=0.10,
  ),
)

EXPERIMENT = xp.Experiment("kde_high_dim", PAPER, CLAIMS, get_config, run, validate_config)

if __name__ == "__main__":
  xp.define_flags(EXPERIMENT)
  xp.main(EXPERIMENT)
