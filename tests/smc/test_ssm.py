"""State-space models and the Kalman/RTS oracle against dense Gaussian computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from toolkit.smc import ssm


def dense_joint(model, T):
  """Mean and covariance of (x_{0:T-1}, y_{0:T-1}) of a linear-Gaussian model, built from the recursion."""
  p = jax.tree.map(np.asarray, model.params)
  d = p.A.shape[0]
  means, covs = [p.m0], {(0, 0): p.P0}
  for t in range(1, T):
    means.append(p.A @ means[-1])
    covs[(t, t)] = p.A @ covs[(t - 1, t - 1)] @ p.A.T + p.Q
  Sx = np.zeros((T * d, T * d))
  for s in range(T):
    for t in range(s, T):
      block = np.linalg.matrix_power(p.A, t - s) @ covs[(s, s)]  # Cov(x_t, x_s)
      Sx[t * d : (t + 1) * d, s * d : (s + 1) * d] = block
      Sx[s * d : (s + 1) * d, t * d : (t + 1) * d] = block.T
  Cbig = np.kron(np.eye(T), p.C)
  Sy = Cbig @ Sx @ Cbig.T + np.kron(np.eye(T), p.R)
  return np.concatenate(means), Sx, Cbig, Sy


def two_dim_model():
  return ssm.linear_gaussian(
    A=[[0.8, 0.2], [-0.1, 0.9]],
    Q=[[0.4, 0.1], [0.1, 0.3]],
    C=[[1.0, 0.5]],
    R=[[0.6]],
    m0=[0.5, -0.2],
    P0=[[1.0, 0.2], [0.2, 0.8]],
  )


def test_kalman_matches_dense_gaussian_conditioning(x64):
  model, T = two_dim_model(), 25
  _, ys = ssm.simulate(jax.random.key(3), model, T)
  out = ssm.kalman_smoother(model, ys)
  mx, Sx, Cbig, Sy = dense_joint(model, T)
  y = np.asarray(ys).reshape(-1)
  assert float(out.log_likelihood) == pytest.approx(stats.multivariate_normal(Cbig @ mx, Sy).logpdf(y), rel=1e-10)
  gain = Sx @ Cbig.T @ np.linalg.inv(Sy)
  post_mean = (mx + gain @ (y - Cbig @ mx)).reshape(T, 2)
  post_cov = Sx - gain @ Cbig @ Sx
  np.testing.assert_allclose(np.asarray(out.smoothed_means), post_mean, atol=1e-10)
  for t in range(T):
    np.testing.assert_allclose(
      np.asarray(out.smoothed_covs[t]), post_cov[2 * t : 2 * t + 2, 2 * t : 2 * t + 2], atol=1e-10
    )
  for t in range(T - 1):  # Cov(x_t, x_{t+1} | y) = J_t P_{t+1|n}
    np.testing.assert_allclose(
      np.asarray(out.smoothed_cross_covs[t]),
      post_cov[2 * t : 2 * t + 2, 2 * t + 2 : 2 * t + 4],
      atol=1e-10,
    )


def test_fisher_identity_from_rts_moments(x64):
  """d/dA log p(y) = E[Σ (x_{t+1} − A x_t) x_t | y] / Q, from the smoothed moments (scalar model)."""
  A, Q = 0.9, 0.5
  model = ssm.linear_gaussian(A, Q, 1.0, 1.0, 0.0, 1.0)
  _, ys = ssm.simulate(jax.random.key(0), model, 60)
  grad = jax.grad(lambda a: ssm.kalman_smoother(ssm.linear_gaussian(a, Q, 1.0, 1.0, 0.0, 1.0), ys).log_likelihood)
  out = ssm.kalman_smoother(model, ys)
  m, P, cross = (
    out.smoothed_means[:, 0],
    out.smoothed_covs[:, 0, 0],
    out.smoothed_cross_covs[:, 0, 0],
  )
  e_xx_lag = m[:-1] * m[1:] + cross
  e_xx = m[:-1] ** 2 + P[:-1]
  assert float(grad(A)) == pytest.approx(float(jnp.sum(e_xx_lag - A * e_xx) / Q), rel=1e-10)


def test_float32_kalman_agrees_with_float64():
  model = two_dim_model()
  _, ys = ssm.simulate(jax.random.key(1), model, 200)
  out32 = ssm.kalman_smoother(model, ys)
  with jax.enable_x64(True):
    model64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), model)
    out64 = ssm.kalman_smoother(model64, jnp.asarray(ys, jnp.float64))
  assert float(out32.log_likelihood) == pytest.approx(float(out64.log_likelihood), rel=1e-5)
  np.testing.assert_allclose(np.asarray(out32.smoothed_means), np.asarray(out64.smoothed_means), atol=1e-4)


@pytest.mark.parametrize("make", [two_dim_model, lambda: ssm.linear_gaussian(0.9, 0.5, 1.0, 1.0, 0.0, 1.0)])
def test_pairwise_transition_matrix_matches_the_distribution(make, x64):
  model = make()
  x_prev = jax.random.normal(jax.random.key(0), (7, model.state_dim))
  x = jax.random.normal(jax.random.key(1), (5, model.state_dim))
  fast = ssm.transition_log_prob_matrix(model, x_prev, x, 1)
  slow = np.array([[float(ssm.transition_log_prob(model, x_prev[l], x[i], 1)) for l in range(7)] for i in range(5)])
  np.testing.assert_allclose(np.asarray(fast), slow, atol=1e-10)
  # ... and every entry sits below the declared bound the accept-reject kernel relies on.
  assert float(jnp.max(fast)) <= float(model.transition_log_bound(model.params, 1))


@pytest.mark.parametrize("make", [ssm.stochastic_volatility, ssm.growth_model])
def test_nonlinear_models_simulate_from_their_densities(make, x64):
  """Standardised transition residuals of a long simulated path are N(0, 1) (KS test), and the bound holds."""
  model = make()
  xs, ys = ssm.simulate(jax.random.key(2), model, 2000)
  assert xs.shape == (2000, 1) and ys.shape == (2000,)
  t = jnp.arange(1, 2000)
  d = model.transition(model.params, xs[:-1], t[:, None])
  z = np.asarray((xs[1:] - d.base_dist.loc) / d.base_dist.scale)[:, 0]
  assert stats.kstest(z, "norm").pvalue > 1e-3
  assert float(jnp.max(d.log_prob(xs[1:]))) <= float(model.transition_log_bound(model.params, 1))


def test_bad_input_is_rejected():
  # The docstrings' parameter ranges are enforced when the parameters are concrete (phi = 1.5 used to pass).
  with pytest.raises(ValueError, match=r"`phi` must be a finite scalar in \(-1, 1\)"):
    ssm.stochastic_volatility(phi=1.5)
  with pytest.raises(ValueError, match="`sigma` must be a finite scalar > 0"):
    ssm.stochastic_volatility(sigma=-0.3)
  with pytest.raises(ValueError, match="`q` must be a finite scalar > 0"):
    ssm.growth_model(q=-1.0)
  jax.grad(lambda phi: ssm.stochastic_volatility(phi=phi).params.phi)(0.5)  # a traced phi is not checked
  with pytest.raises(ValueError, match="`num_iterations` must be an int >= 0"):
    ssm.kalman_mle(lambda th: ssm.linear_gaussian(th, 1.0, 1.0, 1.0, 0.0, 1.0), jnp.ones(5), 0.5, num_iterations=-1)
  with pytest.raises(ValueError, match="`Q`"):
    ssm.linear_gaussian(np.eye(2), np.eye(3), np.eye(2), np.eye(2), np.zeros(2), np.eye(2))
  with pytest.raises(ValueError, match="`m0`"):
    ssm.linear_gaussian(0.9, 0.5, 1.0, 1.0, [0.0, 1.0], 1.0)
  with pytest.raises(TypeError, match="linear-Gaussian"):
    ssm.kalman_smoother(ssm.stochastic_volatility(), jnp.zeros(5))
  with pytest.raises(ValueError, match="`ys`"):
    ssm.kalman_smoother(two_dim_model(), jnp.zeros((5, 3)))
  with pytest.raises(ValueError, match="num_steps"):
    ssm.simulate(jax.random.key(0), two_dim_model(), 0)
  # A non-PSD Q gave a finite log-likelihood; a complex A lost its imaginary part.
  with pytest.raises(ValueError, match="`Q` must be positive semi-definite"):
    ssm.linear_gaussian(np.eye(2), np.diag([1.0, -0.5]), np.eye(2), np.eye(2), np.zeros(2), np.eye(2))
  with pytest.raises(ValueError, match="`R` must be a finite symmetric"):
    ssm.linear_gaussian(np.eye(2), np.eye(2), np.eye(2), np.array([[1.0, 0.3], [0.0, 1.0]]), np.zeros(2), np.eye(2))
  with pytest.raises(TypeError, match="`A` must be real"):
    ssm.linear_gaussian(np.eye(2) * (1 + 1j), np.eye(2), np.eye(2), np.eye(2), np.zeros(2), np.eye(2))


# ----------------------------------------------------------------------------------------------------------------
# Bad input


def test_bad_input_density_helpers_name_the_argument(key):
  model = ssm.linear_gaussian(0.9, 0.5, 1.0, 1.0, 0.0, 1.0)
  x = jnp.zeros((4, 1))
  with pytest.raises(ValueError, match="`n` must be an int >= 1"):
    ssm.init_sample(key, model, 0)
  with pytest.raises(TypeError, match="`model` must be a toolkit.smc.ssm.StateSpaceModel"):
    ssm.init_sample(key, model.params, 4)  # the parameters, not the model
  # A state of the wrong length broadcast into a finite, meaningless density.
  with pytest.raises(ValueError, match=r"`x` must have shape \(\.\.\., 1\)"):
    ssm.init_log_prob(model, jnp.zeros((4, 3)))
  with pytest.raises(ValueError, match="`x_prev` must have shape"):
    ssm.transition_sample(key, model, jnp.zeros((4, 3)), 1)
  with pytest.raises(ValueError, match="`x` must have shape"):
    ssm.transition_log_prob(model, jnp.zeros(1), jnp.zeros(3), 1)
  with pytest.raises(ValueError, match=r"`x_prev` must have shape \(n, 1\)"):
    ssm.transition_log_prob_matrix(model, jnp.zeros(4), x, 1)
  with pytest.raises(ValueError, match=r"`x` must have shape \(n, 2\)"):
    ssm.transition_log_prob_matrix(two_dim_model(), jnp.zeros((4, 2)), x, 1)
  with pytest.raises(ValueError, match="`y` must be one observation"):
    ssm.observation_log_prob(model, x, jnp.zeros(3), 0)  # broadcast into a finite, meaningless density
  with pytest.raises(ValueError, match="`y` must be one observation"):
    ssm.observation_log_prob(ssm.stochastic_volatility(), x, jnp.zeros(3), 0)
  with pytest.raises(ValueError, match="`x` must have shape"):
    ssm.observation_log_prob(model, jnp.zeros((4, 2)), jnp.zeros(1), 0)
  with pytest.raises(ValueError, match=r"`ys` must have shape \(T, 1\)"):
    ssm.kalman_filter(two_dim_model(), jnp.zeros((5, 3)))
  with pytest.raises(TypeError, match="`model` must be a linear-Gaussian"):
    ssm.kalman_filter(ssm.stochastic_volatility(), jnp.zeros(5))
  # Traced states and observations of the right shapes pass (the checks read shapes only).
  log_g = jax.jit(jax.vmap(lambda x, y: ssm.observation_log_prob(model, x, y, 0)))
  assert log_g(jnp.zeros((2, 4, 1)), jnp.zeros((2, 1))).shape == (2, 4)
