"""The top-K MoE rate experiment (arXiv 2309.13850) at a tiny size: outputs, claim records and the arms' order."""

import json

import numpy as np
import pytest

from experiments import topk_moe as moe_experiment
from toolkit import experiment as xp


@pytest.mark.slow
def test_small_run(tmp_path):
  config = moe_experiment.get_config("quick")
  config.sample_sizes = (300, 1000, 3000)
  config.num_replications = 3
  config.over_sample_sizes = (300, 1000, 3000)
  config.over_num_replications = 2
  config.num_steps = 30
  config.num_hellinger_x = 16
  config.num_hellinger_y = 64
  record = xp.run_experiment(moe_experiment.EXPERIMENT, config, str(tmp_path), scale="quick", checkpoint=False)
  m = record["measured"]
  assert m["over_rule_num_selected"] == 3 and m["over_small_num_selected"] == 2
  # Even at this size the exact-specified D1 falls with n and the "K too small" fit stays far from the truth.
  assert m["exact_d1_slope"] < -0.2
  assert m["over_small_over_rule_hellinger_at_max_n"] > 2
  assert m["num_nonfinite_fits"] == 0
  assert {c["metric"] for c in record["claims"]} == {c.metric for c in moe_experiment.CLAIMS}
  for name in ("metrics.json", "summary.md", "table.md", "rates.png"):
    assert (tmp_path / name).exists()
  saved = json.loads((tmp_path / "metrics.json").read_text())
  assert np.isclose(saved["measured"]["exact_d1_slope"], m["exact_d1_slope"])
  assert "| exact | 2 | 3000 |" in (tmp_path / "table.md").read_text()


def test_bad_config(tmp_path):
  config = moe_experiment.get_config("quick")
  config.sample_sizes = (100, 100, 200)
  with pytest.raises(xp.ConfigError, match="sample_sizes"):
    xp.run_experiment(moe_experiment.EXPERIMENT, config, str(tmp_path), checkpoint=False)
  config = moe_experiment.get_config("quick")
  config.small_num_selected = 3
  with pytest.raises(xp.ConfigError, match="small_num_selected"):
    xp.run_experiment(moe_experiment.EXPERIMENT, config, str(tmp_path), checkpoint=False)
