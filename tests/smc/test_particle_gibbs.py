"""PaRIS particle Gibbs: no measurable bias where PaRIS has one, the frozen reference, invariance of the chain."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toolkit.smc import paris, ssm
from toolkit.smc import particle_gibbs as pg


def lag_product(x_prev, x, t):
  return jnp.where(t == 0, 0.0, x_prev[0] * x[0])


def lgssm(T=51):
  model = ssm.linear_gaussian(0.9, 0.5, 1.0, 1.0, 0.0, 1.0)
  _, ys = ssm.simulate(jax.random.key(0), model, T)
  return model, ys, ssm.kalman_smoother(model, ys)


def replicate(fn, n_reps, seed=1):
  return jax.jit(jax.vmap(fn))(jax.random.split(jax.random.key(seed), n_reps))


@pytest.mark.slow
def test_ppg_removes_the_small_n_bias_of_paris(x64):
  model, ys, ko = lgssm()
  m, cross = ko.smoothed_means[:, 0], ko.smoothed_cross_covs[:, 0, 0]
  truth = float(jnp.sum(m[:-1] * m[1:] + cross))
  n_reps = 60
  paris_est = np.asarray(replicate(lambda k: paris.paris(k, model, ys, lag_product, num_particles=16), n_reps).estimate)
  ppg_est = np.asarray(
    replicate(
      lambda k: pg.particle_gibbs(k, model, ys, lag_product, num_particles=16, num_sweeps=20, burn_in=4).estimate,
      n_reps,
    )
  )
  se = lambda e: e.std() / np.sqrt(n_reps)
  assert paris_est.mean() - truth + 3 * se(paris_est) < 0  # PaRIS at N = 16: clearly negative bias
  assert abs(ppg_est.mean() - truth) < 3 * se(ppg_est)  # PPG at N = 16: none measurable


@pytest.mark.slow
def test_the_chain_leaves_the_smoothing_distribution_invariant(x64):
  """Averages of the state over sweeps equal the RTS smoothed means (the reference path is a φ-invariant chain)."""
  model, ys, ko = lgssm(T=21)
  out = jax.jit(
    lambda k: pg.particle_gibbs(
      k,
      model,
      ys,
      lambda xp, x, t: x[0] * jax.nn.one_hot(t, 21),
      num_particles=32,
      num_sweeps=600,
      burn_in=20,
    )
  )(jax.random.key(3))
  est = np.asarray(out.estimates[20:])  # (sweeps, T): per-time smoothed means
  batch = est.reshape(20, -1, 21).mean(1)  # batch means for an autocorrelation-robust standard error
  se = batch.std(0) / np.sqrt(20)
  np.testing.assert_array_less(np.abs(est.mean(0) - np.asarray(ko.smoothed_means[:, 0])), 4 * se + 0.02)


def test_sweep_keeps_the_reference_and_returns_a_path_of_the_cloud(key, x64):
  model, ys, _ = lgssm(T=11)
  reference = jnp.linspace(-1.0, 1.0, 11)[:, None]
  result = pg.forward_pass(key, model, ys, lag_product, num_particles=8, reference=reference)
  out, history = result.output, result.history
  np.testing.assert_array_equal(np.asarray(history.particles[:, -1]), np.asarray(reference))
  path = pg.draw_path(jax.random.key(2), history, out.log_weights)
  # Every state of the new path is one of the cloud's particles at its time, linked by stored backward indices.
  members = np.asarray(history.particles[:, :, 0])
  for t in range(11):
    assert float(path[t, 0]) in members[t]
  # A sweep is this forward pass (on the first half of its key) followed by draw_path.
  res = pg.sweep(key, model, ys, lag_product, reference, num_particles=8)
  same = pg.forward_pass(jax.random.split(key)[0], model, ys, lag_product, num_particles=8, reference=reference).output
  assert res.reference.shape == (11, 1)
  assert float(res.paris.estimate) == pytest.approx(float(same.estimate))


def test_draw_path_follows_the_backward_indices():
  """A hand-built history whose backward indices are all equal pins the path down exactly."""
  T, n = 4, 3
  particles = jnp.arange(T * n, dtype=jnp.float32).reshape(T, n, 1)
  J = jnp.array([[[2, 2]] * n, [[0, 0]] * n, [[1, 1]] * n])  # step t -> t+1 always points at one index
  history = pg.ForwardHistory(particles, jnp.zeros((T, n)), J)
  log_w = jnp.array([-jnp.inf, 0.0, -jnp.inf])  # b_n = 1 for sure
  path = pg.draw_path(jax.random.key(0), history, log_w)
  # b_3 = 1, b_2 = J[2][1] = 1, b_1 = J[1][1] = 0, b_0 = J[0][0] = 2.
  np.testing.assert_array_equal(np.asarray(path[:, 0]), [0 * 3 + 2, 1 * 3 + 0, 2 * 3 + 1, 3 * 3 + 1])


def test_bad_input_is_rejected(key):
  model, ys, _ = lgssm(T=5)
  with pytest.raises(ValueError, match="burn_in"):
    pg.particle_gibbs(key, model, ys, lag_product, num_particles=8, num_sweeps=5, burn_in=5)
  with pytest.raises(ValueError, match="ess_threshold"):
    paris.init(key, model, ys[0], lag_product, num_particles=8, reference_x0=jnp.zeros(1), ess_threshold=0.5)


def _history(T=4, n=3, K=2):
  return pg.ForwardHistory(jnp.zeros((T, n, 1)), jnp.zeros((T, n)), jnp.zeros((T - 1, n, K), jnp.int32))


def test_draw_path_bad_history_or_log_weights(key):
  history, log_w = _history(), jnp.zeros(3)
  with pytest.raises(TypeError, match="`history`"):
    pg.draw_path(key, tuple(history), log_w)
  with pytest.raises(ValueError, match="`history.particles`"):
    pg.draw_path(key, history._replace(particles=jnp.zeros((4, 3))), log_w)
  with pytest.raises(ValueError, match="`history.backward_indices`"):
    pg.draw_path(key, history._replace(backward_indices=jnp.zeros((4, 3, 2), jnp.int32)), log_w)
  with pytest.raises(TypeError, match="`history.backward_indices`"):
    pg.draw_path(key, history._replace(backward_indices=jnp.zeros((3, 3, 2))), log_w)
  # An index past the particles used to be clamped to the last one: a wrong path without an error.
  with pytest.raises(ValueError, match="`history.backward_indices` must lie in \\[0, 3\\)"):
    pg.draw_path(key, history._replace(backward_indices=jnp.full((3, 3, 2), 3, jnp.int32)), log_w)
  with pytest.raises(ValueError, match="`log_weights_final`"):
    pg.draw_path(key, history, jnp.zeros(4))
  with pytest.raises(ValueError, match="`log_weights`"):  # through resample_log's value check
    pg.draw_path(key, history, jnp.array([0.0, jnp.nan, 0.0]))


def test_sweep_and_initial_reference_bad_input(key):
  model, ys, _ = lgssm(T=5)
  with pytest.raises(ValueError, match="`reference`"):
    pg.sweep(key, model, ys, lag_product, None, num_particles=8)  # used to run an unconditional pass
  with pytest.raises(ValueError, match="`reference`"):
    pg.sweep(key, model, ys, lag_product, jnp.zeros((4, 1)), num_particles=8)
  with pytest.raises(ValueError, match="`num_particles`"):
    pg.sweep(key, model, ys, lag_product, jnp.zeros((5, 1)), num_particles=1)
  with pytest.raises(ValueError, match="`ys`"):
    pg.initial_reference(key, model, ys[:1], num_particles=8)
  with pytest.raises(ValueError, match="`ys`"):
    pg.initial_reference(key, model, jnp.zeros((5, 2)), num_particles=8)
  with pytest.raises(ValueError, match="`num_particles`"):
    pg.initial_reference(key, model, ys, num_particles=1)
  with pytest.raises(TypeError, match="`model`"):
    pg.initial_reference(key, "lgssm", ys, num_particles=8)
