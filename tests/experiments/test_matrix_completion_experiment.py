"""The matrix_completion experiment at a tiny size: outputs, claim records, and the cold-start control losing."""

import json

import pytest

from experiments import matrix_completion as mc_experiment
from toolkit import experiment as xp


@pytest.mark.slow
def test_small_run(tmp_path):
  config = mc_experiment.get_config("quick")
  # rank > CG steps, else 3 CG steps solve each k-dim regression exactly and the control cannot lose
  config.recovery.size, config.recovery.rank, config.recovery.num_iterations = 80, 5, 8
  config.timing.size, config.timing.ranks, config.timing.repeats = 60, (4, 8), 1
  config.speedup_rank = 8
  record = xp.run_experiment(mc_experiment.EXPERIMENT, config, str(tmp_path), scale="quick")
  m = record["measured"]
  assert m["approx_final_error"] < 1e-3 and m["exact_final_error"] < 1e-3  # both converge
  assert m["cold_start_final_error"] > 10 * m["approx_final_error"]  # the control stalls
  assert m["init_error"] > m["exact_final_error"]
  assert m["seconds_per_iteration_exact_k8"] > 0 and m["seconds_per_iteration_approx_k4"] > 0
  assert {c["metric"] for c in record["claims"]} == {c.metric for c in mc_experiment.CLAIMS}
  # The speed-up claim is at k = 64 (its metric is absent at this size); every other claim is measured.
  assert all(c["measured"] is not None for c in record["claims"] if c["metric"] != "speedup_at_k64")
  assert all(c["paper_value"] for c in record["claims"]) and m["speedup_at_k8"] > 0
  for name in ("recovery_and_timing.png", "table.md", "summary.md", "metrics.json", "recovery.json"):
    assert (tmp_path / name).exists()
  assert json.loads((tmp_path / "metrics.json").read_text())["experiment"] == "matrix_completion"


def test_bad_config(tmp_path):
  config = mc_experiment.get_config("quick")
  config.speedup_rank = 48
  with pytest.raises(xp.ConfigError, match="speedup_rank"):
    xp.run_experiment(mc_experiment.EXPERIMENT, config, str(tmp_path))
  config = mc_experiment.get_config("quick")
  config.timing.ranks = (8, 16, 32, 64, 512)
  with pytest.raises(xp.ConfigError, match="oversampling"):
    xp.run_experiment(mc_experiment.EXPERIMENT, config, str(tmp_path))
  config = mc_experiment.get_config("quick")
  config.timing.ranks = (64,)
  with pytest.raises(xp.ConfigError, match=">= 2 timing ranks"):
    xp.run_experiment(mc_experiment.EXPERIMENT, config, str(tmp_path))
