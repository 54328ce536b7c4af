"""The FKC experiment: its oracles against the closed forms, its config checks and a small run.

The metrics it uses are tested in tests/stats/test_metrics.py."""

import numpy as np
import pytest

from experiments import feynman_kac_correctors as fkc_experiment
from toolkit import experiment as xp
from toolkit.smc import fkc
from toolkit.stats import gmm, quadrature


@pytest.mark.parametrize("setting", ["anneal_beta2", "anneal_beta10", "product", "product_disjoint", "cfg_w3"])
def test_grid_oracle_matches_the_closed_forms(setting):
  """The quadrature grid (the only oracle for β = ½) against mixture powers, products and geometric means."""
  config = fkc_experiment.get_config("quick")
  config.num_grid_points = 401
  oracle = fkc_experiment.target_oracle(setting, config)
  assert oracle.edge_mass < 1e-8
  np.testing.assert_allclose(oracle.log_normalizer, fkc_experiment.closed_form_log_z(setting, config), atol=1e-4)
  names, _ = fkc_experiment.SETTINGS[setting]
  schedule = fkc_experiment.schedule_of(config)
  noised = [fkc.noise_gmm(fkc_experiment.mixture(n), schedule, config.t_min) for n in names]
  if setting.startswith("anneal"):
    exact = gmm.power(noised[0], int(fkc_experiment.SETTINGS[setting][1][0]))
  elif setting.startswith("product"):
    exact = gmm.product(*noised)
  else:
    gm = gmm.gaussian_geometric_mean(noised[0].means[0], noised[0].covs[0], noised[1].means[0], noised[1].covs[0], 3.0)
    exact = gmm.GaussianMixture(gm.log_normalizer[None], gm.mean[None], gm.cov[None])
  mean, cov = gmm.moments(exact)
  np.testing.assert_allclose(oracle.mean, mean, atol=1e-4)
  np.testing.assert_allclose(oracle.cov, cov, atol=1e-4)


def test_grid_sample_has_the_oracle_moments(key):
  config = fkc_experiment.get_config("quick")
  oracle = fkc_experiment.target_oracle("anneal_beta0.5", config)
  x = np.asarray(quadrature.grid_sample(key, oracle, 200_000))
  np.testing.assert_allclose(x.mean(0), oracle.mean, atol=0.02)
  np.testing.assert_allclose(np.cov(x.T), oracle.cov, atol=0.05)


def test_bad_config_is_refused(tmp_path):
  config = fkc_experiment.get_config("quick")
  config.settings = ("anneal_beta2", "anneal_beta3")
  with pytest.raises(xp.ConfigError, match="unknown setting 'anneal_beta3'"):
    xp.run_experiment(fkc_experiment.EXPERIMENT, config, str(tmp_path))
  config = fkc_experiment.get_config("quick")
  config.trained.variants = ("fkc",)
  with pytest.raises(xp.ConfigError, match="must include 'naive' and 'fkc'"):
    xp.run_experiment(fkc_experiment.EXPERIMENT, config, str(tmp_path))


@pytest.mark.slow
def test_small_run(tmp_path):
  config = fkc_experiment.get_config("quick")
  config.settings = ("anneal_beta2", "cfg_w3")
  config.variants = ("naive", "fkc")
  config.num_particles, config.num_seeds, config.num_steps = 1024, 2, 500
  config.num_eval, config.num_grid_points = 1024, 401
  config.trained.settings = ("cfg_w3",)
  config.trained.num_particles, config.trained.num_seeds = 256, 2
  config.trained.num_train_steps, config.trained.hidden = 1000, 32
  record = xp.run_experiment(fkc_experiment.EXPERIMENT, config, str(tmp_path), scale="quick")
  m = record["measured"]
  # Annealing to β = 2: the unweighted sampler misses the target, FKC does not.
  assert m["exact_anneal_beta2_naive_moment_error"] > 0.3
  assert m["exact_anneal_beta2_fkc_moment_error"] < 0.1
  assert m["exact_anneal_beta2_distance_ratio_fkc_over_naive"] < 0.1
  assert abs(m["exact_anneal_beta2_fkc_log_z_error"]) < 1.0
  assert m["max_grid_vs_closed_form_log_z"] < 1e-3
  for name in (
    "fkc_metrics.png",
    "samples.png",
    "log_normalizer.png",
    "table.md",
    "summary.md",
    "score_net.msgpack",
  ):
    assert (tmp_path / name).exists(), name
  assert {c["metric"] for c in record["claims"]} == {c.metric for c in fkc_experiment.CLAIMS}
