"""The closed-form Brenier map between Gaussians, the one matrix square root, and L2-UVP."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from toolkit.ot import benchmarks, metrics


def test_closed_form_brenier_map_pushes_forward_and_is_a_gradient(key):
  """The oracle itself: T*(x) = μ1 + A(x - μ0) with A symmetric positive definite and A Σ0 A = Σ1."""
  pair = benchmarks.random_gaussian_pair(key, 5)
  x = np.asarray(pair.sample_source(key, 200_000))
  y = np.asarray(pair.optimal_map(x))
  ref = np.asarray(pair.sample_target(key, 200_000))
  np.testing.assert_allclose(np.cov(y.T), np.cov(ref.T), atol=0.05)
  np.testing.assert_allclose(y.mean(0), ref.mean(0), atol=0.02)
  np.testing.assert_allclose(np.trace(np.cov(ref.T)), pair.target_variance, rtol=0.02)


def test_brenier_matrix_identities(x64, key):
  """A symmetric positive definite, A Σ0 A = Σ1 (arXiv 1803.00567, Remark 2.31), to rounding in float64."""
  pair = benchmarks.random_gaussian_pair(key, 6)
  a = np.asarray(pair.map_matrix)
  np.testing.assert_allclose(a, a.T, atol=1e-12)
  assert np.all(np.linalg.eigvalsh(a) > 0)
  np.testing.assert_allclose(a @ np.asarray(pair.cov0) @ a, pair.cov1, atol=1e-10)
  # d = 1: A = σ1/σ0.
  one = benchmarks.gaussian_pair(jnp.zeros(1), jnp.array([[4.0]]), jnp.ones(1), jnp.array([[9.0]]))
  np.testing.assert_allclose(one.map_matrix, [[1.5]], rtol=1e-12)
  np.testing.assert_allclose(one.optimal_map(jnp.array([[2.0]])), [[4.0]], rtol=1e-12)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_sqrtm_psd_against_scipy(key, dtype):
  with jax.enable_x64(dtype == jnp.float64):
    a = jax.random.normal(key, (2, 5, 5), dtype)
    spd = a @ jnp.swapaxes(a, -1, -2) + 0.1 * jnp.eye(5, dtype=dtype)
    root = metrics.sqrtm_psd(spd)
    assert root.dtype == dtype and root.shape == (2, 5, 5)
    tol = 1e-4 if dtype == jnp.float32 else 1e-12
    for i in range(2):
      np.testing.assert_allclose(root[i], scipy.linalg.sqrtm(np.asarray(spd[i], np.float64)).real, atol=tol)
    np.testing.assert_allclose(root @ root, spd, atol=10 * tol)


def test_sqrtm_psd_is_the_eigh_root_the_experiments_used(key):
  """Bit for bit the square root the Monge-gap experiment had (eigh without clipping), so its figures stay."""
  a = jax.random.normal(key, (4, 4)) / 2.0
  s = a @ a.T + 0.3 * jnp.eye(4)
  w, v = jnp.linalg.eigh(s)
  np.testing.assert_array_equal(metrics.sqrtm_psd(s), (v * jnp.sqrt(w)) @ v.T)


def test_l2_uvp(key):
  pair = benchmarks.random_gaussian_pair(key, 3)
  x = pair.sample_source(key, 1000)
  assert float(metrics.l2_uvp(pair.optimal_map(x), pair.optimal_map(x), pair.target_variance)) == 0.0
  # The identity map from N(0, Σ0) to N(μ1, Σ1) against T*: 100 E‖x - T*(x)‖² / tr Σ1.
  expected = 100 * np.mean(np.sum((np.asarray(x) - np.asarray(pair.optimal_map(x))) ** 2, 1)) / np.trace(pair.cov1)
  np.testing.assert_allclose(metrics.l2_uvp(x, pair.optimal_map(x), pair.target_variance), expected, rtol=1e-5)


def test_bad_input():
  with pytest.raises(ValueError, match="cov1"):
    benchmarks.gaussian_pair(jnp.zeros(2), jnp.eye(2), jnp.zeros(2), jnp.eye(3))
  with pytest.raises(ValueError, match="dim"):
    benchmarks.random_gaussian_pair(jax.random.key(0), 0)
  with pytest.raises(ValueError, match="num_potential_components"):
    benchmarks.mixture_benchmark(jax.random.key(0), 2, 1.0, num_potential_components=0)
  # The metrics name their arguments instead of failing in dot_general or returning NaN.
  x = jax.random.normal(jax.random.key(1), (20, 3))
  with pytest.raises(ValueError, match="`matrix` must be square"):
    metrics.sqrtm_psd(jnp.ones((2, 3)))
  with pytest.raises(ValueError, match="`samples` must have shape \\(..., n, d\\) with n >= 2"):
    metrics.gaussian_fit(x[:1])
  with pytest.raises(ValueError, match="`samples` must be \\(n, d\\) and `true_mean` \\(d,\\)"):
    metrics.bw_uvp(x, jnp.zeros(2), jnp.eye(2))
  with pytest.raises(ValueError, match="`mean_b` must be \\(..., d\\) and `cov_b`"):
    metrics.bures_wasserstein(jnp.zeros(2), jnp.eye(2), jnp.zeros(2), jnp.eye(3))
  with pytest.raises(ValueError, match="`cov_a` must be positive semi-definite"):
    metrics.bures_wasserstein(jnp.zeros(2), -jnp.eye(2), jnp.zeros(2), jnp.eye(2))
  with pytest.raises(ValueError, match="`mapped` and `optimal` must be \\(n, d\\) arrays of one shape"):
    metrics.l2_uvp(x, x[:5], 1.0)
  with pytest.raises(ValueError, match="`target_variance` must be > 0"):
    metrics.l2_uvp(x, x, 0.0)
  # Rounding-level negative eigenvalues (a fitted covariance of collinear samples) are still accepted.
  _, cov = metrics.gaussian_fit(jnp.stack([x[:, 0], 2 * x[:, 0], -x[:, 0]], 1))
  assert np.isfinite(float(metrics.bures_wasserstein(jnp.zeros(3), cov, jnp.zeros(3), jnp.eye(3))))


@pytest.mark.parametrize(
  "cov0, cov1, error, match",
  [
    (np.ones(2), np.eye(2), ValueError, "`cov0` must be a square matrix"),
    (np.eye(2), np.ones((2, 3)), ValueError, "`cov1` must be a square matrix"),
    (np.zeros((0, 0)), np.zeros((0, 0)), ValueError, "`cov0` must be a square matrix .* d >= 1"),
    (np.eye(2), np.eye(3), ValueError, "`cov0` and `cov1` must have the same d"),
    (np.stack([np.eye(2)] * 3), np.stack([np.eye(2)] * 2), ValueError, "`cov0` and `cov1` must have leading axes"),
    (np.eye(2, dtype=bool), np.eye(2), TypeError, "`cov0` must be a real-valued covariance"),
    (np.eye(2), np.eye(2, dtype=np.complex64), TypeError, "`cov1` must be a real-valued covariance"),
    # A singular or indefinite Σ0 gave a garbage (asymmetric) A from the inverse of its clipped square root.
    (np.ones((2, 2)), np.eye(2), ValueError, "`cov0` must be positive definite"),
    (-np.eye(2), np.eye(2), ValueError, "`cov0` must be positive definite"),
    # An asymmetric one was silently symmetrised by the square root.
    (np.array([[1.0, 0.5], [0.0, 1.0]]), np.eye(2), ValueError, "`cov0` must be a symmetric matrix"),
    (np.eye(2), np.array([[1.0, 0.5], [0.0, 1.0]]), ValueError, "`cov1` must be a symmetric matrix"),
    (np.eye(2), -np.eye(2), ValueError, "`cov1` must be positive semi-definite"),
    (np.eye(2), np.array([[1.0, np.nan], [np.nan, 1.0]]), ValueError, "`cov1` must be finite"),
    (np.array([[np.inf, 0.0], [0.0, 1.0]]), np.eye(2), ValueError, "`cov0` must be finite"),
  ],
)
def test_gaussian_brenier_matrix_bad_input(cov0, cov1, error, match):
  with pytest.raises(error, match=match):
    benchmarks.gaussian_brenier_matrix(cov0, cov1)


def test_gaussian_brenier_matrix_accepts_a_singular_target_and_tracers():
  """A singular Σ1 is a valid (degenerate) target: A is still the Brenier map, A Σ0 A = Σ1. Under jit the values
  are traced and only the shapes are checked."""
  cov0, cov1 = jnp.array([[2.0, 0.5], [0.5, 1.0]]), jnp.array([[1.0, 1.0], [1.0, 1.0]])
  a = benchmarks.gaussian_brenier_matrix(cov0, cov1)
  np.testing.assert_allclose(a @ cov0 @ a, cov1, atol=1e-5)
  np.testing.assert_allclose(jax.jit(benchmarks.gaussian_brenier_matrix)(cov0, cov1), a, atol=1e-6)
  # Batches over leading axes still work.
  batched = benchmarks.gaussian_brenier_matrix(jnp.stack([cov0, 2.0 * cov0]), cov1)
  np.testing.assert_allclose(batched[0], a, atol=1e-6)


def _small_benchmark():
  return benchmarks.mixture_benchmark(jax.random.key(0), 2, 1.0)


def _asymmetric(covs):
  return covs.at[:, 0, 1].add(0.1)


@pytest.mark.parametrize(
  "mutate, error, match",
  [
    (lambda b: tuple(b), TypeError, "`bench` must be a MixtureBenchmark"),
    (lambda b: b._replace(epsilon=jnp.asarray(0.0)), ValueError, "`bench.epsilon` must be a scalar > 0"),
    (lambda b: b._replace(epsilon=-1.0), ValueError, "`bench.epsilon` must be a scalar > 0"),
    (lambda b: b._replace(epsilon=jnp.asarray(np.nan)), ValueError, "`bench.epsilon` must be a scalar > 0"),
    (lambda b: b._replace(epsilon=jnp.ones(2)), ValueError, "`bench.epsilon` must be a scalar"),
    (lambda b: b._replace(input_means=b.input_means[0]), ValueError, "`bench.input_means` must have shape \\(M, d\\)"),
    (lambda b: b._replace(potential_means=jnp.zeros((5, 3))), ValueError, "`bench.potential_means` must have shape"),
    (lambda b: b._replace(input_covs=b.input_covs[:2]), ValueError, "`bench.input_covs` must have shape \\(3, 2, 2\\)"),
    (lambda b: b._replace(potential_log_probs=jnp.zeros(4)), ValueError, "`bench.potential_log_probs` must have shape"),
    (lambda b: b._replace(input_means=jnp.zeros((3, 2), jnp.int32)), TypeError, "`bench.input_means` must be floating"),
    # A NaN log probability made jax.random.categorical pick a component silently.
    (
      lambda b: b._replace(potential_log_probs=b.potential_log_probs.at[1].set(jnp.nan)),
      ValueError,
      "`bench.potential_log_probs` must be log-probabilities",
    ),
    (
      lambda b: b._replace(input_log_probs=jnp.full(3, -jnp.inf)),
      ValueError,
      "`bench.input_log_probs` must be log-probabilities",
    ),
    (
      lambda b: b._replace(input_means=b.input_means.at[0, 0].set(jnp.nan)),
      ValueError,
      "`bench.input_means` must be finite",
    ),
    # An asymmetric covariance was read by its lower triangle alone (Cholesky).
    (lambda b: b._replace(input_covs=_asymmetric(b.input_covs)), ValueError, "`bench.input_covs` must be a symmetric"),
    (lambda b: b._replace(potential_covs=-b.potential_covs), ValueError, "`bench.potential_covs` must be positive"),
  ],
)
def test_benchmark_samplers_bad_input(mutate, error, match):
  bench = _small_benchmark()
  with pytest.raises(error, match=match):
    benchmarks.benchmark_samplers(mutate(bench))


def test_benchmark_samplers_checks_only_shapes_under_jit():
  """A traced benchmark (a jitted caller) skips the value checks but still gets the shape checks."""
  bench = _small_benchmark()
  samples = jax.jit(lambda b: benchmarks.benchmark_samplers(b)[0](jax.random.key(1), 4))(bench)
  assert samples.shape == (4, 2)
  bad = bench._replace(input_covs=bench.input_covs[:2])
  with pytest.raises(ValueError, match="`bench.input_covs` must have shape"):
    jax.jit(lambda b: benchmarks.benchmark_samplers(b)[0](jax.random.key(1), 4))(bad)
