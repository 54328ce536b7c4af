"""Stochastic-approximation MLE driven by PPG reaches the exact (Kalman) MLE; driven by small-N PaRIS it does not."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from toolkit.smc import learning, ssm


def model_fn(theta):
  return ssm.linear_gaussian(theta["A"], jnp.exp(theta["log_Q"]), 1.0, jnp.exp(theta["log_R"]), 0.0, 1.0)


def exact_mle(ys, theta0):
  theta, _ = ssm.kalman_mle(model_fn, ys, theta0)
  nll = lambda th: -ssm.kalman_smoother(model_fn(th), ys).log_likelihood
  assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(jax.grad(nll)(theta))) < 1e-6
  return theta


@pytest.mark.slow
def test_ppg_learning_reaches_the_kalman_mle(x64):
  _, ys = ssm.simulate(jax.random.key(0), model_fn({"A": 0.9, "log_Q": jnp.log(0.5), "log_R": 0.0}), 201)
  theta0 = {"A": jnp.array(0.5), "log_Q": jnp.array(0.0), "log_R": jnp.array(0.5)}
  mle = exact_mle(ys, theta0)

  def run(estimator):
    # Robbins–Monro: a step that decays after the transient, so the iterates settle on the fixed point.
    schedule = optax.piecewise_constant_schedule(0.02, {200: 0.25, 350: 0.4})
    fit = lambda k: (
      learning.fit(
        k,
        model_fn,
        theta0,
        ys,
        optimizer=optax.adam(schedule),
        num_iterations=500,
        num_particles=32,
        estimator=estimator,
      )[1].theta
    )
    trace = jax.jit(jax.vmap(fit))(jax.random.split(jax.random.key(1), 4))
    per_seed = {name: np.asarray(v[:, -150:].mean(1)) for name, v in trace.items()}
    return {name: (v.mean(), v.std(ddof=1) / np.sqrt(len(v))) for name, v in per_seed.items()}

  ppg, paris = run(learning.ppg_estimator), run(learning.paris_estimator)
  for name in mle:  # within the Monte Carlo error over seeds (log Q and log R trade off along a shallow ridge)
    mean, se = ppg[name]
    assert abs(mean - float(mle[name])) < 4 * se + 0.01, (name, ppg, mle)
  # PaRIS's O(1/N) score bias at N = 32 moves its fixed point visibly away (log Q by ~0.5).
  mean, se = paris["log_Q"]
  assert abs(mean - float(mle["log_Q"])) > 0.2 + 4 * se


def test_bad_input_is_rejected(key):
  _, ys = ssm.simulate(key, model_fn({"A": 0.9, "log_Q": 0.0, "log_R": 0.0}), 5)
  theta0 = {"A": jnp.array(0.5), "log_Q": jnp.array(0.0), "log_R": jnp.array(0.5)}
  with pytest.raises(TypeError, match="estimator"):  # an estimator is a function, never a name
    learning.fit(
      key,
      model_fn,
      theta0,
      ys,
      optimizer=optax.adam(0.01),
      num_iterations=2,
      num_particles=8,
      estimator="smc",
    )
  with pytest.raises(ValueError, match="num_iterations"):
    learning.fit(key, model_fn, theta0, ys, optimizer=optax.adam(0.01), num_iterations=0, num_particles=8)


def test_regression_optimum_maximises_the_expected_log_density(x64):
  """The closed-form KL(p ‖ q_λ) minimiser against a brute-force one: E_p[log q_λ] by exact smoothing moments
  is maximal there (its gradient, from the RTS moments through autodiff, vanishes)."""
  model = ssm.linear_gaussian(0.9, 0.5, 1.0, 1.0, 0.0, 1.0)
  _, ys = ssm.simulate(jax.random.key(4), model, 41)
  ko = ssm.kalman_smoother(model, ys)
  m, P, cross = ko.smoothed_means[:, 0], ko.smoothed_covs[:, 0, 0], ko.smoothed_cross_covs[:, 0, 0]

  def expected_log_q(lam):
    # E[log N(x_t; a x_{t-1} + b y_t + c, s²)] in closed form from first and second smoothed moments.
    mean_resid = m[1:] - (lam.a * m[:-1] + lam.b * ys[1:, 0] + lam.c)
    var_resid = P[1:] + lam.a**2 * P[:-1] - 2 * lam.a * cross
    s2 = jnp.exp(2 * lam.log_sd)
    later = jnp.sum(-0.5 * jnp.log(2 * jnp.pi * s2) - 0.5 * (mean_resid**2 + var_resid) / s2)
    s02 = jnp.exp(2 * lam.log_sd0)
    first = -0.5 * jnp.log(2 * jnp.pi * s02) - 0.5 * ((m[0] - lam.mu0) ** 2 + P[0]) / s02
    return first + later

  optimum = learning.linear_gaussian_regression_optimum(model, ys)
  grad = jax.grad(expected_log_q)(optimum)
  assert max(abs(float(g)) for g in grad) < 1e-8
  nearby = jax.tree.map(lambda v: v + 0.01, optimum)
  assert float(expected_log_q(nearby)) < float(expected_log_q(optimum))


@pytest.mark.slow
def test_markov_score_climbing_with_ppg_reaches_the_kl_minimiser(x64):
  model = ssm.linear_gaussian(0.9, 0.5, 1.0, 1.0, 0.0, 1.0)
  _, ys = ssm.simulate(jax.random.key(0), model, 201)
  optimum = learning.linear_gaussian_regression_optimum(model, ys)
  proposal = learning.linear_gaussian_regression_proposal()
  schedule = optax.piecewise_constant_schedule(0.05, {200: 0.25, 350: 0.4})
  fit = lambda k: (
    learning.markov_score_climbing(
      k, model, ys, proposal, optimizer=optax.adam(schedule), num_iterations=500, num_particles=16
    )[1].theta
  )
  trace = jax.jit(jax.vmap(fit))(jax.random.split(jax.random.key(1), 4))
  for name, v in trace._asdict().items():
    per_seed = np.asarray(v[:, -150:].mean(1))
    se = per_seed.std(ddof=1) / 2
    assert abs(per_seed.mean() - float(getattr(optimum, name))) < 4 * se + 0.01, name


# ---------------------------------------------------------------------------------------------------------------
# Bad input


def test_bad_input_estimators_name_the_argument(key):
  model = model_fn({"A": 0.9, "log_Q": 0.0, "log_R": 0.0})
  ys = jnp.zeros((5, 1))
  theta = {"A": jnp.array(0.5), "log_Q": jnp.array(0.0), "log_R": jnp.array(0.5)}
  sum_x = lambda x_prev, x, t: x[0]
  with pytest.raises(ValueError, match="`num_particles`"):
    learning.paris_estimator(key, model, ys, sum_x, ys, num_particles=1)
  with pytest.raises(ValueError, match=r"`reference` must have shape \(T, state_dim\)"):
    learning.ppg_estimator(key, model, ys, sum_x, jnp.zeros((3, 1)), num_particles=4)
  with pytest.raises(TypeError, match="`estimator`"):
    learning.score_estimate(key, model_fn, theta, ys, ys, num_particles=4, estimator="ppg")
  with pytest.raises(TypeError, match="`model_fn` must be a function"):
    learning.score_estimate(key, model, theta, ys, ys, num_particles=4)  # the model, not theta -> model


def test_bad_input_score_climbing_and_proposals_name_the_argument(key):
  model = ssm.linear_gaussian(0.9, 0.5, 1.0, 1.0, 0.0, 1.0)
  ys = jnp.zeros((5, 1))
  proposal = learning.linear_gaussian_regression_proposal()
  with pytest.raises(TypeError, match="`proposal` must be a toolkit.smc.paris.Proposal"):
    learning.proposal_score_functional(proposal.params, model, ys)
  with pytest.raises(TypeError, match="`model` must be a toolkit.smc.ssm.StateSpaceModel"):
    learning.proposal_score_functional(proposal, model.params, ys)
  with pytest.raises(TypeError, match="`proposal` must be a toolkit.smc.paris.Proposal"):
    learning.markov_score_climbing(key, model, ys, None, optimizer=optax.adam(0.01), num_iterations=2, num_particles=4)
  with pytest.raises(ValueError, match="`num_iterations`"):
    learning.markov_score_climbing(
      key, model, ys, proposal, optimizer=optax.adam(0.01), num_iterations=0, num_particles=4
    )
  with pytest.raises(TypeError, match="`params` must be a LinearGaussianProposalParams"):
    learning.linear_gaussian_regression_proposal({"a": 0.5})
  with pytest.raises(ValueError, match=r"`params.a` must be a scalar"):
    learning.linear_gaussian_regression_proposal(proposal.params._replace(a=jnp.zeros(2)))
  # A 2-D state: the regression read its first coordinate and returned a finite, wrong optimum.
  model_2d = ssm.linear_gaussian(0.9 * np.eye(2), np.eye(2), [[1.0, 0.0]], 1.0, np.zeros(2), np.eye(2))
  with pytest.raises(ValueError, match="`model` must be a scalar linear-Gaussian model"):
    learning.linear_gaussian_regression_optimum(model_2d, ys)
  with pytest.raises(TypeError, match="`model` must be a linear-Gaussian"):
    learning.linear_gaussian_regression_optimum(ssm.stochastic_volatility(), ys)
