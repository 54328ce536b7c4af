"""The PPP experiment at a tiny size: outputs, claim records, and a bad config refused."""

import json

import pytest

from experiments import ppp as ppp_experiment
from toolkit import experiment as xp


@pytest.mark.slow
def test_small_run(tmp_path):
  config = ppp_experiment.get_config("quick")
  config.cases = ("unequal_2d",)
  config.num_seeds, config.num_data_seeds, config.max_clusters = 3, 2, 6
  record = xp.run_experiment(ppp_experiment.EXPERIMENT, config, str(tmp_path), scale="quick")
  m = record["measured"]
  assert 0.0 <= m["ppp_k_correct_fraction_min"] <= 1.0
  assert -0.5 <= m["ppp_seed_ari_min"] <= 1.0
  assert m["unequal_2d_ppp_seed_ari"] == m["ppp_seed_ari_min"]
  for control in ("kmeans_wrong_k", "kmeans_right_k", "kmeans10_wrong_k", "kmeans10_right_k"):
    assert -0.5 <= m[f"unequal_2d_{control}_seed_ari"] <= 1.0
  assert m["control_kmeans_wrong_k_seed_ari_max"] == m["unequal_2d_kmeans_wrong_k_seed_ari"]
  assert {c["metric"] for c in record["claims"]} == {c.metric for c in ppp_experiment.CLAIMS}
  assert all(c["measured"] is not None and c["paper_value"] for c in record["claims"])
  assert all("reconstruction" in c["paper_value"] for c in record["claims"])
  for name in ("seed_ari.png", "table.md", "summary.md", "metrics.json"):
    assert (tmp_path / name).exists()
  table = (tmp_path / "table.md").read_text()
  assert "our reconstruction" in table and table.count("| unequal_2d |") == 5  # PPP + 4 k-means rows
  assert json.loads((tmp_path / "metrics.json").read_text())["experiment"] == "ppp"


def test_bad_config(tmp_path):
  config = ppp_experiment.get_config("quick")
  config.cases = ("unequal_2d", "moons")
  with pytest.raises(xp.ConfigError, match="unknown case 'moons'"):
    xp.run_experiment(ppp_experiment.EXPERIMENT, config, str(tmp_path))
  config = ppp_experiment.get_config("quick")
  config.num_seeds = 1
  with pytest.raises(xp.ConfigError, match="num_seeds must be >= 2"):
    xp.run_experiment(ppp_experiment.EXPERIMENT, config, str(tmp_path))
  config = ppp_experiment.get_config("quick")
  config.wrong_k_offset = 0
  with pytest.raises(xp.ConfigError, match="right k"):
    xp.run_experiment(ppp_experiment.EXPERIMENT, config, str(tmp_path))
  with pytest.raises(ValueError, match="quick' or 'full"):
    ppp_experiment.get_config("tiny")
