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
