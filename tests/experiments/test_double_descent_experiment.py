"""The double-descent experiment at a tiny size: the min-norm fit peaks at P = N, early-stopped GD does not."""

import json

import pytest

from experiments import double_descent as dd
from toolkit import experiment as xp


@pytest.mark.slow
def test_tiny_run(tmp_path):
  config = dd.get_config("quick")
  config.num_train, config.num_test, config.num_seeds = 40, 200, 2
  config.ratios = (0.25, 0.5, 0.9, 1.0, 1.1, 2.0, 3.0)
  config.settings = ("min-norm", "GD 10 steps", "GD 100 steps", "Adam 300 steps")
  record = xp.run_experiment(dd.EXPERIMENT, config, str(tmp_path), scale="quick")
  m = record["measured"]
  assert m["min_norm_peak_height"] > 2 and m["early_stopped_gd_peak_height"] < 1.1
  assert m["min_norm_train_loss_at_threshold"] < m["early_stopped_gd_train_loss_at_threshold"]
  assert {c["metric"] for c in record["claims"]} == {c.metric for c in dd.CLAIMS}
  assert (tmp_path / "double_descent.png").exists()
  assert "| min-norm |" in (tmp_path / "table.md").read_text()
  assert json.loads((tmp_path / "metrics.json").read_text())["measured"] == m


def test_bad_config(tmp_path):
  config = dd.get_config("quick")
  config.settings = ("min-norm", "SGD")
  with pytest.raises(xp.ConfigError, match="unknown"):
    xp.run_experiment(dd.EXPERIMENT, config, str(tmp_path))
  config = dd.get_config("quick")
  config.ratios = (0.5, 2.0)
  with pytest.raises(xp.ConfigError, match="ratios"):
    xp.run_experiment(dd.EXPERIMENT, config, str(tmp_path))
