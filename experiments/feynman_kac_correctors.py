r"""Feynman-Kac Correctors in Diffusion (Skreta et al., ICML 2025, arXiv 2503.02819) on 2-D Gaussian mixtures.

Diffusion "models" (VP SDE, b0 = 0.1, b1 = 20) of labelled 2-D Gaussian mixtures, with either (i) the exact scores
of the noised mixtures or (ii) one small class-conditional score network (flax MLP, denoising score matching)
trained on the same mixtures. Targets built from them at inference time, each with an exact oracle at ``t_min``:

* annealing ``q^β``, β = 2, ½ and 10 (the paper's Figure 1), of ``A = ½N((-2,0), ½I) + ½N((2,0), 0.05I)``;
* the product ``q^{P1} q^{P2}`` of two experts, ``P1 = ½N((-1,0), 0.3I) + ½N((1,0), 0.3I)`` and
  ``P2 = N((½,½), I)``;
* guidance (the geometric average ``q_u^{1-w} q_c^w``), w = 2, 3, 4, of ``U = N(0, I)`` and ``C = N((1,1), ¼I)``.

Each is sampled by the same SDE with ``∇L = Σ β_i s_i`` (1000 Euler–Maruyama steps to ``t_min = 1e-3``):
naively (no weights: the annealed score, the summed scores, the CFG score), with the Feynman-Kac weights alone
(importance sampling), and with the weights and systematic resampling at every step (the authors' FKC) or when
the ESS < N/2. R independent runs per setting are pooled. Oracles: a 2-D quadrature grid gives the target's mean,
covariance and ``log Z = log ∫ Π (q_{t_min}^i)^{β_i}``, and draws from it for the energy distance; the exact
mixture powers, products and Gaussian geometric means cross-check the grid. Metrics: the relative errors of the
first two moments ``E[x]``, ``E[xxᵀ]`` (and of the covariance, reported), the energy distance to exact draws, and
``log Z``. The trained network (ε-prediction MLP, 3 × 128 SiLU, one-hot class input, 8000 Adam steps at quick
scale, half of the training times log-uniform so that small-t scores, which the weights need, are learned) is
judged against the same exact targets, so its own score error counts against it.

The paper's Figure 1 settings, annealing to β = 10 and ``product_disjoint``, have a claim of their own (FKC closer
to the exact target than naive in both). ``product_disjoint`` is the authors' toy product of the top two and the
bottom two of four modes (±1.5, ±1.5) (std 0.4, weights (0.2, 0.8) and (0.7, 0.3)). Its product
lives where neither expert has mass (log Z = -15.7): the naive product only misweights its two modes slightly
(moment error ≈ 4%), while the weights, which lose 13 nats along the way, are noisy: FKC's log Z is right there
(within 0.1) but at quick scale its mode weights are not (moment error 4–9% across seeds) and its energy distance
was above the naive one at seeds 0, 1 and 2 (by 1.1–3.7×); at full scale (8 runs × 8192 particles) it was below
(0.0005 vs 0.0034). With the trained network FKC fails there (distance 0.62 vs 0.008 at full scale): the product
lives where neither expert saw data, and the weights amplify the network's extrapolation error.

The pieces come from the toolkit: the sampler ``toolkit.smc.fkc``, the mixtures ``toolkit.stats.gmm``, the grid
oracle ``toolkit.stats.quadrature``, the metrics ``toolkit.stats.metrics`` and the score network
``toolkit.models.score_net``; this binary composes them.

  python -m experiments.feynman_kac_correctors --quick --out_dir=runs/fkc_quick
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization
from ml_collections import ConfigDict

from toolkit import experiment as xp
from toolkit.models import score_net
from toolkit.smc import fkc, resampling
from toolkit.stats import gmm, metrics, quadrature

PAPER = xp.Paper(
  "fkc",
  "Feynman-Kac Correctors in Diffusion: Annealing, Guidance, and Product of Experts",
  "2503.02819",
)

# The labelled data: weights, means, isotropic variances. One class per "pretrained model".
DATA = {
  "A": ((0.5, 0.5), ((-2.0, 0.0), (2.0, 0.0)), (0.5, 0.05)),
  "P1": ((0.5, 0.5), ((-1.0, 0.0), (1.0, 0.0)), (0.3, 0.3)),
  "P2": ((1.0,), ((0.5, 0.5),), (1.0,)),
  "U": ((1.0,), ((0.0, 0.0),), (1.0,)),
  "C": ((1.0,), ((1.0, 1.0),), (0.25,)),
  # Experts with (nearly) disjoint supports: the authors' toy product (top two / bottom two of four modes), with
  # asymmetric weights.
  "D1": ((0.2, 0.8), ((-1.5, 1.5), (1.5, 1.5)), (0.16, 0.16)),
  "D2": ((0.7, 0.3), ((-1.5, -1.5), (1.5, -1.5)), (0.16, 0.16)),
}
# The classes of the trained network: one model per data set.
CLASSES = tuple(DATA)
# Every target is Π_i q_i^{β_i} over two models (annealing gives the second model β = 0), so one compiled sampler
# serves every setting.
SETTINGS = {
  "anneal_beta2": (("A", "A"), (2.0, 0.0)),
  "anneal_beta0.5": (("A", "A"), (0.5, 0.0)),
  "anneal_beta10": (("A", "A"), (10.0, 0.0)),
  "product": (("P1", "P2"), (1.0, 1.0)),
  "product_disjoint": (("D1", "D2"), (1.0, 1.0)),
  "cfg_w2": (("U", "C"), (-1.0, 2.0)),
  "cfg_w3": (("U", "C"), (-2.0, 3.0)),
  "cfg_w4": (("U", "C"), (-3.0, 4.0)),
}
# Resampling threshold and whether the weights are used: the naive sampler, FKC importance weights only, FKC with
# systematic resampling at every step (the authors), and with ESS-triggered resampling.
VARIANTS = {
  "naive": (0.0, False),
  "fkc_is": (0.0, True),
  "fkc": (1.0, True),
  "fkc_ess": (0.5, True),
}
# The paper's Figure 1 settings, judged by a claim of their own: annealing to β = 10, and the authors' product of
# disjoint experts. With disjoint experts the naive product is already close (it only misweights the two modes
# slightly) while the weights, which must lose 13 nats of mass along the way (log Z = -15.7), are noisy; FKC's
# distance is then not reliably below the naive one (see the module docstring). The other claims leave them out.
FIGURE1_SETTINGS = ("anneal_beta10", "product_disjoint")
EXTRA_SETTINGS = FIGURE1_SETTINGS


def get_config(scale: str = "full") -> ConfigDict:
  if scale not in ("quick", "full"):
    raise ValueError(f"scale must be 'quick' or 'full', got {scale!r}")
  quick = scale == "quick"
  config = ConfigDict()
  config.settings = tuple(SETTINGS)
  config.variants = tuple(VARIANTS)
  config.num_particles = 4096 if quick else 8192
  config.num_seeds = 4 if quick else 8  # independent SMC runs per setting (vmapped); moments are pooled
  config.num_steps = 1000  # the authors' dt = 1e-3
  config.t_min = 1e-3
  config.beta_min = 0.1
  config.beta_max = 20.0
  config.num_eval = 4096  # points per side of the energy distance
  config.num_grid_points = 801  # per axis
  config.grid_half_width = 7.0
  # The trained class-conditional score network, sampled on fewer settings and particles at quick scale.
  config.trained = ConfigDict(
    {
      "settings": ("anneal_beta2", "product", "cfg_w3") if quick else tuple(SETTINGS),
      "variants": ("naive", "fkc"),
      "num_particles": 2048 if quick else 8192,
      "num_seeds": 2 if quick else 8,
      "hidden": 128,
      "depth": 3,
      "num_train_steps": 8000 if quick else 20_000,
      "batch_size": 512,
      "learning_rate": 2e-3,
    }
  )
  return config


def validate_config(config: ConfigDict) -> None:
  for field, known in (("settings", SETTINGS), ("variants", VARIANTS)):
    for name in config[field]:
      if name not in known:
        raise xp.ConfigError(f"--config.{field}: unknown {field[:-1]} {name!r}; known: {sorted(known)}")
  for field, known in (("trained.settings", SETTINGS), ("trained.variants", VARIANTS)):
    for name in config.trained[field.split(".")[1]]:
      if name not in known:
        raise xp.ConfigError(f"--config.{field}: unknown {field.split('.')[1][:-1]} {name!r}; known: {sorted(known)}")
  for field, variants in (
    ("variants", config.variants),
    ("trained.variants", config.trained.variants),
  ):
    if "naive" not in variants or "fkc" not in variants:
      raise xp.ConfigError(f"--config.{field} must include 'naive' and 'fkc' (the claims compare them)")
  if not config.settings:
    raise xp.ConfigError("--config.settings must not be empty")
  for name in ("num_particles", "num_seeds", "num_steps", "num_eval", "num_grid_points"):
    if config[name] < 2:
      raise xp.ConfigError(f"--config.{name} must be >= 2, got {config[name]}")
  if not 0.0 < config.t_min < 1.0:
    raise xp.ConfigError(f"--config.t_min must be in (0, 1), got {config.t_min}")
  for name in ("num_particles", "num_seeds", "hidden", "depth", "num_train_steps", "batch_size"):
    if config.trained[name] < 1:
      raise xp.ConfigError(f"--config.trained.{name} must be >= 1, got {config.trained[name]}")


def schedule_of(config: ConfigDict) -> fkc.VPSchedule:
  return fkc.VPSchedule(float(config.beta_min), float(config.beta_max))


def mixture(name: str) -> gmm.GaussianMixture:
  return gmm.gaussian_mixture(*DATA[name])


def _stack(mixtures):
  """Pads mixtures to the largest number of components of ``DATA`` (zero-weight copies) and stacks them, so every
  setting has the same shapes and one compilation of the sampler serves them all."""
  k = max(len(w) for w, _, _ in DATA.values())
  return jax.tree.map(lambda *a: jnp.stack(a), *[gmm.pad(m, k) for m in mixtures])


# ----------------------------------------------------------------------------------------------------------------
# Oracles: a quadrature grid on [-L, L]² (toolkit.stats.quadrature), cross-checked by the closed forms.


def target_oracle(setting: str, config: ConfigDict) -> quadrature.GridOracle:
  """The grid oracle of the setting's target ``Π_i (q_{t_min}^i)^{β_i}``."""
  names, betas = SETTINGS[setting]
  schedule = schedule_of(config)
  noised = [fkc.noise_gmm(mixture(n), schedule, config.t_min) for n in names]

  def log_density(x):
    return sum(b * gmm.log_density(m, x) for m, b in zip(noised, betas) if b != 0.0)

  return quadrature.grid_oracle(log_density, config.grid_half_width, config.num_grid_points)


# ----------------------------------------------------------------------------------------------------------------
# The trained class-conditional score model.


def make_net(config: ConfigDict) -> score_net.ScoreNet:
  return score_net.ScoreNet(config.trained.hidden, config.trained.depth, len(CLASSES))


def train_score_net(key, config: ConfigDict) -> score_net.ScoreNetTraining:
  """Denoising score matching on all classes at once (``toolkit.models.score_net.train``), Adam with cosine decay."""
  tc = config.trained
  net = make_net(config)
  mixtures = _stack([mixture(c) for c in CLASSES])

  def sample_data(k, labels):  # one draw from the mixture of each label
    return jax.vmap(lambda kk, c: gmm.sample(kk, jax.tree.map(lambda a: a[c], mixtures), 1)[0])(
      jax.random.split(k, labels.shape[0]), labels
    )

  k_init, k_train = jax.random.split(key)
  params = score_net.init_params(k_init, net, 2)
  opt = optax.adam(optax.cosine_decay_schedule(tc.learning_rate, tc.num_train_steps, 0.05))
  return score_net.train(
    k_train,
    params,
    net,
    opt,
    sample_data,
    schedule_of(config),
    num_steps=tc.num_train_steps,
    batch_size=tc.batch_size,
    t_min=config.t_min,
  )


# ----------------------------------------------------------------------------------------------------------------
# Sampling one setting with one variant: R independent runs, vmapped.


def make_runner(config: ConfigDict, variant: str, score_model: str, net=None):
  """A jitted ``run(key, models, betas) -> FKCOutput`` (leading axis R) for either kind of score model.

  ``models`` is a stacked pair of mixtures (exact scores) or of class labels (trained network): traced, so one
  compilation serves every setting.
  """
  threshold, reweight = VARIANTS[variant]
  schedule = schedule_of(config)
  sub = config.trained if score_model == "trained" else config
  n, r = sub.num_particles, sub.num_seeds

  def run(key, models, betas, params=None):
    if score_model == "exact":
      score_fns = [fkc.noised_gmm_score_fn(jax.tree.map(lambda a, i=i: a[i], models), schedule) for i in range(2)]
    else:
      score_fns = [score_net.score_fn(net, params, schedule, models[i]) for i in range(2)]
    terms = fkc.product_of_powers(score_fns, betas, schedule)

    def one(k):
      k_start, k_run = jax.random.split(k)
      start = fkc.gaussian_start(k_start, n, 2, jnp.sum(betas))
      return fkc.sample(
        k_run,
        start.particles,
        terms,
        schedule,
        num_steps=config.num_steps,
        t_min=config.t_min,
        ess_threshold=threshold,
        reweight=reweight,
        initial_log_normalizer=start.log_normalizer,
      )

    return jax.vmap(one)(jax.random.split(key, r))

  return jax.jit(run)


def pooled_sample(key, out: fkc.FKCOutput, num_samples: int) -> jax.Array:
  """``num_samples`` equally weighted points from the R runs pooled, each run's weights normalised to 1/R."""
  r, n = out.log_weights.shape
  log_w = jax.vmap(resampling.normalize_log_weights)(out.log_weights) - jnp.log(r)
  idx = resampling.resample_log(key, log_w.reshape(-1), num_samples, resampling.systematic)
  return jax.random.permutation(key, out.particles.reshape(r * n, -1)[idx])


def evaluate(out: fkc.FKCOutput, oracle: quadrature.GridOracle, key, config: ConfigDict) -> dict:
  """Moments and energy distance of the R runs pooled, and the log Z estimates."""
  means, covs = jax.vmap(metrics.weighted_moments)(out.particles, out.log_weights)
  mean, cov = np.mean(np.asarray(means, np.float64), 0), np.mean(np.asarray(covs, np.float64), 0)
  k_res, k_ref = jax.random.split(key)
  x = pooled_sample(k_res, out, config.num_eval)
  y = quadrature.grid_sample(k_ref, oracle, config.num_eval)
  log_z = np.asarray(out.log_normalizer, np.float64)
  shift = log_z.max()
  n = out.log_weights.shape[1]
  return {
    **metrics.moment_errors(mean, cov, oracle.mean, oracle.cov),
    "mean": mean.tolist(),
    "cov": cov.tolist(),
    "distance": float(metrics.energy_distance(x, y)),
    "log_z_runs": log_z.tolist(),
    # The log of the mean of the R estimates of Z: itself an unbiased estimate of Z, from R·N particles.
    "log_z": float(shift + np.log(np.mean(np.exp(log_z - shift)))),
    "final_ess_fraction": float(np.mean(np.asarray(jax.vmap(resampling.ess)(out.log_weights))) / n),
    "num_resampled": float(np.mean(np.asarray(out.resampled).sum(1))),
    "min_ess_fraction": float(np.min(np.asarray(out.ess)) / n),
  }


def distance_floor(oracle: quadrature.GridOracle, key, config: ConfigDict) -> float:
  """The distance between two independent exact samples of the same size: the metric's noise floor."""
  k1, k2 = jax.random.split(key)
  return float(
    metrics.energy_distance(
      quadrature.grid_sample(k1, oracle, config.num_eval),
      quadrature.grid_sample(k2, oracle, config.num_eval),
    )
  )


def closed_form_log_z(setting: str, config: ConfigDict) -> float | None:
  """``log Z`` by the exact mixture power / product / Gaussian geometric mean, where one applies (β = ½ has none)."""
  names, betas = SETTINGS[setting]
  schedule = schedule_of(config)
  noised = [fkc.noise_gmm(mixture(n), schedule, config.t_min) for n in names]
  if setting.startswith("anneal") and float(betas[0]).is_integer():
    return float(gmm.log_mass(gmm.power(noised[0], int(betas[0]))))
  if setting.startswith("product"):
    return float(gmm.log_mass(gmm.product(noised[0], noised[1])))
  if setting.startswith("cfg"):
    u, c = noised
    return float(gmm.gaussian_geometric_mean(u.means[0], u.covs[0], c.means[0], c.covs[0], betas[1]).log_normalizer)
  return None


# ----------------------------------------------------------------------------------------------------------------
# The run.


def run(config: ConfigDict, ctx: xp.Context) -> dict[str, float]:
  key = ctx.key()
  params_path = os.path.join(ctx.out_dir, "score_net.msgpack")
  net = make_net(config)
  runners: dict[tuple[str, str], object] = {}

  def runner(variant, score_model):
    if (variant, score_model) not in runners:  # one compilation per variant and kind of score
      runners[variant, score_model] = make_runner(config, variant, score_model, net)
    return runners[variant, score_model]

  cases = [("train",)] if config.trained.settings else []
  cases += [("exact", s) for s in config.settings]
  cases += [("trained", s) for s in config.trained.settings]

  def run_case(i, case):
    case_key = jax.random.fold_in(key, i)
    if case[0] == "train":
      start = time.perf_counter()
      trained = train_score_net(case_key, config)
      # This run's network, read back by its sampling cases (a checkpointed run resumes without retraining).
      with open(params_path, "wb") as f:
        f.write(serialization.to_bytes(trained.params))
      losses = np.asarray(trained.losses)
      return {
        "case": "train",
        "seconds": time.perf_counter() - start,
        "loss_curve": losses[: losses.size // 100 * 100].reshape(100, -1).mean(1).tolist()
        if losses.size >= 100
        else losses.tolist(),
        "final_loss": float(losses[-max(1, losses.size // 20) :].mean()),
      }
    score_model, setting = case
    names, betas = SETTINGS[setting]
    oracle = target_oracle(setting, config)
    if score_model == "exact":
      models, params, variants = _stack([mixture(n) for n in names]), None, config.variants
    else:
      template = score_net.init_params(jax.random.key(0), net, 2)
      with open(params_path, "rb") as f:
        params = serialization.from_bytes(template, f.read())
      models, variants = jnp.asarray([CLASSES.index(n) for n in names]), config.trained.variants
    result = {
      "case": f"{score_model}/{setting}",
      "score_model": score_model,
      "setting": setting,
      "claimed": setting not in EXTRA_SETTINGS,
      "oracle_mean": np.asarray(oracle.mean).tolist(),
      "oracle_cov": np.asarray(oracle.cov).tolist(),
      "oracle_log_z": oracle.log_normalizer,
      "oracle_edge_mass": oracle.edge_mass,
      "closed_form_log_z": closed_form_log_z(setting, config),
      "distance_floor": distance_floor(oracle, jax.random.fold_in(case_key, 99), config),
      "variants": {},
    }
    for j, variant in enumerate(variants):
      start = time.perf_counter()
      out = runner(variant, score_model)(jax.random.fold_in(case_key, j), models, jnp.asarray(betas), params)
      jax.block_until_ready(out)
      seconds = time.perf_counter() - start
      r = evaluate(out, oracle, jax.random.fold_in(case_key, 100 + j), config)
      r["seconds"] = seconds
      if variant == "naive":  # no estimate of Z without weights
        r["log_z"], r["log_z_runs"] = None, None
      result["variants"][variant] = r
      if variant in ("naive", "fkc"):  # a few points for the figure
        result.setdefault("samples", {})[variant] = np.asarray(pooled_sample(jax.random.key(1), out, 600)).tolist()
    result["samples"]["exact"] = np.asarray(quadrature.grid_sample(jax.random.key(2), oracle, 600)).tolist()
    return result

  def describe(r):
    if r["case"] == "train":
      return f"score network trained in {r['seconds']:.1f} s, final DSM loss {r['final_loss']:.3f}"
    v = r["variants"]
    parts = [f"{name} moments {x['moment_error']:.3f} dist {x['distance']:.4f}" for name, x in v.items()]
    lz = v.get("fkc", {}).get("log_z")
    return (
      f"{r['case']}: "
      + ", ".join(parts)
      + (f"; fkc log Z {lz:.3f} (exact {r['oracle_log_z']:.3f})" if lz is not None else "")
    )

  results = xp.run_cases(ctx, cases, run_case, describe)
  train = results[0] if config.trained.settings else None
  sampled = results[1:] if config.trained.settings else results
  write_table(sampled, train, ctx)
  plot(sampled, train, ctx)
  return summarize(sampled, train)


def summarize(sampled: list[dict], train: dict | None) -> dict[str, float]:
  measured: dict[str, float] = {}
  if train is not None:
    measured.update(train_seconds=train["seconds"], train_final_loss=train["final_loss"])
  ratios, fkc_errors_where_naive_off, log_z_errors, closed_form_checks, figure1_ratios = [], [], [], [], []
  for r in sampled:
    prefix = f"{r['score_model']}_{r['setting']}"
    v = r["variants"]
    for variant, x in v.items():
      measured[f"{prefix}_{variant}_moment_error"] = x["moment_error"]
      measured[f"{prefix}_{variant}_cov_error"] = x["cov_error"]
      measured[f"{prefix}_{variant}_distance"] = x["distance"]
      if x["log_z"] is not None:
        measured[f"{prefix}_{variant}_log_z_error"] = x["log_z"] - r["oracle_log_z"]
    measured[f"{prefix}_distance_ratio_fkc_over_naive"] = v["fkc"]["distance"] / v["naive"]["distance"]
    if r["closed_form_log_z"] is not None:
      closed_form_checks.append(abs(r["closed_form_log_z"] - r["oracle_log_z"]))
    if r["score_model"] == "exact" and r["setting"] in FIGURE1_SETTINGS:
      figure1_ratios.append(v["fkc"]["distance"] / v["naive"]["distance"])
    if not r["claimed"]:
      continue
    ratios.append(v["fkc"]["distance"] / v["naive"]["distance"])
    if r["score_model"] == "exact":
      if v["naive"]["moment_error"] > 0.2:
        fkc_errors_where_naive_off.append(v["fkc"]["moment_error"])
      log_z_errors.append(abs(v["fkc"]["log_z"] - r["oracle_log_z"]))
  measured["max_distance_ratio_fkc_over_naive"] = max(ratios, default=float("nan"))
  # NaN unless both Figure 1 settings ran: the claim needs them both.
  measured["figure1_max_distance_ratio_fkc_over_naive"] = (
    max(figure1_ratios) if len(figure1_ratios) == len(FIGURE1_SETTINGS) else float("nan")
  )
  measured["num_claimed_settings"] = float(len(ratios))
  measured["num_settings_naive_off_by_20pct"] = float(len(fkc_errors_where_naive_off))
  measured["max_fkc_moment_error_where_naive_off"] = max(fkc_errors_where_naive_off, default=float("nan"))
  measured["max_abs_log_z_error"] = max(log_z_errors, default=float("nan"))
  # The grid oracle against the closed forms (mixture powers, products, Gaussian geometric means).
  measured["max_grid_vs_closed_form_log_z"] = max(closed_form_checks, default=float("nan"))
  return measured


# ----------------------------------------------------------------------------------------------------------------
# Outputs.


def write_table(sampled: list[dict], train: dict | None, ctx: xp.Context) -> None:
  lines = []
  if train is not None:
    lines += [
      f"Score network: {train['seconds']:.1f} s of training, final DSM loss {train['final_loss']:.4f}.",
      "",
    ]
  lines += [
    (
      "Moment errors are relative: mean ‖μ̂ - μ‖/√E|x|², second moment ‖M̂₂ - M₂‖/‖M₂‖, covariance "
      "‖Σ̂ - Σ‖/‖Σ‖ (Frobenius); moments pooled over the R runs, the energy distance between 4096 points "
      "resampled from the pooled runs and 4096 exact draws (floor: exact vs exact)."
    ),
    "",
    (
      "| scores | setting | variant | E[x] | mean error | 2nd moment error | cov error | energy distance (floor) | "
      "log Z - exact | resamplings | final ESS/N | seconds |"
    ),
    "|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r in sampled:
    setting = r["setting"] + ("" if r["claimed"] else " (Figure 1 claim)")
    for variant, x in r["variants"].items():
      lz = "—" if x["log_z"] is None else f"{x['log_z'] - r['oracle_log_z']:+.3f}"
      lines.append(
        f"| {r['score_model']} | {setting} | {variant} | ({x['mean'][0]:.3f}, {x['mean'][1]:.3f}) | "
        f"{x['mean_error']:.4f} | "
        f"{x['second_moment_error']:.4f} | {x['cov_error']:.4f} | "
        f"{x['distance']:.5f} ({r['distance_floor']:.5f}) | {lz} | {x['num_resampled']:.0f} | "
        f"{x['final_ess_fraction']:.2f} | {x['seconds']:.1f} |"
      )
  lines += [
    "",
    "| setting | log Z (grid) | log Z (closed form) | target mean | target cov diagonal |",
    "|---|---|---|---|---|",
  ]
  for r in sampled:
    if r["score_model"] != "exact":
      continue
    closed = "—" if r["closed_form_log_z"] is None else f"{r['closed_form_log_z']:.4f}"
    lines.append(
      f"| {r['setting']} | {r['oracle_log_z']:.4f} | {closed} | "
      f"({r['oracle_mean'][0]:.3f}, {r['oracle_mean'][1]:.3f}) | "
      f"({r['oracle_cov'][0][0]:.3f}, {r['oracle_cov'][1][1]:.3f}) |"
    )
  ctx.write_text("table.md", "\n".join(lines) + "\n", echo=False)


def plot(sampled: list[dict], train: dict | None, ctx: xp.Context) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  names = [f"{r['score_model']}\n{r['setting']}" for r in sampled]
  xs = np.arange(len(sampled))
  variants = [v for v in VARIANTS if any(v in r["variants"] for r in sampled)]
  width = 0.8 / (len(variants) + 1)
  fig, axes = plt.subplots(2, 1, figsize=(max(10, 1.3 * len(sampled)), 8), sharex=True)
  for ax, field, label in (
    (axes[0], "distance", "energy distance to the exact target"),
    (axes[1], "moment_error", "moment error (max of E[x], E[xxᵀ] relative errors)"),
  ):
    for j, v in enumerate(variants):
      vals = [r["variants"][v][field] if v in r["variants"] else np.nan for r in sampled]
      ax.bar(xs + (j - len(variants) / 2) * width, vals, width, label=v)
    if field == "distance":
      ax.bar(
        xs + len(variants) / 2 * width,
        [r["distance_floor"] for r in sampled],
        width,
        color="gray",
        label="exact vs exact (floor)",
      )
    else:
      ax.axhline(0.05, color="green", ls=":", lw=1, label="5%")
      ax.axhline(0.2, color="red", ls=":", lw=1, label="20%")
    ax.set_yscale("log")
    ax.set_ylabel(label)
    ax.legend(fontsize=7, ncol=len(variants) + 2)
  axes[1].set_xticks(xs, names, fontsize=7)
  axes[0].set_title("FKC vs naive score mixing: lower is better")
  fig.tight_layout()
  ctx.save_figure(fig, "fkc_metrics")

  # Samples of every setting: exact target, naive, FKC.
  fig, axes = plt.subplots(3, len(sampled), figsize=(2.6 * len(sampled), 7.5), squeeze=False)
  for col, r in enumerate(sampled):
    pts_all = np.concatenate([np.asarray(p) for p in r["samples"].values()])
    lo, hi = np.percentile(pts_all, 0.5, 0), np.percentile(pts_all, 99.5, 0)
    for row, kind in enumerate(("exact", "naive", "fkc")):
      ax = axes[row, col]
      pts = np.asarray(r["samples"].get(kind, np.zeros((0, 2))))
      ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.4, color=("black", "tab:red", "tab:blue")[row])
      ax.set_xlim(lo[0] - 0.3, hi[0] + 0.3)
      ax.set_ylim(lo[1] - 0.3, hi[1] + 0.3)
      ax.set_xticks([])
      ax.set_yticks([])
      if row == 0:
        ax.set_title(f"{r['score_model']}\n{r['setting']}", fontsize=8)
      if col == 0:
        ax.set_ylabel(("exact target", "naive", "FKC (resample every step)")[row], fontsize=8)
  fig.tight_layout()
  ctx.save_figure(fig, "samples")

  exact = [r for r in sampled if r["score_model"] == "exact" and "fkc" in r["variants"]]
  if exact:
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for r in exact:
      x = r["variants"]["fkc"]
      ax.errorbar(r["oracle_log_z"], x["log_z"], yerr=np.std(x["log_z_runs"]), fmt="o", label=r["setting"])
    lim = [min(r["oracle_log_z"] for r in exact) - 1, max(r["oracle_log_z"] for r in exact) + 1]
    ax.plot(lim, lim, "k:", lw=1)
    ax.set_xlabel("exact log Z")
    ax.set_ylabel("FKC estimate (± sd of one run), exact scores")
    ax.legend(fontsize=7)
    fig.tight_layout()
    ctx.save_figure(fig, "log_normalizer")


CLAIMS = (
  xp.Claim(
    metric="max_fkc_moment_error_where_naive_off",
    statement="with the correctors and resampling at every step, the first two moments (E[x], E[xxᵀ]) match the "
    "exact target within 5% in every setting where the unweighted sampler is off by more than 20% (exact "
    "scores)",
    paper_value="Fig. 1: FKC samples the annealed (β = 10) and product targets of a 2-D mixture; no moment error "
    "is reported as a number",
    comparison="<=",
    target=0.05,
  ),
  xp.Claim(
    metric="exact_anneal_beta2_naive_moment_error",
    statement="... e.g. annealing to β = 2, where the unweighted annealed-score sampler is off by more than 20%",
    paper_value="the premise of the annealed weighted SDE (β s alone does not sample q^β); no number in the paper "
    "(measured here: E[x₁] ≈ 0.23 against the exact 1.64)",
    comparison=">=",
    target=0.2,
  ),
  xp.Claim(
    metric="max_distance_ratio_fkc_over_naive",
    statement="the distance to the exact target (energy distance) is lower with FKC than with naive score mixing in "
    "every setting: annealing β = 2 and ½, a product of two experts, guidance w = 2, 3, 4; exact and "
    "trained scores (the paper's Figure 1 settings are judged by the next claim)",
    paper_value="abstract: FKC improves on plain score mixing for classifier-free guidance (text-to-image) and "
    "products of experts (multi-objective molecules); measured there by FID/CLIP and docking scores",
    comparison="<",
    target=1.0,
  ),
  xp.Claim(
    metric="figure1_max_distance_ratio_fkc_over_naive",
    statement="... and in the paper's own Figure 1 settings, annealing to β = 10 and the authors' product of "
    "disjoint experts (exact scores; the worse of the two ratios of FKC's energy distance to naive's). Seed-"
    "dependent at quick scale: the disjoint product's ratio was 0.74 / 0.20 / 1.78 / 0.13 at seeds 0–3",
    paper_value="Fig. 1: on a 2-D mixture, FKC samples the annealed (β = 10) target and the product of two "
    "experts, where the unweighted sampler misses them; shown as samples, no number",
    comparison="<",
    target=1.0,
  ),
  xp.Claim(
    metric="max_abs_log_z_error",
    statement="the SMC estimate of the normalising constant matches its exact value within 0.3 nats (Z within 35%) "
    "in every setting (exact scores; log of the mean of the R runs' estimates of Z; one run's log Z has "
    "a spread of 0.2–0.4 at N = 4096)",
    paper_value="a property of the Feynman-Kac weights (their mean is Z_1/Z_0); the paper reports no such number",
    comparison="<=",
    target=0.3,
  ),
)

EXPERIMENT = xp.Experiment("feynman_kac_correctors", PAPER, CLAIMS, get_config, run, validate_config)

if __name__ == "__main__":
  xp.define_flags(EXPERIMENT)
  xp.main(EXPERIMENT)
