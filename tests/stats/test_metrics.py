"""Weighted moments, moment errors and the energy distance against numpy and closed forms."""

import jax
import numpy as np
import pytest
from scipy import stats

from toolkit.stats import metrics


def test_weighted_moments(x64, key):
  x = jax.random.normal(key, (100, 3))
  lw = jax.random.normal(jax.random.fold_in(key, 1), (100,))
  w = np.exp(np.asarray(lw) - np.max(lw))
  w /= w.sum()
  mean, cov = metrics.weighted_moments(x, lw)
  np.testing.assert_allclose(mean, w @ np.asarray(x), rtol=1e-12)
  np.testing.assert_allclose(cov, np.cov(np.asarray(x).T, aweights=w, bias=True), rtol=1e-10)


def test_moment_errors():
  errs = metrics.moment_errors(np.array([1.2, 0.0]), 1.1 * np.eye(2), np.array([1.0, 0.0]), np.eye(2))
  np.testing.assert_allclose(errs["mean_error"], 0.2 / np.sqrt(3.0))
  np.testing.assert_allclose(errs["cov_error"], 0.1)
  m2 = np.eye(2) + np.outer([1.0, 0.0], [1.0, 0.0])
  m2_hat = 1.1 * np.eye(2) + np.outer([1.2, 0.0], [1.2, 0.0])
  np.testing.assert_allclose(errs["second_moment_error"], np.linalg.norm(m2_hat - m2) / np.linalg.norm(m2))
  assert errs["moment_error"] == max(errs["mean_error"], errs["second_moment_error"])
  with pytest.raises(ValueError, match="shapes"):
    metrics.moment_errors(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2))


def test_energy_distance_simple_cases(key):
  x = jax.random.normal(key, (500, 2))
  assert abs(float(metrics.energy_distance(x, x))) < 1e-5
  # Two point masses: 2|a - b| - 0 - 0.
  a, b = np.zeros((3, 2)), np.tile([3.0, 4.0], (3, 1))
  np.testing.assert_allclose(metrics.energy_distance(a, b), 10.0, rtol=1e-5)
  assert metrics.energy_distance(x, x + 1.0) > 0.5
  with pytest.raises(ValueError, match="`x` and `y`"):
    metrics.energy_distance(x, x[:, :1])


def test_energy_distance_equals_brute_force_numpy(x64, key):
  x = np.asarray(jax.random.normal(key, (60, 3)))
  y = np.asarray(1.5 * jax.random.normal(jax.random.fold_in(key, 1), (45, 3)) + 0.3)

  def mean_dist(a, b):
    return np.mean([np.linalg.norm(p - q) for p in a for q in b])

  expected = 2 * mean_dist(x, y) - mean_dist(x, x) - mean_dist(y, y)
  np.testing.assert_allclose(metrics.energy_distance(x, y), expected, rtol=1e-10)


def test_energy_distance_of_two_gaussians_in_1d(key):
  """2E|X - Y| - E|X - X'| - E|Y - Y'| for X ~ N(μ₁, σ₁²), Y ~ N(μ₂, σ₂²): E|Z| of Z ~ N(m, s²) is
  s√(2/π) exp(-m²/2s²) + m(1 - 2Φ(-m/s)), and E|X - X'| = 2σ₁/√π. The V-statistic's diagonal scales the
  within-sample terms by (1 - 1/n)."""
  mu1, s1, mu2, s2, n = 0.0, 1.0, 1.0, 0.5, 4000
  m, s = mu1 - mu2, np.hypot(s1, s2)
  e_xy = s * np.sqrt(2 / np.pi) * np.exp(-(m**2) / (2 * s**2)) + m * (1 - 2 * stats.norm.cdf(-m / s))
  expected = 2 * e_xy - (1 - 1 / n) * 2 * (s1 + s2) / np.sqrt(np.pi)
  draws = []
  for i in range(4):
    kx, ky = jax.random.split(jax.random.fold_in(key, i))
    x = mu1 + s1 * jax.random.normal(kx, (n, 1))
    y = mu2 + s2 * jax.random.normal(ky, (n, 1))
    draws.append(float(metrics.energy_distance(x, y)))
  np.testing.assert_allclose(np.mean(draws), expected, atol=0.02)
