"""The SNS experiment end to end on the paper's random-assignment case (n = 500, η = 1200, float64)."""

import jax
import pytest

from experiments import sinkhorn_newton_sparse as sns_experiment
from toolkit import experiment as xp


@pytest.mark.slow
def test_random_assignment_case(tmp_path):
  config = sns_experiment.get_config("quick")
  config.cases = ("random_assignment",)
  config.baselines = ("sinkhorn",)
  record = xp.run_experiment(sns_experiment.EXPERIMENT, config, str(tmp_path), seed=0, scale="quick")
  measured = record["measured"]
  assert measured["random_assignment_sns_converged"] == 1.0 and measured["random_assignment_sinkhorn_converged"] == 1.0
  assert measured["random_assignment_iteration_ratio"] >= 50
  assert measured["random_assignment_sns_iterations"] <= 40  # the paper: 29
  assert (tmp_path / "error_curves.png").exists() and "random_assignment | sns" in (tmp_path / "table.md").read_text()
  assert not jax.config.jax_enable_x64  # the experiment's float64 does not leak out of it


def test_bad_config_is_refused(tmp_path):
  config = sns_experiment.get_config("quick")
  config.cases = ("random_assignment", "mnist")
  with pytest.raises(xp.ConfigError, match="unknown case 'mnist'"):
    xp.run_experiment(sns_experiment.EXPERIMENT, config, str(tmp_path))
