"""Tests of toolkit.stats.kde_theory: the thresholds against scipy root finding and the formulas written otherwise."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, optimize

from toolkit.stats import kde, kde_theory


def _rate_by_tilting(h, m, sigma=1.0, x2=1.0):
  """KL per dimension of the z^m-tilted coordinate law from N(0, σ²), by numerical integration at x² = σ² x2."""
  x = sigma * np.sqrt(x2)

  def log_w(y):
    return -0.5 * y**2 / sigma**2 - m * (x - y) ** 2 / (2 * h**2)

  z = integrate.quad(lambda y: np.exp(log_w(y)), -30, 30)[0]
  mean_log_ratio = integrate.quad(
    lambda y: np.exp(log_w(y)) / z * (log_w(y) - np.log(z) + 0.5 * y**2 / sigma**2 + 0.5 * np.log(2 * np.pi)),
    -30,
    30,
  )[0]
  return mean_log_ratio + 0.5 * np.log(2 * np.pi * sigma**2) - 0.5 * np.log(2 * np.pi)


@pytest.mark.parametrize("h,m", [(0.7, 1.0), (1.3, 2.0), (2.5, 1.5)])
def test_rate_function_is_the_tilted_kl(h, m):
  # Averaged over x² (the rate is linear in x², so x² = 1 gives the average).
  assert float(kde_theory.rate_function(h, m)) == pytest.approx(_rate_by_tilting(h, m), rel=1e-6)


@pytest.mark.parametrize("alpha", [0.05, 0.2, 0.4, 1.0, 3.0])
def test_thresholds_solve_their_equations(alpha):
  def rate(a):
    return 0.5 * (np.log(a) - (a - 1) / a**2) - alpha

  a = optimize.brentq(rate, 1 + 1e-14, 1e8, xtol=1e-14)
  assert float(kde_theory.h_glass(alpha)) == pytest.approx(1 / np.sqrt(a - 1), rel=1e-5)
  assert float(kde_theory.h_clt(alpha)) == pytest.approx(np.sqrt(2 / (a - 1)), rel=1e-5)
  assert float(kde_theory.rate_function(kde_theory.h_glass(alpha), 1.0)) == pytest.approx(alpha, rel=1e-5)
  assert float(kde_theory.rate_function(kde_theory.h_clt(alpha), 2.0)) == pytest.approx(alpha, rel=1e-5)
  assert float(kde_theory.tail_index(kde_theory.h_clt(alpha), alpha)) == pytest.approx(2.0, rel=1e-5)


def test_thresholds_scale_with_sigma_and_decrease_with_alpha():
  alphas = jnp.array([0.1, 0.2, 0.4, 0.8])
  hg = kde_theory.h_glass(alphas)
  assert np.all(np.diff(np.asarray(hg)) < 0)
  np.testing.assert_allclose(kde_theory.h_glass(alphas, scale=3.0), 3.0 * hg, rtol=1e-6)
  np.testing.assert_allclose(jax.jit(kde_theory.h_glass)(alphas), hg, rtol=1e-6)


def test_asymptotic_kl_is_continuous_and_minimal_at_h_kl():
  for alpha in (0.15, 0.4):
    hg = float(kde_theory.h_glass(alpha))
    below, above = kde_theory.asymptotic_kl_per_dim(jnp.array([hg * (1 - 1e-6), hg * (1 + 1e-6)]), alpha)
    assert float(below) == pytest.approx(float(above), abs=1e-5)
    hs = jnp.linspace(0.3 * hg, 2.0 * hg, 20001)
    best = float(hs[jnp.argmin(kde_theory.asymptotic_kl_per_dim(hs, alpha))])
    assert best == pytest.approx(float(kde_theory.h_kl(alpha)), rel=1e-3)
    assert best < hg


def test_mean_density_closed_form_by_monte_carlo(x64):
  # E_D ρ̂_h(x) = N(x | 0, (1 + h²) I): average the estimate over many databases (d = 3, so the mean is reachable).
  rng = np.random.default_rng(0)
  x = rng.standard_normal((5, 3))
  y = rng.standard_normal((200_000, 3))
  est = kde.log_density(x, y, 0.8)  # one huge database = the average over many small ones
  np.testing.assert_allclose(est, kde_theory.log_mean_density(x, 0.8), atol=0.02)


def test_naive_threshold_solves_the_variance_equation():
  alpha = 0.2
  h = float(kde_theory.naive_clt_bandwidth(alpha))
  d = 50
  # (1/d) log(E z² / E z²) at |x|² = d by the Gaussian convolution identity, written per dimension.
  s = h**2
  log_ez = -0.5 * np.log(2 * np.pi * s) - 0.5 * np.log1p(1 / s) - 1 / (2 * (s + 1))
  log_ez2 = -np.log(2 * np.pi * s) - 0.5 * np.log1p(2 / s) - 2 / (2 * (s + 2))
  assert (d * log_ez2 - 2 * d * log_ez) / d == pytest.approx(alpha, rel=1e-5)
  assert h < float(kde_theory.h_clt(alpha))


def test_bad_input():
  with pytest.raises(ValueError, match="`alpha` must be > 0"):
    kde_theory.h_glass(0.0)
  with pytest.raises(ValueError, match="`scale` must be > 0"):
    kde_theory.h_clt(0.3, scale=-1.0)
  with pytest.raises(ValueError, match="`points` must have shape"):
    kde_theory.log_mean_density(jnp.zeros(3), 1.0)
  for fn in (
    kde_theory.rate_function,
    kde_theory.annealed_kl_per_dim,
    lambda h: kde_theory.tail_index(h, 0.2),
    lambda h: kde_theory.asymptotic_kl_per_dim(h, 0.2),
  ):
    with pytest.raises(ValueError, match="`bandwidth` must be > 0"):
      fn(jnp.array([0.5, -1.0]))
  with pytest.raises(ValueError, match="`order` must be > 0"):
    kde_theory.rate_function(1.0, 0.0)


@pytest.mark.parametrize("alpha", [0.0, -0.2, float("nan"), float("inf"), np.array([0.2, -0.1])])
def test_thresholds_bad_alpha(alpha):
  with pytest.raises(ValueError, match="`alpha` must be > 0"):
    kde_theory.h_kl(alpha)
  with pytest.raises(ValueError, match="`alpha` must be > 0"):
    kde_theory.naive_clt_bandwidth(alpha)
  with pytest.raises(ValueError, match="`alpha` must be > 0"):
    kde_theory.tail_index(1.0, alpha)
  with pytest.raises(ValueError, match="`alpha` must be > 0"):
    kde_theory.asymptotic_kl_per_dim(1.0, alpha)


def test_kl_curves_bad_bandwidth_and_scale():
  with pytest.raises(ValueError, match="`bandwidth` must be > 0"):
    kde_theory.annealed_kl_per_dim(jnp.array([0.5, 0.0]))
  with pytest.raises(ValueError, match="`bandwidth` must be > 0"):
    kde_theory.asymptotic_kl_per_dim(jnp.array([0.5, -1.0]), 0.2)
  with pytest.raises(ValueError, match="`bandwidth` must be > 0"):
    kde_theory.tail_index(float("nan"), 0.2)
  with pytest.raises(ValueError, match="`scale` must be > 0"):
    kde_theory.annealed_kl_per_dim(1.0, scale=0.0)
  with pytest.raises(ValueError, match="`scale` must be > 0"):
    kde_theory.asymptotic_kl_per_dim(1.0, 0.2, scale=-1.0)
  with pytest.raises(ValueError, match="`scale` must be > 0"):
    kde_theory.h_kl(0.2, scale=float("nan"))
  with pytest.raises(ValueError, match="`scale` must be > 0"):
    kde_theory.naive_clt_bandwidth(0.2, scale=np.array([1.0, 0.0]))
  with pytest.raises(ValueError, match="`scale` must be > 0"):
    kde_theory.tail_index(1.0, 0.2, scale=0.0)
