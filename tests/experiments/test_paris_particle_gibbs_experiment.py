"""The PaRIS particle Gibbs experiment at a tiny size, its exact-MLE oracle, and config validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import paris_particle_gibbs as ppg_experiment
from toolkit import experiment as xp
from toolkit.smc import ssm


def tiny_config():
  config = ppg_experiment.get_config("quick")
  config.num_steps, config.replicates = 21, 10
  config.paris_particles, config.ppg_particles, config.equal_cost_ppg_particles = (8, 32), (8,), 8
  config.ppg_sweeps, config.ppg_burn_in = 4, 1
  for group in (config.learning, config.msc, config.sv):
    group.num_steps, group.iterations, group.average_last, group.seeds, group.num_particles = (
      21,
      30,
      10,
      2,
      8,
    )
  return config


def test_exact_mle_is_a_stationary_point_of_the_kalman_likelihood(x64):
  model = ppg_experiment.lgssm_model_fn({k: jnp.asarray(v) for k, v in ppg_experiment.TRUE_LG.items()})
  _, ys = ssm.simulate(jax.random.key(0), model, 101)
  theta0 = {"A": jnp.asarray(0.5), "log_Q": jnp.asarray(0.0), "log_R": jnp.asarray(0.5)}
  mle, loglik = ppg_experiment.exact_mle(ppg_experiment.lgssm_model_fn, ys, theta0)
  loglik_fn = lambda th: ssm.kalman_smoother(ppg_experiment.lgssm_model_fn(th), ys).log_likelihood
  grad = jax.grad(loglik_fn)({k: jnp.asarray(v) for k, v in mle.items()})
  assert max(abs(float(g)) for g in jax.tree.leaves(grad)) < 1e-5
  assert loglik >= float(loglik_fn(theta0))


@pytest.mark.slow
def test_tiny_run(tmp_path):
  record = xp.run_experiment(ppg_experiment.EXPERIMENT, tiny_config(), str(tmp_path), scale="quick")
  m = record["measured"]
  # PaRIS's bias shrinks from N = 8 to N = 32 on the same data (it is O(1/N) and negative).
  assert m["paris_n8_bias"] < m["paris_n32_bias"] + 2 * np.hypot(m["paris_n8_se"], m["paris_n32_se"])
  assert np.isfinite(m["ppg_mle_max_abs_error"])
  assert (tmp_path / "bias_rmse_learning.png").exists() and (tmp_path / "table.md").exists()


def test_bad_config(tmp_path):
  config = tiny_config()
  config.ppg_burn_in = config.ppg_sweeps
  with pytest.raises(xp.ConfigError, match="ppg_burn_in"):
    xp.run_experiment(ppg_experiment.EXPERIMENT, config, str(tmp_path))
