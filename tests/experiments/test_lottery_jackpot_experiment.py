"""The Lottery Jackpots experiment at a tiny size: every output is written and the claim records are complete."""

import json

import pytest

from experiments import lottery_jackpot as lj_experiment
from toolkit import experiment as xp


@pytest.mark.slow
def test_small_run(tmp_path):
  config = lj_experiment.get_config("quick")
  config.num_epochs = 2
  config.eval_every = 10
  record = xp.run_experiment(lj_experiment.EXPERIMENT, config, str(tmp_path), scale="quick")
  m = record["measured"]
  # Two epochs of search from magnitude init already beat the magnitude mask it starts from at 95%; sparsity exact.
  assert m["jackpot_accuracy_s95"] > m["magnitude_mask_accuracy_s95"] > m["random_mask_accuracy_s95"]
  assert m["jackpot_measured_sparsity_s90"] == pytest.approx(0.9, abs=1e-4)
  assert m["cost_steps_magnitude_init"] <= m["cost_steps_random_init"]
  assert {c["metric"] for c in record["claims"]} == {c.metric for c in lj_experiment.CLAIMS}
  for name in ("metrics.json", "summary.md", "table.md", "accuracy_vs_search.png"):
    assert (tmp_path / name).exists(), name
  assert json.loads((tmp_path / "metrics.json").read_text())
  assert "jackpot (magnitude init)" in (tmp_path / "table.md").read_text()


def test_bad_config(tmp_path):
  config = lj_experiment.get_config("quick")
  config.cost_sparsity = 0.8
  with pytest.raises(xp.ConfigError, match="cost_sparsity"):
    xp.run_experiment(lj_experiment.EXPERIMENT, config, str(tmp_path))
