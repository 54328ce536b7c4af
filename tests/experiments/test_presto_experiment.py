"""The PRESTO experiment at a tiny size: outputs written and the claim records complete."""

import json

import pytest

from experiments import presto as presto_experiment
from toolkit import experiment as xp


@pytest.mark.slow
def test_small_run(tmp_path):
  config = presto_experiment.get_config("quick")
  config.intercepts = ((0.0, 2.0, 3.5),)
  config.num_replications = config.batch_size = 3
  config.num_samples, config.num_features = 400, 3
  config.num_folds, config.num_lambdas = 3, 4
  config.num_iterations = 500
  record = xp.run_experiment(presto_experiment.EXPERIMENT, config, str(tmp_path), scale="quick")
  m = record["measured"]
  name = "intercepts_0_2_3.5"
  for method in presto_experiment.METHODS:
    assert 0 < m[f"{name}_mean_mse_{method}"] < 0.05
  assert m[f"{name}_fraction_valid"] == 1.0
  assert {c["metric"] for c in record["claims"]} == {c.metric for c in presto_experiment.CLAIMS}
  assert (tmp_path / "rare_mse.png").exists() and (tmp_path / "table.md").exists()
  assert "PRESTO − Logit" in (tmp_path / "table.md").read_text()
  assert json.loads((tmp_path / "metrics.json").read_text())


def test_bad_config(tmp_path):
  config = presto_experiment.get_config("quick")
  config.intercepts = ((0.0, 3.0, 2.0),)
  with pytest.raises(xp.ConfigError, match="increasing intercepts"):
    xp.run_experiment(presto_experiment.EXPERIMENT, config, str(tmp_path))
