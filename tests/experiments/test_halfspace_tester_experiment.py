"""The halfspace tester-learner experiment at a small size: outputs, claim records and the control."""

import json

import pytest

from experiments import halfspace_tester as hs_experiment
from toolkit import experiment as xp


@pytest.mark.slow
def test_small_run(tmp_path):
  config = hs_experiment.get_config("quick")
  config.dim = 4
  config.num_samples = 8000
  config.sweep_sizes = ()
  config.num_seeds = 4
  config.num_steps = 300
  config.num_candidates = 2
  config.num_eval = 20_000
  config.degree = 2
  record = xp.run_experiment(hs_experiment.EXPERIMENT, config, str(tmp_path), scale="quick")
  m = record["measured"]
  assert m["gauss_massart_accept_rate"] >= 0.75
  assert m["spike_reject_rate"] == 1.0  # band mass ~4x the Gaussian's around w* ~ e1
  assert m["spike_global_only_accept_rate"] >= 0.75  # the control: moment matching alone is fooled
  assert m["spike_mean_excess_error"] > m["gauss_massart_mean_excess_error"]
  for name in ("acceptance.png", "table.md", "metrics.json", "summary.md"):
    assert (tmp_path / name).exists()
  claims = {c["metric"] for c in json.loads((tmp_path / "metrics.json").read_text())["claims"]}
  assert {"spike_reject_rate", "spike_global_only_accept_rate", "gauss_massart_accept_rate"} <= claims


def test_bad_config(tmp_path):
  config = hs_experiment.get_config("quick")
  config.degree = 5
  with pytest.raises(xp.ConfigError, match="--config.degree"):
    xp.run_experiment(hs_experiment.EXPERIMENT, config, str(tmp_path))
