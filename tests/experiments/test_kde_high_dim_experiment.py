"""The KDE-in-large-dimensions experiment at a tiny size: every output written, claims recorded with their controls."""

import json

import pytest

from experiments import kde_high_dim as kde_experiment
from toolkit import experiment as xp


@pytest.mark.slow
def test_small_run(tmp_path):
  config = kde_experiment.get_config("quick")
  config.alphas = (0.25,)
  config.log_n = 7.0
  config.num_threshold_points = 64
  config.num_threshold_databases = 1
  config.num_heldout = 64
  config.num_bandwidths = 12
  config.num_participation_bandwidths = 6
  config.fixed_log_n = 6.0
  config.num_fixed_points = 2
  config.num_databases = 20
  config.classical_n = 500
  record = xp.run_experiment(kde_experiment.EXPERIMENT, config, str(tmp_path), scale="quick")
  m = record["measured"]
  # In the classical regime (d = 2) the optimum is far above h_CLT; at α = 0.25, d = 28 it is below.
  assert m["control_classical_kl_opt_over_h_clt"] > 2.0
  assert m["max_kl_opt_over_h_clt"] < 1.0
  assert 0.0 < m["alpha0.25_h_g_measured"] and m["alpha0.25_h_clt_measured"] > m["alpha0.25_h_g_measured"]
  claims = {c["metric"] for c in record["claims"]}
  assert {"max_kl_opt_over_h_clt", "control_classical_kl_opt_over_h_clt", "max_threshold_rel_error"} <= claims
  for name in ("kde_regimes.png", "table.md", "summary.md", "metrics.json"):
    assert (tmp_path / name).exists()
  assert "control: classical regime" in (tmp_path / "table.md").read_text()
  assert json.loads((tmp_path / "metrics.json").read_text())["measured"]["max_threshold_rel_error"] >= 0.0


def test_bad_config(tmp_path):
  config = kde_experiment.get_config("quick")
  config.alphas = (0.2, -0.1)
  with pytest.raises(xp.ConfigError, match="alphas"):
    xp.run_experiment(kde_experiment.EXPERIMENT, config, str(tmp_path))
