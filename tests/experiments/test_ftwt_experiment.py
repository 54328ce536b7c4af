"""The FTWT experiment at a tiny size: every output is written, the claim records are complete, and at τ = 1 (nothing
pruned) FTWT and the static control coincide."""

import json

import pytest

from experiments import ftwt as ftwt_experiment
from toolkit import experiment as xp


@pytest.mark.slow
def test_small_run(tmp_path):
  config = ftwt_experiment.get_config("quick")
  config.thresholds = (0.8, 1.0)
  config.num_epochs = 2
  record = xp.run_experiment(ftwt_experiment.EXPERIMENT, config, str(tmp_path), scale="quick")
  m = record["measured"]
  # τ = 1 keeps every live channel: no reduction, estimated or measured, and the same network as the static control
  # (all filters kept, same batches).
  assert m["tau1_estimate_reduction"] == pytest.approx(0.0, abs=1e-6)
  assert m["tau1_reduction"] == pytest.approx(0.0, abs=1e-6)
  assert m["tau1_accuracy"] == pytest.approx(m["tau1_static_accuracy"], abs=0.01)
  # τ = 0.8 prunes: the estimate from the pretrained network and the measured reduction are both well above 0.
  assert m["tau0.8_estimate_reduction"] > 0.3 and m["tau0.8_reduction"] > 0.2
  assert 0.5 < m["tau0.8_predictor_accuracy"] <= 1.0 and 0.1 < m["tau0.8_accuracy"] <= 1.0
  assert {c["metric"] for c in record["claims"]} == {c.metric for c in ftwt_experiment.CLAIMS}
  assert all(c["paper_value"] and c["statement"] for c in record["claims"])
  assert all(c["measured"] is not None for c in record["claims"] if c["metric"] == "max_estimate_error_points")
  for name in ("metrics.json", "summary.md", "table.md", "accuracy_vs_flops.png"):
    assert (tmp_path / name).exists(), name
  assert json.loads((tmp_path / "metrics.json").read_text())["experiment"] == "ftwt"
  table = (tmp_path / "table.md").read_text()
  assert table.count("\n| 0.8 |") == 1 and table.count("\n| 1 |") == 1


def test_bad_config(tmp_path):
  config = ftwt_experiment.get_config("quick")
  config.thresholds = (0.8, 1.2)
  with pytest.raises(xp.ConfigError, match="thresholds"):
    xp.run_experiment(ftwt_experiment.EXPERIMENT, config, str(tmp_path))
  config = ftwt_experiment.get_config("quick")
  config.cooldown = 1.5
  with pytest.raises(xp.ConfigError, match="cooldown"):
    xp.run_experiment(ftwt_experiment.EXPERIMENT, config, str(tmp_path))
  with pytest.raises(ValueError, match="scale"):
    ftwt_experiment.get_config("medium")
