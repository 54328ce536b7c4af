"""The SGD-noise experiment at a tiny size: outputs written, every claim recorded, the T_c helper on a known
curve, and bad configurations rejected."""

import json

import numpy as np
import pytest

from experiments import sgd_noise as sgdn
from toolkit import experiment as xp


@pytest.mark.slow
def test_tiny_run(tmp_path):
  config = sgdn.get_config("quick")
  config.sizes, config.num_seeds, config.max_steps = (16, 24, 32), 2, 5_000
  config.batch_size, config.num_test = 8, 500
  config.temperatures = (0.3, 1.0, 3.0, 10.0, 30.0)
  config.mlp_alphas, config.mlp_taus, config.mlp_seeds = (1.0, 100.0), (0.01, 0.1), 3
  config.mlp_size, config.mlp_width, config.mlp_max_steps = 32, 8, 2_000
  record = xp.run_experiment(sgdn.EXPERIMENT, config, str(tmp_path), scale="quick")
  m = record["measured"]
  assert {c["metric"] for c in record["claims"]} == {c.metric for c in sgdn.CLAIMS}
  assert 0 < m["perceptron_converged_fraction"] <= 1 and 0 < m["mlp_converged_fraction"] <= 1
  assert m["tc_exponent_ci_low"] <= m["tc_exponent"] <= m["tc_exponent_ci_high"]
  assert (tmp_path / "sgd_noise.png").exists()
  table = (tmp_path / "table.md").read_text()
  assert "| 16 |" in table and "| 100 |" in table
  written = json.loads((tmp_path / "metrics.json").read_text())["measured"]
  assert written.keys() == m.keys()
  for k, v in m.items():  # NaN (e.g. no converged pair in the tiny run) is written as null
    assert written[k] == v or (written[k] is None and np.isnan(v)), k


def test_crossover_temperature_and_scores():
  temps = np.array([0.1, 1.0, 10.0, 100.0])
  curves = np.array([[2.0, 2.0, 5.0], [2.0, 2.1, 5.0], [8.0, 2.2, 5.0], [16.0, 2.3, 5.0]])
  tc = sgdn.crossover_temperature(temps, curves, plateau_ok=np.array([True, True, False]))
  # Column 0 reaches 4 = 2 × 2 between T = 1 (2.0) and T = 10 (8.0): log-interpolated at T = 10^0.5.
  np.testing.assert_allclose(tc[0], 10**0.5, rtol=1e-12)
  assert np.isnan(tc[1]) and np.isnan(tc[2])
  assert sgdn.opposite_sign_score(3.0, -2.5) == 2.5 and sgdn.opposite_sign_score(3.0, 2.5) == -2.5
  assert sgdn.paired_effect(np.array([1.0, 2.0, 3.0]), np.array([0.0, 1.0, 2.0]))[0] == 1.0


def test_bad_config(tmp_path):
  config = sgdn.get_config("quick")
  config.sizes = (32, 64)
  with pytest.raises(xp.ConfigError, match="sizes"):
    xp.run_experiment(sgdn.EXPERIMENT, config, str(tmp_path))
  config = sgdn.get_config("quick")
  config.temperatures = (1.0, 0.5, 2.0, 3.0)
  with pytest.raises(xp.ConfigError, match="temperatures"):
    xp.run_experiment(sgdn.EXPERIMENT, config, str(tmp_path))
