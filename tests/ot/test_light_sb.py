"""LightSB against the closed-form Gaussian bridge, ott's Sinkhorn, the benchmark's own formulas and simulation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from ott.geometry import pointcloud
from ott.solvers import linear

from toolkit.ot import benchmarks, metrics
from toolkit.ot import light_sb as lsb

EPS = 0.5
MEAN0 = np.array([0.5, -1.0])
MEAN1 = np.array([-1.0, 1.0])
COV0 = np.array([[1.0, 0.3], [0.3, 0.6]])
COV1 = np.array([[0.8, -0.4], [-0.4, 1.2]])


def random_spd(key, d, floor):
  a = jax.random.normal(key, (d, d))
  return a @ a.T / d + floor * jnp.eye(d)


def bridge(dtype=jnp.float32):
  return benchmarks.gaussian_bridge(*(jnp.asarray(a, dtype) for a in (MEAN0, COV0, MEAN1, COV1)), EPS)


def gaussian_sampler(mean, cov):
  chol = jnp.linalg.cholesky(jnp.asarray(cov, jnp.float32))
  return lambda key, n: jnp.asarray(mean, jnp.float32) + jax.random.normal(key, (n, len(mean))) @ chol.T


def random_mixture(key, k=3, d=2, diagonal=False):
  """A LightSB θ with distinct weights, means and (full) S_k."""
  keys = jax.random.split(key, 4)
  params = lsb.LightSBParams(
    log_alpha=jax.random.normal(keys[0], (k,)),
    r=2.0 * jax.random.normal(keys[1], (k, d)),
    log_s=0.5 * jax.random.normal(keys[2], (k, d)),
    s_lower=None if diagonal else 0.5 * jax.random.normal(keys[3], (k, d, d)),
  )
  return params


def assert_moments_match(samples, mean, cov, n_se=4.0):
  """Sample mean and covariance within n_se standard errors of (mean, cov) (Gaussian fourth moments)."""
  n = samples.shape[0]
  mean, cov = np.asarray(mean, np.float64), np.asarray(cov, np.float64)
  samples = np.asarray(samples, np.float64)
  var = np.diag(cov)
  se_mean = np.sqrt(var / n)
  se_cov = np.sqrt((np.outer(var, var) + cov**2) / n)
  z_mean = (samples.mean(0) - mean) / se_mean
  z_cov = (np.cov(samples.T) - cov) / se_cov
  assert np.all(np.abs(z_mean) < n_se), z_mean
  assert np.all(np.abs(z_cov) < n_se), z_cov


# ---------------------------------------------------------------------------------------------------------------
# The closed-form Gaussian bridge (toolkit.ot.benchmarks, arXiv 2006.02572) as the oracle.


def test_gaussian_bridge_identities(x64, key):
  """Σ1 = S*Σ0S* + εS*, S* symmetric positive definite, Cov(x1|x0) = εS* (arXiv 2006.02572)."""
  d, eps = 4, 0.7
  cov0, cov1 = random_spd(key, d, 0.3), random_spd(jax.random.fold_in(key, 1), d, 0.2)
  mean0, mean1 = jax.random.normal(jax.random.fold_in(key, 2), (2, d))
  gb = benchmarks.gaussian_bridge(mean0, cov0, mean1, cov1, eps)
  s = gb.s_star
  raw = np.linalg.solve(np.asarray(cov0), np.asarray(gb.cross_cov)).T  # Cᵀ Σ0⁻¹ before symmetrisation
  np.testing.assert_allclose(raw, raw.T, atol=1e-12)
  assert np.all(np.linalg.eigvalsh(np.asarray(s)) > 0)
  np.testing.assert_allclose(s @ cov0 @ s + eps * s, cov1, atol=1e-12)
  np.testing.assert_allclose(gb.conditional_cov(), eps * s, atol=1e-12)
  # The joint covariance is a valid (positive definite) plan with the right marginals at t = 0 and t = 1.
  joint = np.block([[cov0, gb.cross_cov], [gb.cross_cov.T, cov1]])
  assert np.all(np.linalg.eigvalsh(joint) > 0)
  np.testing.assert_allclose(gb.marginal_cov(0.0), cov0, atol=1e-12)
  np.testing.assert_allclose(gb.marginal_cov(1.0), cov1, atol=1e-12)


def test_gaussian_bridge_scalar_case_and_limits(x64):
  """d = 1: C = ½(√(4σ0²σ1² + ε²) - ε) (Janati et al. 2020); ε → 0 gives C → σ0σ1 (the Monge map)."""
  s0, s1 = 1.3, 0.7
  for eps in (0.1, 1.0, 10.0):
    gb = benchmarks.gaussian_bridge(jnp.zeros(1), jnp.array([[s0**2]]), jnp.ones(1), jnp.array([[s1**2]]), eps)
    np.testing.assert_allclose(gb.cross_cov[0, 0], 0.5 * (np.sqrt(4 * s0**2 * s1**2 + eps**2) - eps), rtol=1e-12)
  gb = benchmarks.gaussian_bridge(jnp.zeros(1), jnp.array([[s0**2]]), jnp.ones(1), jnp.array([[s1**2]]), 1e-8)
  np.testing.assert_allclose(gb.cross_cov[0, 0], s0 * s1, rtol=1e-6)


def test_exact_k1_parameters_give_the_closed_form_conditional(x64, key):
  """K = 1 at (r*, S*): π_θ(y|x) = N(μ1 + CᵀΣ0⁻¹(x - μ0), Σ1 - CᵀΣ0⁻¹C) (arXiv 2006.02572)."""
  d, eps = 3, 0.4
  cov0, cov1 = random_spd(key, d, 0.3), random_spd(jax.random.fold_in(key, 1), d, 0.2)
  mean0, mean1 = jax.random.normal(jax.random.fold_in(key, 2), (2, d))
  gb = benchmarks.gaussian_bridge(mean0, cov0, mean1, cov1, eps)
  params = gb.lightsb_params()
  x = jax.random.normal(jax.random.fold_in(key, 3), (7, d))
  c, s0_inv = np.asarray(gb.cross_cov), np.linalg.inv(np.asarray(cov0))
  expected_mean = np.asarray(mean1) + (np.asarray(x) - np.asarray(mean0)) @ (c.T @ s0_inv).T
  expected_cov = np.asarray(cov1) - c.T @ s0_inv @ c
  np.testing.assert_allclose(lsb.plan_mean(params, x, eps), expected_mean, atol=1e-12)
  np.testing.assert_allclose(lsb.plan_cov(params, x, eps), np.broadcast_to(expected_cov, (7, d, d)), atol=1e-12)
  np.testing.assert_allclose(lsb.s_matrices(params)[0], gb.s_star, atol=1e-12)


def test_sample_plan_matches_the_mixture_moments(key):
  """Samples of π_θ(·|x) (K = 3, full and diagonal S) have the mixture's mean and covariance."""
  x = jnp.array([0.3, -0.2])
  for diagonal in (False, True):
    params = random_mixture(key, diagonal=diagonal)
    samples = lsb.sample_plan(jax.random.fold_in(key, 7), params, x, EPS, 20_000)
    assert samples.shape == (20_000, 2)
    assert_moments_match(samples, lsb.plan_mean(params, x, EPS), lsb.plan_cov(params, x, EPS))


def test_benchmark_plan_is_the_lightsb_family(x64, key):
  """The benchmark's π*(y|x) (its own formula, Gushchin et al. 2023) equals LightSB's at θ* = (r_n, Σ̂_n/ε, α_n)."""
  for dim, eps in ((2, 0.1), (8, 10.0)):
    bench = benchmarks.mixture_benchmark(key, dim, eps)
    params = benchmarks.benchmark_lightsb_params(bench)
    x = benchmarks.sample_benchmark_input(jax.random.fold_in(key, dim), bench, 5)
    log_w, means, covs = benchmarks.benchmark_conditional(bench, x)
    np.testing.assert_allclose(lsb.plan_log_weights(params, x, eps), log_w, atol=1e-9)
    np.testing.assert_allclose(lsb.plan_component_means(params, x), means, atol=1e-9)
    np.testing.assert_allclose(lsb.plan_component_covs(params, eps), covs, atol=1e-12)
    mean, cov = benchmarks.benchmark_conditional_moments(bench, x)
    np.testing.assert_allclose(lsb.plan_mean(params, x, eps), mean, atol=1e-9)
    np.testing.assert_allclose(lsb.plan_cov(params, x, eps), cov, atol=1e-9)
  # The construction: 3 input centres with coordinates in {-2, 0, 2}, 5 potential centres in {-2, ..., 2}.
  assert set(np.unique(np.asarray(bench.input_means))) == {-2.0, 0.0, 2.0}
  assert set(np.unique(np.asarray(bench.potential_means))) == {-2.0, -1.0, 0.0, 1.0, 2.0}


def test_benchmark_samplers_match_the_mixtures(key):
  """p0 samples have the input mixture's moments; y ~ π*(·|x) samples have the true conditional moments."""
  bench = benchmarks.mixture_benchmark(key, 2, 1.0)
  sample_x0, sample_x1, sample_true_plan = benchmarks.benchmark_samplers(bench)
  p = np.exp(np.asarray(bench.input_log_probs))
  means, covs = np.asarray(bench.input_means), np.asarray(bench.input_covs)
  mean0 = p @ means
  cov0 = np.einsum("m,mij->ij", p, covs) + np.einsum("m,mi,mj->ij", p, means - mean0, means - mean0)
  assert_moments_match(sample_x0(jax.random.fold_in(key, 1), 20_000), mean0, cov0)
  x = jnp.array([0.5, -1.0])
  mean, cov = benchmarks.benchmark_conditional_moments(bench, x)
  assert_moments_match(sample_true_plan(jax.random.fold_in(key, 2), jnp.broadcast_to(x, (20_000, 2))), mean, cov)
  assert sample_x1(key, 7).shape == (7, 2)


def test_bures_wasserstein_and_cbw_uvp_oracles(key):
  """BW for commuting covariances is ½‖Δμ‖² + ½Σ(√a - √b)²; the exact plan scores the metric's sampling floor."""
  mean_a, mean_b = jnp.array([1.0, 2.0, 0.0]), jnp.array([0.0, 2.5, 1.0])
  a, b = jnp.array([1.0, 4.0, 0.25]), jnp.array([2.0, 1.0, 0.25])
  expected = 0.5 * np.sum((mean_a - mean_b) ** 2) + 0.5 * np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
  np.testing.assert_allclose(metrics.bures_wasserstein(mean_a, jnp.diag(a), mean_b, jnp.diag(b)), expected, rtol=1e-5)
  rot = jnp.linalg.qr(jax.random.normal(key, (3, 3)))[0]
  np.testing.assert_allclose(  # rotation invariance
    metrics.bures_wasserstein(rot @ mean_a, rot @ jnp.diag(a) @ rot.T, rot @ mean_b, rot @ jnp.diag(b) @ rot.T),
    expected,
    rtol=1e-4,
  )
  # cBW-UVP: the true plan and LightSB at the exact parameters, sampled alike, score the same (the sampling floor).
  bench = benchmarks.mixture_benchmark(key, 2, 1.0)
  params = benchmarks.benchmark_lightsb_params(bench)
  x = benchmarks.sample_benchmark_input(jax.random.fold_in(key, 1), bench, 40)
  mean, cov = benchmarks.benchmark_conditional_moments(bench, x)
  var = benchmarks.benchmark_target_variance(key, bench, 20_000)
  kw = {"num_samples": 1000, "batch_size": 20}
  exact = metrics.conditional_bw_uvp(
    key, lambda k, xi, n: lsb.sample_plan(k, params, xi, 1.0, n), x, mean, cov, var, **kw
  )
  truth = metrics.conditional_bw_uvp(
    key,
    lambda k, xi, n: benchmarks.sample_benchmark_target(k, bench, jnp.broadcast_to(xi, (n, 2))),
    x,
    mean,
    cov,
    var,
    **kw,
  )
  assert 0 < float(exact) < 0.5 and 0 < float(truth) < 0.5
  # A model that ignores x (samples of the target) is far off.
  indep = metrics.conditional_bw_uvp(
    key,
    lambda k, xi, n: benchmarks.sample_benchmark_target(k, bench, benchmarks.sample_benchmark_input(k, bench, n)),
    x,
    mean,
    cov,
    var,
    **kw,
  )
  assert float(indep) > 20 * float(truth)


# ---------------------------------------------------------------------------------------------------------------
# The drift and the SDE.


def test_drift_equals_the_papers_form(x64, key):
  """g = -x/(1-t) + ε∇h (arXiv 2310.01174, Sec. 3, with jax.grad of h); at t = 0, g = E[y|x] - x."""
  x = jnp.array([0.3, -1.2])
  paper = jax.jit(lambda p, x, t: -x / (1 - t) + EPS * jax.grad(lsb.log_h, argnums=1)(p, x, t, EPS))
  drift = jax.jit(lambda p, x, t: lsb.drift(p, x, t, EPS))
  for diagonal in (False, True):
    params = random_mixture(key, diagonal=diagonal)
    for t in (0.0, 0.3, 0.9, 0.99):
      np.testing.assert_allclose(drift(params, x, t), paper(params, x, t), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(drift(params, x, 0.0), lsb.plan_mean(params, x, EPS) - x, atol=1e-12)
  # At t = 1 the drift is finite: x + ε ∇ log v_θ(x).
  np.testing.assert_allclose(
    drift(params, x, 1.0), x + EPS * jax.grad(lsb.log_v, argnums=1)(params, x, EPS), atol=1e-10
  )


def test_sde_matches_the_gaussian_bridge_marginals(key):
  """Euler–Maruyama with the drift at K = 1, θ*: the marginals at t = ½ and t = 1 are the bridge's (§3.3)."""
  gb = bridge()
  x0 = gaussian_sampler(MEAN0, COV0)(key, 8000)
  path = jax.jit(lambda k, x: lsb.sample_sde(k, gb.lightsb_params(), x, EPS, 200, True))(jax.random.fold_in(key, 1), x0)
  assert path.trajectory.shape == (201, 8000, 2) and float(path.times[100]) == 0.5
  np.testing.assert_array_equal(path.trajectory[-1], path.final)
  assert_moments_match(path.trajectory[100], gb.marginal_mean(0.5), gb.marginal_cov(0.5))
  assert_moments_match(path.final, gb.marginal_mean(1.0), gb.marginal_cov(1.0))
  # The Brownian-bridge shortcut gives the same marginal at t = ½.
  xt = lsb.sample_bridge(jax.random.fold_in(key, 2), gb.lightsb_params(), x0, 0.5, EPS)
  assert_moments_match(xt, gb.marginal_mean(0.5), gb.marginal_cov(0.5))


def test_sde_from_one_point_ends_at_the_plan(key):
  """From a fixed x0, a K = 3 full-S bridge ends at π_θ(·|x0): the mixture's mean and covariance."""
  params = random_mixture(key)
  x0 = jnp.array([0.3, -0.2])
  final = lsb.sample_sde(jax.random.fold_in(key, 1), params, jnp.broadcast_to(x0, (8000, 2)), EPS, 200).final
  assert_moments_match(final, lsb.plan_mean(params, x0, EPS), lsb.plan_cov(params, x0, EPS))


# ---------------------------------------------------------------------------------------------------------------
# Training.


def test_fit_recovers_the_exact_parameters(key):
  """K = 1 on Gaussian data: S* and r* (arXiv 2006.02572) within 2% / 0.03, full S and diagonal S."""
  gb = bridge()
  steps = 2000
  out = lsb.fit(
    key,
    gaussian_sampler(MEAN0, COV0),
    gaussian_sampler(MEAN1, COV1),
    epsilon=EPS,
    num_components=1,
    diagonal=False,
    optimizer=optax.adam(optax.cosine_decay_schedule(3e-2, steps)),
    batch_size=1024,
    num_steps=steps,
    s_init=1.0,
  )
  s = lsb.s_matrices(out.params)[0]
  assert out.losses.shape == (steps,) and float(out.losses[-200:].mean()) < float(out.losses[:20].mean())
  assert float(jnp.linalg.norm(s - gb.s_star) / jnp.linalg.norm(gb.s_star)) < 0.02
  assert float(jnp.linalg.norm(out.params.r[0] - gb.r_star)) < 0.03
  # Diagonal S with diagonal covariances (exact in the diagonal family), from fixed arrays of samples.
  cov0, cov1 = np.diag([1.0, 0.5]), np.diag([0.6, 1.5])
  gb = benchmarks.gaussian_bridge(
    jnp.asarray(MEAN0, jnp.float32),
    jnp.asarray(cov0, jnp.float32),
    jnp.asarray(MEAN1, jnp.float32),
    jnp.asarray(cov1, jnp.float32),
    EPS,
  )
  x0 = gaussian_sampler(MEAN0, cov0)(jax.random.fold_in(key, 1), 50_000)
  x1 = gaussian_sampler(MEAN1, cov1)(jax.random.fold_in(key, 2), 50_000)
  out = lsb.fit(
    key,
    x0,
    x1,
    epsilon=EPS,
    num_components=1,
    optimizer=optax.adam(optax.cosine_decay_schedule(3e-2, steps)),
    batch_size=1024,
    num_steps=steps,
    s_init=1.0,
  )
  assert out.params.s_lower is None
  np.testing.assert_allclose(jnp.exp(out.params.log_s[0]), jnp.diag(gb.s_star), rtol=0.03)
  np.testing.assert_allclose(out.params.r[0], gb.r_star, atol=0.03)


def test_fit_takes_any_optax_optimizer(key):
  """optimizer=None is Adam at DEFAULT_LEARNING_RATE, step for step; another transformation trains differently."""
  x0, x1 = jax.random.normal(key, (2, 64, 2))
  kw = {"epsilon": EPS, "num_components": 3, "batch_size": 16, "num_steps": 5}
  default = lsb.fit(key, x0, x1, **kw)
  explicit = lsb.fit(key, x0, x1, optimizer=optax.adam(lsb.DEFAULT_LEARNING_RATE), **kw)
  np.testing.assert_array_equal(default.losses, explicit.losses)
  np.testing.assert_array_equal(default.params.r, explicit.params.r)
  sgd = lsb.fit(key, x0, x1, optimizer=optax.sgd(1e-2), **kw)
  assert not np.array_equal(sgd.params.r, default.params.r)
  with pytest.raises(TypeError, match="optimizer"):
    lsb.fit(key, x0, x1, optimizer="adam", **kw)


def test_exact_parameters_minimise_the_loss(x64, key):
  """L(θ*) < L(θ* + δ) on a large common sample: L is KL(π*‖π_θ) up to a constant (arXiv 2310.01174, Sec. 3)."""
  gb = bridge(jnp.float64)
  x0 = gaussian_sampler(MEAN0, COV0)(key, 200_000).astype(jnp.float64)
  x1 = gaussian_sampler(MEAN1, COV1)(jax.random.fold_in(key, 1), 200_000).astype(jnp.float64)
  star = gb.lightsb_params()
  best = lsb.loss(star, x0, x1, EPS)
  for i, field in enumerate(("r", "log_s", "s_lower")):
    value = getattr(star, field)
    delta = 0.1 * jax.random.normal(jax.random.fold_in(key, 10 + i), value.shape)
    assert float(lsb.loss(star._replace(**{field: value + delta}), x0, x1, EPS)) > float(best)


def test_loss_is_invariant_to_scaling_alpha(key):
  params = random_mixture(key)
  x0, x1 = jax.random.normal(key, (2, 64, 2))
  base = lsb.loss(params, x0, x1, EPS)
  for shift in (-3.0, 0.7, 5.0):  # α_k → e^shift α_k
    np.testing.assert_allclose(
      lsb.loss(params._replace(log_alpha=params.log_alpha + shift), x0, x1, EPS),
      base,
      rtol=1e-5,
      atol=1e-5,
    )
  # ... but not to changing their ratios.
  moved = params._replace(log_alpha=params.log_alpha.at[0].add(1.0))
  assert abs(float(lsb.loss(moved, x0, x1, EPS)) - float(base)) > 1e-3


# ---------------------------------------------------------------------------------------------------------------
# Cross-check against ott's Sinkhorn.


def test_ott_sinkhorn_plan_matches_with_epsilon_doubled(key):
  """ott's plan between 3000 samples, with ott's ε = 2ε (its cost ‖x-y‖² has no ½), has the bridge's
  cross-covariance C and LightSB's conditional means; with ott's ε = ε it visibly does not."""
  gb = bridge()
  n = 3000
  x = gaussian_sampler(MEAN0, COV0)(key, n)
  y = gaussian_sampler(MEAN1, COV1)(jax.random.fold_in(key, 1), n)
  params = gb.lightsb_params()

  def errors(ott_epsilon):
    out = jax.jit(
      lambda x, y: linear.solve(pointcloud.PointCloud(x, y, epsilon=ott_epsilon), threshold=1e-4, max_iterations=5000)
    )(x, y)
    assert out.converged
    plan = out.matrix
    xc, yc = x - x.mean(0), y - y.mean(0)
    cross = (xc.T @ plan @ yc) / plan.sum()
    cond_mean = (plan @ y) / plan.sum(1, keepdims=True)
    rms = jnp.sqrt(jnp.mean(jnp.sum((cond_mean - lsb.plan_mean(params, x, EPS)) ** 2, -1)))
    return float(jnp.abs(cross - gb.cross_cov).max()), float(rms)

  cross_err, mean_err = errors(2 * EPS)
  assert cross_err < 0.06 and mean_err < 0.1, (cross_err, mean_err)
  cross_err, mean_err = errors(EPS)
  assert cross_err > 0.08 and mean_err > 0.15, (cross_err, mean_err)


# ---------------------------------------------------------------------------------------------------------------
# Transformations and input checks.


def test_jit_vmap_grad_and_eager_agree(key):
  params = random_mixture(key)
  x0, x1 = jax.random.normal(key, (2, 8, 2))
  np.testing.assert_allclose(jax.jit(lsb.loss)(params, x0, x1, EPS), lsb.loss(params, x0, x1, EPS), rtol=1e-5)
  np.testing.assert_allclose(jax.jit(lsb.plan_mean)(params, x0, EPS), lsb.plan_mean(params, x0, EPS), atol=1e-5)
  np.testing.assert_allclose(jax.jit(lsb.drift)(params, x0, 0.4, EPS), lsb.drift(params, x0, 0.4, EPS), atol=1e-4)
  np.testing.assert_allclose(
    jax.jit(jax.vmap(lambda x: lsb.drift(params, x, 0.4, EPS)))(x0),
    lsb.drift(params, x0, 0.4, EPS),
    atol=1e-5,
  )
  np.testing.assert_allclose(
    jax.jit(jax.vmap(lambda x: lsb.log_c(params, x, EPS)))(x0),
    lsb.log_c(params, x0, EPS),
    atol=1e-5,
  )
  eager = lsb.sample_plan(key, params, x0, EPS, 3)
  np.testing.assert_allclose(jax.jit(lsb.sample_plan, static_argnums=4)(key, params, x0, EPS, 3), eager, atol=1e-5)
  assert eager.shape == (8, 3, 2) and lsb.sample_plan(key, params, x0, EPS).shape == (8, 2)
  # ε may be traced; the gradient of the loss is finite and matches a finite difference.
  np.testing.assert_allclose(
    jax.jit(lsb.loss)(params, x0, x1, jnp.float32(EPS)), lsb.loss(params, x0, x1, EPS), rtol=1e-5
  )
  grads = jax.jit(jax.grad(lsb.loss))(params, x0, x1, EPS)
  h, loss = 1e-2, jax.jit(lsb.loss)
  fd = (
    loss(params._replace(r=params.r.at[1, 0].add(h)), x0, x1, EPS)
    - loss(params._replace(r=params.r.at[1, 0].add(-h)), x0, x1, EPS)
  ) / (2 * h)
  np.testing.assert_allclose(grads.r[1, 0], fd, rtol=2e-2, atol=1e-3)


def test_bad_input_raises_clear_errors(key):
  params = random_mixture(key)
  x = jnp.zeros((4, 2))
  with pytest.raises(ValueError, match="epsilon"):
    lsb.loss(params, x, x, 0.0)
  with pytest.raises(ValueError, match="epsilon"):
    lsb.log_c(params, x, -1.0)
  with pytest.raises(TypeError, match="epsilon"):
    lsb.log_v(params, x, "one")
  with pytest.raises(ValueError, match="d = 2"):
    lsb.plan_mean(params, jnp.zeros((4, 3)), EPS)
  with pytest.raises(TypeError, match="LightSBParams"):
    lsb.log_c((params.log_alpha, params.r, params.log_s), x, EPS)
  with pytest.raises(ValueError, match="s_lower"):
    lsb.log_v(params._replace(s_lower=jnp.zeros((3, 2))), x, EPS)
  with pytest.raises(ValueError, match="log_alpha"):
    lsb.log_v(params._replace(log_alpha=jnp.zeros(4)), x, EPS)
  with pytest.raises(ValueError, match="num_components"):
    lsb.init_params(key, x, 0, epsilon=EPS)
  with pytest.raises(ValueError, match="num_components"):
    lsb.fit(key, x, x, epsilon=EPS, num_components=0)
  with pytest.raises(ValueError, match="epsilon"):
    lsb.fit(key, x, x, epsilon=0.0, num_components=2)
  with pytest.raises(ValueError, match="same dimension"):
    lsb.fit(key, x, jnp.zeros((4, 3)), epsilon=EPS, num_components=2)
  with pytest.raises(ValueError, match="x0"):
    lsb.fit(key, jnp.zeros(4), x, epsilon=EPS, num_components=2)
  with pytest.raises(ValueError, match="num_steps"):
    lsb.sample_sde(key, params, x, EPS, num_steps=0)
  with pytest.raises(ValueError, match="cov1"):
    benchmarks.gaussian_bridge(jnp.zeros(2), jnp.eye(2), jnp.zeros(2), jnp.eye(3), EPS)
  with pytest.raises(ValueError, match="potential_std"):
    benchmarks.mixture_benchmark(key, 3, 1.0)
  # A non-PSD covariance gave a NaN bridge, an asymmetric one was symmetrised silently; t = 2 gave NaN samples.
  with pytest.raises(ValueError, match="`cov1` must be positive definite"):
    benchmarks.gaussian_bridge(jnp.zeros(2), jnp.eye(2), jnp.zeros(2), jnp.diag(jnp.array([1.0, -0.5])), EPS)
  with pytest.raises(ValueError, match="`cov0` must be a finite symmetric"):
    benchmarks.gaussian_bridge(jnp.zeros(2), jnp.array([[1.0, 0.5], [0.0, 1.0]]), jnp.zeros(2), jnp.eye(2), EPS)
  for t in (2.0, -0.1, jnp.array([0.5, 1.5, 0.2, 0.1])):
    with pytest.raises(ValueError, match=r"`t` must lie in \[0, 1\]"):
      lsb.sample_bridge(key, params, x, t, EPS)
  assert bool(jnp.all(jnp.isfinite(lsb.sample_bridge(key, params, x, jnp.array([0.0, 0.3, 1.0, 0.5]), EPS))))


# ---------------------------------------------------------------------------------------------------------------
# Bad input


def test_bad_input_mixture_pieces_and_plan(key):
  params = random_mixture(key)  # K = 3, d = 2, full S_k
  x = jnp.zeros((4, 2))
  # A plain tuple of the arrays: scale_tril ended in an AttributeError.
  with pytest.raises(TypeError, match="`params`"):
    lsb.scale_tril(tuple(params))
  with pytest.raises(TypeError, match="`params`"):
    lsb.s_matrices(tuple(params))
  with pytest.raises(ValueError, match="`epsilon`"):
    lsb.plan_component_covs(params, 0.0)
  with pytest.raises(ValueError, match="`x`"):
    lsb.plan_component_means(params, jnp.zeros((4, 3)))
  with pytest.raises(ValueError, match="`x`"):
    lsb.plan_log_weights(params, jnp.zeros((4, 3)), EPS)
  with pytest.raises(TypeError, match="`x`"):
    lsb.plan_cov(params, jnp.zeros((4, 2), jnp.int32), EPS)
  with pytest.raises(ValueError, match="`epsilon`"):
    lsb.plan_cov(params, x, -1.0)
  with pytest.raises(ValueError, match="`num_samples`"):
    lsb.sample_plan(key, params, x, EPS, num_samples=0)
  with pytest.raises(ValueError, match="`x`"):
    lsb.sample_plan(key, params, jnp.zeros((4, 3)), EPS)


def test_bad_input_drift_and_log_h(key):
  params = random_mixture(key)
  x = jnp.array([0.3, -1.2])
  # t = 3 or -2 gave a NaN drift (tλ + 1 - t < 0); an array t was broadcast against the components.
  for t in (3.0, -2.0, jnp.array([0.2, 0.4])):
    with pytest.raises(ValueError, match="`t`"):
      lsb.drift(params, x, t, EPS)
  with pytest.raises(TypeError, match="`t`"):
    lsb.drift(params, x, "half", EPS)
  with pytest.raises(ValueError, match="`x`"):
    lsb.drift(params, jnp.zeros((4, 3)), 0.5, EPS)
  # h diverges at t = 1 (a ZeroDivisionError); the drift stays finite there.
  with pytest.raises(ValueError, match=r"`t` must lie in \[0, 1\)"):
    lsb.log_h(params, x, 1.0, EPS)
  with pytest.raises(ValueError, match="`x`"):
    lsb.log_h(params, jnp.zeros((4, 2)), 0.5, EPS)
