"""The GliODIL experiment at a tiny size: the outputs are written and the claims are recorded."""

import json

import pytest

from experiments import gliodil as odil_experiment
from toolkit import experiment as xp


@pytest.mark.slow
def test_small_run(tmp_path):
  config = odil_experiment.get_config("quick")
  config.num_patients = 1
  config.shape = (32, 32)
  config.num_steps = 16
  config.num_levels = 3
  config.num_iterations = 300
  config.search_radius = 1
  record = xp.run_experiment(odil_experiment.EXPERIMENT, config, str(tmp_path), scale="quick")
  m = record["measured"]
  # Even a short fit beats its own starting point on the field and the uniform margin on the infiltration.
  assert m["mean_rmse_final"] < m["mean_rmse_guess_final"]
  assert m["mean_dice_odil"] > m["mean_dice_margin"]
  assert 0 <= m["max_rho_rel_error"] < 1 and 0 <= m["max_d_white_rel_error"] < 1
  assert {c["metric"] for c in record["claims"]} == {c.metric for c in odil_experiment.CLAIMS}
  assert (tmp_path / "patients.png").exists() and (tmp_path / "table.md").exists()
  assert "GliODIL" in (tmp_path / "table.md").read_text()
  assert json.loads((tmp_path / "metrics.json").read_text())


def test_bad_config(tmp_path):
  config = odil_experiment.get_config("quick")
  config.shape = (8, 8)
  with pytest.raises(xp.ConfigError, match="shape"):
    xp.run_experiment(odil_experiment.EXPERIMENT, config, str(tmp_path))
