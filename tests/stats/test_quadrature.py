"""The grid oracle against a Gaussian whose moments and normaliser are known, and its draws."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toolkit.stats import quadrature

MEAN = np.array([0.7, -0.4])
COV = np.array([[1.2, 0.5], [0.5, 0.8]])
LOG_Z = 2.5


def log_density(x):
  return LOG_Z + jax.scipy.stats.multivariate_normal.logpdf(x, jnp.asarray(MEAN), jnp.asarray(COV))


def test_grid_oracle_of_a_gaussian():
  oracle = quadrature.grid_oracle(log_density, 8.0, 401)
  assert oracle.edge_mass < 1e-8
  np.testing.assert_allclose(oracle.log_normalizer, LOG_Z, atol=1e-4)
  np.testing.assert_allclose(oracle.mean, MEAN, atol=1e-4)
  np.testing.assert_allclose(oracle.cov, COV, atol=1e-4)
  np.testing.assert_allclose(jax.nn.logsumexp(oracle.log_probs), 0.0, atol=1e-5)
  assert oracle.points.shape == (401**2, 2)


def test_grid_that_cuts_the_target_reports_edge_mass():
  oracle = quadrature.grid_oracle(log_density, 1.5, 101)
  assert oracle.edge_mass > 1e-3


def test_grid_sample_has_the_oracle_moments(key):
  oracle = quadrature.grid_oracle(log_density, 8.0, 201)
  x = np.asarray(quadrature.grid_sample(key, oracle, 200_000))
  np.testing.assert_allclose(x.mean(0), oracle.mean, atol=0.02)
  np.testing.assert_allclose(np.cov(x.T), oracle.cov, atol=0.05)


def test_bad_inputs():
  with pytest.raises(ValueError, match="`num_points`"):
    quadrature.grid_oracle(log_density, 8.0, 1)
  with pytest.raises(ValueError, match="`half_width`"):
    quadrature.grid_oracle(log_density, -1.0, 11)


def test_grid_sample_bad_inputs(key):
  oracle = quadrature.grid_oracle(log_density, 8.0, 11)
  for num_samples in (0, 2.0, True):
    with pytest.raises(ValueError, match="`num_samples` must be an int >= 1"):
      quadrature.grid_sample(key, oracle, num_samples)
  with pytest.raises(TypeError, match="`oracle` must be a GridOracle"):
    quadrature.grid_sample(key, oracle.log_probs, 10)
  broken = quadrature.grid_oracle(lambda x: jnp.where(x[:, 0] > 0, jnp.nan, 0.0), 8.0, 11)
  with pytest.raises(ValueError, match="`oracle.log_probs` contains NaN"):
    quadrature.grid_sample(key, broken, 10)
