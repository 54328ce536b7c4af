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


def test_bias_rate_fit_recovers_a_known_power_law():
  n = np.array([16, 64, 256, 1024])
  for rate in (0.5, 1.0, 1.5):
    bias = -40.0 * n ** (-rate)
    fit = ppg_experiment.fit_bias_rate(n, bias, 0.01 * np.abs(bias))
    assert fit["rate"] == pytest.approx(rate, rel=1e-6) and fit["constant"] == pytest.approx(40.0, rel=1e-5)
  # With noisy points the rate's standard error grows with the noise (weighted by the given s.e.).
  noisy = ppg_experiment.fit_bias_rate(n, -40.0 / n * np.array([1.1, 0.9, 1.2, 0.8]), 0.1 * 40.0 / n)
  assert 0.7 < noisy["rate"] < 1.3 and noisy["rate_se"] > 0.01


@pytest.mark.slow
def test_tiny_run(tmp_path):
  record = xp.run_experiment(ppg_experiment.EXPERIMENT, tiny_config(), str(tmp_path), scale="quick")
  m = record["measured"]
  # PaRIS's bias shrinks from N = 8 to N = 32 on the same data (it is O(1/N) and negative).
  assert m["paris_n8_bias"] < m["paris_n32_bias"] + 2 * np.hypot(m["paris_n8_se"], m["paris_n32_se"])
  assert np.isfinite(m["ppg_mle_max_abs_error"]) and np.isfinite(m["paris_bias_rate"])
  # The bound on PPG's bias is in units of PaRIS's bias at the same N; the roll-out with burn-in b averages the
  # single sweeps from b on.
  assert m["ppg_bias_bound_over_paris"] == pytest.approx(
    (abs(m["ppg_n8_bias"]) + 2 * m["ppg_n8_se"]) / abs(m["paris_n8_bias"])
  )
  assert m["ppg_n8_burn_in1_rollout_bias"] == pytest.approx(m["ppg_n8_bias"])  # burn-in 1 is the config's
  assert (tmp_path / "bias_rmse_learning.png").exists() and (tmp_path / "table.md").exists()


def test_bad_config(tmp_path):
  config = tiny_config()
  config.ppg_burn_in = config.ppg_sweeps
  with pytest.raises(xp.ConfigError, match="ppg_burn_in"):
    xp.run_experiment(ppg_experiment.EXPERIMENT, config, str(tmp_path))
