"""The rom_cluster experiment at a tiny size: outputs, claim records, and sine beating Euclidean on Burgers."""

import json

import pytest

from experiments import rom_cluster as rc_experiment
from toolkit import experiment as xp


@pytest.mark.slow
def test_small_run(tmp_path):
  config = rc_experiment.get_config("quick")
  config.num_train, config.num_test, config.num_points = 48, 24, 32
  config.cluster_counts, config.mode_counts = (1, 2, 4), (1, 2)
  config.num_restarts = 2
  record = xp.run_experiment(rc_experiment.EXPERIMENT, config, str(tmp_path), scale="quick")
  m = record["measured"]
  assert m["burgers_sine_over_euclid_kmeans_error"] < 1.0  # the sign/scale family: the control must lose
  assert -1.0 <= m["criterion_spearman"] <= 1.0 and m["num_ranked_settings"] == 2 * 3 * 2 * 2
  assert {c["metric"] for c in record["claims"]} == {c.metric for c in rc_experiment.CLAIMS}
  assert all(c["measured"] is not None and c["paper_value"] for c in record["claims"])
  for name in ("projection_errors.png", "criterion_ranking.png", "table.md", "summary.md", "metrics.json"):
    assert (tmp_path / name).exists()
  table = (tmp_path / "table.md").read_text()
  assert table.count("\n") == 2 + 2 * (2 + 2 * 3 * 2)  # header + (global + K>1 rows) per dataset
  assert json.loads((tmp_path / "metrics.json").read_text())["experiment"] == "rom_cluster"


def test_bad_config(tmp_path):
  config = rc_experiment.get_config("quick")
  config.datasets = ("advection", "heat")
  with pytest.raises(xp.ConfigError, match="unknown dataset 'heat'"):
    xp.run_experiment(rc_experiment.EXPERIMENT, config, str(tmp_path))
  config = rc_experiment.get_config("quick")
  config.cluster_counts = (2, 4)
  with pytest.raises(xp.ConfigError, match="must contain 1"):
    xp.run_experiment(rc_experiment.EXPERIMENT, config, str(tmp_path))
