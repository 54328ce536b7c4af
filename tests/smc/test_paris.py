"""PaRIS against the Kalman/RTS smoother, the exact backward kernel, autodiff of the Kalman likelihood and the
`particles` library."""

import json
import os
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toolkit.smc import paris
from toolkit.smc import ssm

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PARTICLES_PYTHON = os.path.join(REPO, ".venv-particles", "bin", "python")


def lag_product(x_prev, x, t):
  return jnp.where(t == 0, 0.0, x_prev[0] * x[0])


def lgssm(T=51, seed=0):
  model = ssm.linear_gaussian(0.9, 0.5, 1.0, 1.0, 0.0, 1.0)
  _, ys = ssm.simulate(jax.random.key(seed), model, T)
  out = ssm.kalman_smoother(model, ys)
  m, cross = out.smoothed_means[:, 0], out.smoothed_cross_covs[:, 0, 0]
  truth = {"lag_product": float(jnp.sum(m[:-1] * m[1:] + cross)), "sum_x": float(jnp.sum(m)),
           "log_likelihood": float(out.log_likelihood)}
  return model, ys, truth


def replicate(fn, n_reps, seed=1):
  return jax.jit(jax.vmap(fn))(jax.random.split(jax.random.key(seed), n_reps))


def test_estimates_match_the_rts_smoother(x64):
  model, ys, truth = lgssm()
  fn = lambda k: paris.paris(k, model, ys, lambda xp, x, t: jnp.stack([lag_product(xp, x, t), x[0]]),
                             n_particles=256)
  out = replicate(fn, 40)
  est = np.asarray(out.estimate)
  se = est.std(0) / np.sqrt(len(est))
  assert abs(est[:, 0].mean() - truth["lag_product"]) < 4 * se[0] + 0.5  # + the O(1/N) bias at N = 256
  assert abs(est[:, 1].mean() - truth["sum_x"]) < 4 * se[1] + 0.2
  # log Ẑ is unbiased for Z on the natural scale; on the log scale it sits slightly below log Z (Jensen).
  ll = np.asarray(out.log_likelihood)
  assert truth["log_likelihood"] - 1.0 < ll.mean() < truth["log_likelihood"] + 4 * ll.std() / np.sqrt(len(ll))


@pytest.mark.slow
def test_bias_shrinks_with_n_and_k1_degenerates(x64):
  """The self-normalised bias is O(1/N) and clearly negative at N = 16; K = 1 has a larger variance than K = 2."""
  model, ys, truth = lgssm(T=101)
  stats = {}
  for n, k in [(16, 2), (256, 2), (64, 1), (64, 2)]:
    est = np.asarray(replicate(lambda key: paris.paris(key, model, ys, lag_product, n_particles=n, n_backward=k),
                               100).estimate) - truth["lag_product"]
    stats[(n, k)] = (est.mean(), est.std(), est.std() / 10)
  bias16, _, se16 = stats[(16, 2)]
  assert bias16 + 3 * se16 < 0
  assert abs(stats[(256, 2)][0]) < abs(bias16) / 3
  assert stats[(64, 1)][1] > 1.15 * stats[(64, 2)][1]


def backward_frequencies(sampler, n_draws=40_000):
  """Empirical Λ(i, ·) of a fixed small cloud, and the exact one."""
  model = ssm.linear_gaussian(0.9, 0.5, 1.0, 1.0, 0.0, 1.0)
  x_prev = jnp.array([[-1.0], [0.0], [0.4], [1.5], [3.0]])
  lw_prev = jnp.log(jnp.array([0.1, 0.3, 0.2, 0.25, 0.15]))
  x = jnp.array([[0.2], [2.5]])
  draws = jax.jit(jax.vmap(lambda k: sampler(k, model, x_prev, lw_prev, x)))(
      jax.random.split(jax.random.key(0), n_draws // 4))  # (n, 2, 4)
  freq = np.stack([np.bincount(np.asarray(draws[:, i]).ravel(), minlength=5) / draws[:, i].size for i in range(2)])
  logits = lw_prev[None] + ssm.transition_log_prob_matrix(model, x_prev, x, 1)
  return freq, np.asarray(jax.nn.softmax(logits, -1))


@pytest.mark.parametrize("sampler", [
    lambda k, m, xp, lw, x: paris.backward_exact(k, m, xp, lw, x, 1, 4),
    lambda k, m, xp, lw, x: paris.backward_reject(k, m, xp, lw, x, 1, 4)[0],
    # One round only: most lanes go through the exact fallback for their rows.
    lambda k, m, xp, lw, x: paris.backward_reject(k, m, xp, lw, x, 1, 4, max_rounds=1)[0],
], ids=["exact", "reject", "reject_fallback"])
def test_backward_kernels_draw_from_lambda(sampler, x64):
  freq, exact = backward_frequencies(sampler)
  np.testing.assert_allclose(freq, exact, atol=5 * np.sqrt(0.25 / 40_000))


def test_reject_kernel_agrees_with_exact_kernel(x64):
  model, ys, truth = lgssm()
  run = lambda backward: np.asarray(replicate(
      lambda k: paris.paris(k, model, ys, lag_product, n_particles=128, backward=backward), 30).estimate)
  exact, reject = run("exact"), run("reject")
  pooled_se = np.sqrt(exact.var() / 30 + reject.var() / 30)
  assert abs(exact.mean() - reject.mean()) < 4 * pooled_se


def test_guided_proposal_is_consistent_and_lowers_likelihood_variance(x64):
  model, ys, truth = lgssm()
  guided = replicate(lambda k: paris.paris(k, model, ys, lag_product, n_particles=64,
                                           proposal=paris.linear_gaussian_optimal_proposal()), 40)
  boot = replicate(lambda k: paris.paris(k, model, ys, lag_product, n_particles=64), 40)
  est = np.asarray(guided.estimate)
  assert abs(est.mean() - truth["lag_product"]) < 4 * est.std() / np.sqrt(40) + 2.0
  assert np.std(np.asarray(guided.log_likelihood)) < 0.7 * np.std(np.asarray(boot.log_likelihood))


def test_score_matches_the_gradient_of_the_kalman_likelihood(x64):
  model, ys, _ = lgssm()

  def model_fn(theta):
    return ssm.linear_gaussian(theta[0], jnp.exp(theta[1]), 1.0, jnp.exp(theta[2]), 0.0, 1.0)

  theta = jnp.array([0.9, jnp.log(0.5), 0.0])
  exact = np.asarray(jax.grad(lambda th: ssm.kalman_smoother(model_fn(th), ys).log_likelihood)(theta))
  est = np.asarray(replicate(lambda k: paris.paris(k, model_fn(theta), ys, paris.score_functional(model_fn, theta, ys),
                                                   n_particles=256), 30).estimate)
  se = est.std(0) / np.sqrt(30)
  np.testing.assert_array_less(np.abs(est.mean(0) - exact), 4 * se + 0.15)


def test_underflowing_weights_stay_finite():
  """Observation noise 1e-6: log g is ~ -1e5 away from the data, far below exp's float32 range."""
  model = ssm.linear_gaussian(0.9, 0.5, 1.0, 1e-6, 0.0, 1.0)
  _, ys = ssm.simulate(jax.random.key(0), model, 20)
  out = paris.paris(jax.random.key(1), model, ys + 1.0, lag_product, n_particles=32)
  assert np.isfinite(float(out.estimate)) and np.isfinite(float(out.log_likelihood))


def test_same_key_same_result_and_jit_matches(key):
  model, ys, _ = lgssm(T=11)
  run = lambda k: paris.paris(k, model, ys, lag_product, n_particles=16, backward="reject")
  a, b, c = run(key), run(key), jax.jit(run)(key)
  assert float(a.estimate) == float(b.estimate)
  np.testing.assert_allclose(float(a.estimate), float(c.estimate), rtol=1e-5)
  np.testing.assert_allclose(float(a.log_likelihood), float(c.log_likelihood), rtol=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(PARTICLES_PYTHON),
                    reason="needs .venv-particles (`make .venv-particles`; `make test` builds it)")
def test_agrees_with_the_particles_library(x64):
  model, ys, truth = lgssm()
  request = dict(model=dict(A=0.9, Q=0.5, R=1.0, m0=0.0, P0=1.0), ys=np.asarray(ys[:, 0]).tolist(),
                 functional="sum_xx_lag", n_particles=64, n_paris=2, n_replicates=40, seed=0,
                 resampling="multinomial", ess_min=1.0)
  reply = subprocess.run([PARTICLES_PYTHON, os.path.join(REPO, "experiments", "peers", "particles_paris.py")],
                         input=json.dumps(request), capture_output=True, text=True, check=True, timeout=600)
  theirs = np.asarray(json.loads(reply.stdout)["estimates"])
  ours = np.asarray(replicate(lambda k: paris.paris(k, model, ys, lag_product, n_particles=64), 40).estimate)
  # Same algorithm, same N and K: the same distribution of estimates, bias included.
  assert abs(ours.mean() - theirs.mean()) < 4 * np.sqrt(ours.var() / 40 + theirs.var() / 40)
  assert 0.6 < ours.std() / theirs.std() < 1.6


def test_bad_input_is_rejected(key):
  model, ys, _ = lgssm(T=5)
  with pytest.raises(ValueError, match="n_particles"):
    paris.paris(key, model, ys, lag_product, n_particles=1)
  with pytest.raises(ValueError, match="backward"):
    paris.paris(key, model, ys, lag_product, n_particles=8, backward="mcmc")
  with pytest.raises(ValueError, match="ys"):
    paris.paris(key, model, ys[:1], lag_product, n_particles=8)
  with pytest.raises(TypeError, match="StateSpaceModel"):
    paris.paris(key, "lgssm", ys, lag_product, n_particles=8)
  with pytest.raises(ValueError, match="reference"):
    paris.forward_pass(key, model, ys, lag_product, n_particles=8, reference=jnp.zeros((3, 1)))
  no_bound = model.replace(transition_log_bound=None)
  with pytest.raises(ValueError, match="transition_log_bound"):
    paris.paris(key, no_bound, ys, lag_product, n_particles=8, backward="reject")
