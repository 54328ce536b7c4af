"""The T-MAC experiment end to end at a small size (256×256), and its resume: a second run in the same directory
restores every case from its checkpoint and reports the same numbers."""

import json

import pytest

from experiments import tmac as tmac_experiment
from toolkit import experiment as xp


def small_config():
  config = tmac_experiment.get_config("quick")
  config.m = config.k = 256
  config.n = (1, 4)
  config.bits = (1, 2, 3)
  config.repeats = 2
  config.methods = tmac_experiment.METHODS
  config.bandwidth_mib = 16
  config.exact.m, config.exact.k, config.exact.group_size = 24, 128, 32
  return config


@pytest.mark.slow
def test_small_run_writes_its_table_and_figure_and_resumes(tmp_path):
  config = small_config()
  record = xp.run_experiment(tmac_experiment.EXPERIMENT, config, str(tmp_path), seed=0, scale="quick")
  measured = record["measured"]
  claims = {c["metric"]: c for c in record["claims"]}
  assert set(claims) == {c.metric for c in tmac_experiment.CLAIMS}
  # True by construction, so tested rather than claimed: exactness, linear lookups and bytes, b/16 of fp16 plus the
  # scales.
  assert measured["exact_max_abs_err"] == 0
  assert measured["lookups_and_index_bytes_exactly_linear"] == 1
  # The contrast's figures: time at 3 over 1 bits for the lookup and its control, and the GEMV against fp32.
  assert measured["gemm_lut_growth_over_bits"] > 0 and measured["gemm_dequant_growth_over_bits"] > 0
  assert measured["gemv_w2_lut_vs_fp32_speedup"] == pytest.approx(measured["n1_w2_fp32_ms"] / measured["n1_w2_lut_ms"])
  # 256² at 2 bits: 16 KiB of indices + 2·(256·2) fp16 scales and zeros = 18 KiB against 128 KiB of fp16.
  assert measured["w2_compression_vs_fp16"] == pytest.approx(128 / 18)
  assert measured["max_rel_err_vs_dequant"] < 1e-5
  assert measured["read_bandwidth_gbs"] > 0
  assert "n1_w3_onehot_ms" in measured and "n4_w3_onehot_ms" not in measured  # one-hot only up to N = 1
  table = (tmp_path / "table.md").read_text()
  assert "| 4 | 3 |" in table and "R²" in table and "max |error| = 0" in table
  assert (tmp_path / "time_vs_bits.png").exists()
  # Resume: every case is restored, so the measurements (timings included) come back unchanged.
  again = xp.run_experiment(tmac_experiment.EXPERIMENT, config, str(tmp_path), seed=0, scale="quick")
  assert json.dumps(again["measured"], sort_keys=True) == json.dumps(measured, sort_keys=True)


def test_bad_config_is_refused(tmp_path):
  config = small_config()
  config.methods = ("lut", "gather")
  with pytest.raises(xp.ConfigError, match="unknown method 'gather'"):
    xp.run_experiment(tmac_experiment.EXPERIMENT, config, str(tmp_path))
  config = small_config()
  config.bits = (2, 5)
  with pytest.raises(xp.ConfigError, match="5 is not one of"):
    xp.run_experiment(tmac_experiment.EXPERIMENT, config, str(tmp_path))
