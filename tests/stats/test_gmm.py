"""Gaussian mixtures in closed form against quadrature, autodiff, draws and numpy."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toolkit.stats import gmm


@functools.partial(jax.jit, static_argnames=("k", "d"))
def random_mixture(key, k=3, d=2):
  """A mixture with distinct weights, means and full covariances."""
  kw, km, kc = jax.random.split(key, 3)
  a = jax.random.normal(kc, (k, d, d)) / np.sqrt(d)
  covs = a @ jnp.swapaxes(a, -1, -2) + 0.2 * jnp.eye(d)
  weights = jax.nn.softmax(jax.random.normal(kw, (k,)))
  return gmm.gaussian_mixture(weights, 2.0 * jax.random.normal(km, (k, d)), covs)


def grid_quadrature(log_density, half_width=8.0, n=401):
  """log ∫ exp(log_density), mean and covariance on a 2-D midpoint grid (float64; spectrally accurate for the
  smooth, well-resolved densities here)."""
  g = jnp.linspace(-half_width, half_width, n)
  pts = jnp.stack([a.ravel() for a in jnp.meshgrid(g, g)], -1)
  lp = jax.jit(log_density)(pts)
  log_z = jax.nn.logsumexp(lp) + 2 * jnp.log(g[1] - g[0])
  w = jnp.exp(lp - jax.nn.logsumexp(lp))
  mean = w @ pts
  return log_z, mean, (w[:, None] * (pts - mean)).T @ (pts - mean)


def test_score_is_the_gradient_of_the_log_density(x64, key):
  mix = random_mixture(key, k=4, d=3)
  x = 3.0 * jax.random.normal(jax.random.fold_in(key, 1), (50, 3))
  expected = jax.jit(jax.vmap(jax.grad(lambda y: gmm.log_density(mix, y))))(x)
  np.testing.assert_allclose(gmm.score(mix, x), expected, rtol=1e-10, atol=1e-10)


def test_log_density_matches_scipy(x64, key):
  mix = random_mixture(key, k=3, d=2)
  x = 2.0 * jax.random.normal(jax.random.fold_in(key, 1), (20, 2))
  comps = [jax.scipy.stats.multivariate_normal.logpdf(x, m, c) for m, c in zip(mix.means, mix.covs)]
  expected = jax.nn.logsumexp(jnp.stack(comps, -1) + mix.log_weights, -1)
  np.testing.assert_allclose(gmm.log_density(mix, x), expected, rtol=1e-12)
  np.testing.assert_allclose(gmm.log_density(mix, x[3]), expected[3], rtol=1e-12)  # one point, shape ()


def test_products_powers_and_geometric_means_match_quadrature(x64, key):
  """Products, integer powers and geometric means in closed form against a 2-D grid."""
  m1, m2 = random_mixture(key, k=2), random_mixture(jax.random.fold_in(key, 1), k=3)
  prod = gmm.product(m1, m2)
  log_z, mean, cov = grid_quadrature(lambda p: gmm.log_density(m1, p) + gmm.log_density(m2, p))
  np.testing.assert_allclose(gmm.log_mass(prod), log_z, atol=1e-8)
  got_mean, got_cov = gmm.moments(prod)
  np.testing.assert_allclose(got_mean, mean, atol=1e-8)
  np.testing.assert_allclose(got_cov, cov, atol=1e-8)
  cube = gmm.power(m1, 3)
  log_z3, mean3, _ = grid_quadrature(lambda p: 3 * gmm.log_density(m1, p))
  np.testing.assert_allclose(gmm.log_mass(cube), log_z3, atol=1e-8)
  np.testing.assert_allclose(gmm.moments(cube)[0], mean3, atol=1e-8)
  # Guidance target w = 3, q_u = N(0, I), q_c = N((1,1), I/4).
  gm = gmm.gaussian_geometric_mean(jnp.zeros(2), jnp.eye(2), jnp.ones(2), 0.25 * jnp.eye(2), 3.0)
  np.testing.assert_allclose(gm.mean, [1.2, 1.2], rtol=1e-12)
  np.testing.assert_allclose(gm.mean @ gm.mean + jnp.trace(gm.cov), 3.08, rtol=1e-12)
  np.testing.assert_allclose(gm.log_normalizer, 4.2563, atol=1e-4)
  log_zg, _, cov_g = grid_quadrature(
    lambda p: (
      -2.0 * jax.scipy.stats.multivariate_normal.logpdf(p, jnp.zeros(2), jnp.eye(2))
      + 3.0 * jax.scipy.stats.multivariate_normal.logpdf(p, jnp.ones(2), 0.25 * jnp.eye(2))
    )
  )
  np.testing.assert_allclose(gm.log_normalizer, log_zg, atol=1e-8)
  np.testing.assert_allclose(gm.cov, cov_g, atol=1e-8)


def test_noised_is_the_law_of_alpha_x_plus_sigma_eps(x64, key):
  mix = random_mixture(key, k=3, d=2)
  alpha, sigma = 0.7, 0.4
  mean, cov = gmm.moments(mix)
  got_mean, got_cov = gmm.moments(gmm.noised(mix, alpha, sigma))
  np.testing.assert_allclose(got_mean, alpha * mean, rtol=1e-12)
  np.testing.assert_allclose(got_cov, alpha**2 * cov + sigma**2 * jnp.eye(2), rtol=1e-12)
  x = gmm.sample(jax.random.fold_in(key, 1), mix, 200_000)
  y = alpha * x + sigma * jax.random.normal(jax.random.fold_in(key, 2), x.shape)
  np.testing.assert_allclose(np.cov(np.asarray(y).T), got_cov, atol=0.05)


def test_sample_has_the_mixture_moments(key):
  mix = random_mixture(key, k=3, d=2)
  x = np.asarray(gmm.sample(jax.random.fold_in(key, 1), mix, 200_000))
  mean, cov = gmm.moments(mix)
  np.testing.assert_allclose(x.mean(0), mean, atol=0.03)
  np.testing.assert_allclose(np.cov(x.T), cov, atol=0.06)


def test_pad_keeps_the_density_and_stacks(x64, key):
  m1, m2 = random_mixture(key, k=2), random_mixture(jax.random.fold_in(key, 1), k=4)
  padded = gmm.pad(m1, 4)
  x = jax.random.normal(jax.random.fold_in(key, 2), (10, 2))
  np.testing.assert_allclose(gmm.log_density(padded, x), gmm.log_density(m1, x), rtol=1e-12)
  np.testing.assert_allclose(gmm.score(padded, x), gmm.score(m1, x), rtol=1e-12)
  stacked = jax.tree.map(lambda *a: jnp.stack(a), padded, m2)
  batched = jax.vmap(gmm.log_density, in_axes=(0, None))(stacked, x)
  np.testing.assert_allclose(batched[1], gmm.log_density(m2, x), rtol=1e-12)


@pytest.mark.parametrize("batch", [(), (5,), (2, 3)])
def test_mixture_moments_batched_against_numpy(key, batch):
  """Normalised log-weights (..., K), means (..., K, d), covariances (K, d, d) shared by the batch, against the
  law of total variance written out in numpy float64."""
  k, d = 4, 3
  kw, km, kc = jax.random.split(key, 3)
  log_w = jax.nn.log_softmax(jax.random.normal(kw, batch + (k,)), -1)
  means = jax.random.normal(km, batch + (k, d))
  a = jax.random.normal(kc, (k, d, d))
  covs = a @ jnp.swapaxes(a, -1, -2) + 0.1 * jnp.eye(d)
  got_mean, got_cov = gmm.mixture_moments(log_w, means, covs)
  w, mu, sig = (np.asarray(v, np.float64) for v in (jnp.exp(log_w), means, covs))
  want_mean = np.einsum("...k,...kd->...d", w, mu)
  second = np.einsum("...k,kde->...de", w, sig) + np.einsum("...k,...kd,...ke->...de", w, mu, mu)
  want_cov = second - want_mean[..., :, None] * want_mean[..., None, :]
  np.testing.assert_allclose(got_mean, want_mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got_cov, want_cov, rtol=1e-5, atol=1e-5)
  jitted = jax.jit(gmm.mixture_moments)(log_w, means, covs)
  np.testing.assert_allclose(jitted[1], got_cov, rtol=1e-5, atol=1e-6)


def test_mixture_moments_oracles(x64, key):
  """Against gmm.moments for one mixture, and per-element covariances against a loop."""
  mix = random_mixture(key, k=3, d=2)
  mean, cov = gmm.mixture_moments(jax.nn.log_softmax(mix.log_weights), mix.means, mix.covs)
  want_mean, want_cov = gmm.moments(mix)
  np.testing.assert_allclose(mean, want_mean, rtol=1e-12)
  np.testing.assert_allclose(cov, want_cov, rtol=1e-12)
  mixes = [random_mixture(jax.random.fold_in(key, i)) for i in range(4)]
  stacked = jax.tree.map(lambda *a: jnp.stack(a), *mixes)
  means, covs = gmm.mixture_moments(jax.nn.log_softmax(stacked.log_weights, -1), stacked.means, stacked.covs)
  for i, m in enumerate(mixes):
    np.testing.assert_allclose(means[i], gmm.moments(m)[0], rtol=1e-12)
    np.testing.assert_allclose(covs[i], gmm.moments(m)[1], rtol=1e-12)


def test_bad_inputs_raise_clear_errors(key):
  # Negative weights gave NaN log-weights, and a non-PD covariance a NaN Cholesky factor in every density.
  with pytest.raises(ValueError, match="`weights` must be non-negative"):
    gmm.gaussian_mixture([-0.5, 1.5], [[0.0, 0.0], [1.0, 1.0]], jnp.ones((2,)))
  with pytest.raises(ValueError, match="`covs` must be positive definite, got a smallest eigenvalue of -1 "):
    gmm.gaussian_mixture([0.5, 0.5], [[0.0, 0.0], [1.0, 1.0]], jnp.array([1.0, -1.0]))
  with pytest.raises(ValueError, match="`x` and `mean` must be \\(d,\\) and `cov` \\(d, d\\)"):
    gmm.gaussian_log_density(jnp.ones(3), jnp.zeros(2), jnp.eye(2))
  with pytest.raises(ValueError, match="`beta` must be a positive Python int"):
    gmm.power(random_mixture(key), 1.5)
  with pytest.raises(ValueError, match="`covs` must have shape"):
    gmm.gaussian_mixture([0.5, 0.5], [[0.0, 0.0], [1.0, 1.0]], jnp.ones((3,)))
  with pytest.raises(ValueError, match="`weights` must have shape"):
    gmm.gaussian_mixture([1.0], [[0.0, 0.0], [1.0, 1.0]], jnp.ones((2,)))
  with pytest.raises(ValueError, match="`means` must have shape"):
    gmm.gaussian_mixture([1.0], [0.0, 0.0], jnp.ones((1,)))
  with pytest.raises(ValueError, match="`num_components`"):
    gmm.pad(random_mixture(key, k=3), 2)
  with pytest.raises(ValueError, match="`num_samples`"):
    gmm.sample(key, random_mixture(key), 2.0)


def test_log_mass_bad_mixture(key):
  with pytest.raises(TypeError, match="`mixture` must be a GaussianMixture"):
    gmm.log_mass(jnp.zeros(3))
  stacked = jax.tree.map(lambda *a: jnp.stack(a), random_mixture(key), random_mixture(key))
  with pytest.raises(ValueError, match="`mixture` must hold log_weights \\(K,\\)"):
    gmm.log_mass(stacked)  # summed over the batch too, silently


@pytest.mark.parametrize(
  "log_w, means, covs, match",
  [
    (jnp.log(jnp.full(3, 1 / 3)), jnp.zeros((2, 1)), jnp.ones((2, 1, 1)), "`means` must have shape \\(..., K, d\\)"),
    (jnp.log(jnp.full(2, 0.5)), jnp.zeros(2), jnp.ones((2, 1, 1)), "`means` must have shape"),
    (jnp.log(jnp.full(2, 0.5)), jnp.zeros((2, 1)), jnp.ones((2, 2, 2)), "`covs` must have shape \\(K, d, d\\)"),
    (jnp.log(jnp.full(2, 0.5)), jnp.zeros((2, 1)), jnp.ones((2, 1)), "`covs` must have shape"),
    (jnp.zeros(2), jnp.zeros((2, 1)), jnp.ones((2, 1, 1)), "`log_weights` must be normalised"),
    (jnp.array([0.0, jnp.nan]), jnp.zeros((2, 1)), jnp.ones((2, 1, 1)), "`log_weights` must be normalised"),
  ],
)
def test_mixture_moments_bad_inputs(log_w, means, covs, match):
  with pytest.raises(ValueError, match=match):
    gmm.mixture_moments(log_w, means, covs)


def test_noised_bad_inputs(key):
  mix = random_mixture(key)
  with pytest.raises(TypeError, match="`mixture`"):
    gmm.noised((mix.means, mix.covs), 0.5, 1.0)
  with pytest.raises(ValueError, match="`alpha` must be a scalar"):
    gmm.noised(mix, jnp.ones(2), 1.0)  # would broadcast against the means' last axis (d = 2)
  with pytest.raises(ValueError, match="`sigma` must be a scalar"):
    gmm.noised(mix, 0.5, jnp.ones(2))
  with pytest.raises(ValueError, match="`sigma` must be finite"):
    gmm.noised(mix, 0.5, float("nan"))
  with pytest.raises(ValueError, match="`alpha` and `sigma` must not both be 0"):
    gmm.noised(mix, 0.0, 0.0)
