"""The ZeroQuant-V2 experiment end to end on a tiny freshly trained LM (the real run uses the cached pretrained one)."""

import json

import pytest

from experiments import zeroquant as zq_experiment
from toolkit import experiment as xp


def tiny_config():
  config = zq_experiment.get_config("quick")
  config.train_steps = 60
  config.bits = (8, 3)
  config.group_size = 32  # divides d_model = 64 and d_ff = 256 of the tiny model
  config.row_bits = (3,)
  config.activation_weights = (("rtn", 8),)
  config.seq_len = 64
  config.calibration_tokens = 1024  # 16 windows
  config.eval_tokens = 4096
  return config


@pytest.mark.slow
def test_tiny_model_end_to_end_and_resume(tmp_path):
  config = tiny_config()
  record = xp.run_experiment(zq_experiment.EXPERIMENT, config, str(tmp_path), seed=0, scale="quick")
  m = record["measured"]
  # Every case ran: fp32, then RTN/GPTQ with and without LoRC at each bit width.
  for name in (
    "rtn_w8",
    "rtn_w8_lorc",
    "gptq_w8",
    "gptq_w8_lorc",
    "rtn_w3",
    "rtn_w3_lorc",
    "gptq_w3",
    "gptq_w3_lorc",
    "rtn_w3_row",  # per row, the sensitive setting
    "gptq_w3_row_lorc",
    "fp32_a8",  # 8-bit activations alone, against 8-bit weights alone at equal granularity
    "rtn_w8_row",
    "rtn_w8_a8",  # both
  ):
    assert m[f"{name}_perplexity"] > 1.0
  # The ratios the claims read are the measured perplexities and KLs combined as documented.
  fp = m["fp32_perplexity"]
  gap = lambda name: m[f"{name}_perplexity"] - fp
  assert m["gptq_over_rtn_gap_w3_row"] == pytest.approx(gap("gptq_w3_row") / gap("rtn_w3_row"))
  assert m["gptq_over_rtn_gap_w3"] == pytest.approx(gap("gptq_w3") / gap("rtn_w3"))
  assert m["rtn_w3_ppl_increase"] == pytest.approx(gap("rtn_w3") / fp)
  recovered = (m["rtn_w3_row_perplexity"] - m["rtn_w3_row_lorc_perplexity"]) / gap("rtn_w3_row")
  assert m["lorc_gap_recovered_rtn_w3_row"] == pytest.approx(recovered)
  assert m["a8_over_w8_kl"] == pytest.approx(m["fp32_a8_kl"] / m["rtn_w8_row_kl"])
  assert m["rtn_w8_a8_over_a16_kl"] == pytest.approx(m["rtn_w8_a8_kl"] / m["rtn_w8_kl"])
  # Quantizing the activations too moves the predictions further than the 8-bit weights alone.
  assert m["rtn_w8_a8_kl"] > m["rtn_w8_kl"] > 0
  # 8 bits is near lossless and 3 bits is not; quantized models are several times smaller than fp32.
  assert abs(m["rtn_w8_ppl_increase"]) < 0.01
  assert m["rtn_w3_perplexity"] > m["rtn_w8_perplexity"]
  assert m["rtn_w3_bytes"] < m["rtn_w8_bytes"] < 0.5 * m["fp32_bytes"]
  # LoRC's parameters: m(d_in + d_out) per layer against d_in·d_out (q, k, v, o 64×64; up, down; lm_head 64→256).
  layers = [(64, 64)] * 4 + [(64, 256), (256, 64), (64, 256)]
  expected = sum(8 * (a + b) for a, b in layers) / sum(a * b for a, b in layers)
  assert m["lorc_extra_param_fraction"] == pytest.approx(expected)
  assert (tmp_path / "perplexity_vs_bits.png").exists()
  table = (tmp_path / "table.md").read_text()
  assert "| GPTQ + LoRC | W3A16 g32 |" in table and "| fp32 | W32A16 |" in table and "| fp32 | W32A8 |" in table
  assert {c["metric"] for c in record["claims"]} >= {
    "gptq_over_rtn_ppl_w3",
    "lorc_kl_ratio_gptq_w3",
    "gptq_over_rtn_gap_w2",
    "lorc_gap_recovered_rtn_w2",
    "a8_over_w8_kl",
  }
  # A second run with the same flags resumes from the per-case checkpoints and gives the same numbers.
  again = xp.run_experiment(zq_experiment.EXPERIMENT, config, str(tmp_path), seed=0, scale="quick")
  assert again["measured"] == pytest.approx(m)
  assert json.loads((tmp_path / "metrics.json").read_text())["experiment"] == "zeroquant"


def test_bad_config_is_refused(tmp_path):
  config = zq_experiment.get_config("quick")
  config.bits = (4, 1)
  with pytest.raises(xp.ConfigError, match="--config.bits"):
    xp.run_experiment(zq_experiment.EXPERIMENT, config, str(tmp_path))
  config = zq_experiment.get_config("quick")
  config.methods = ("rtn", "awq")
  with pytest.raises(xp.ConfigError, match="--config.methods"):
    xp.run_experiment(zq_experiment.EXPERIMENT, config, str(tmp_path))
  for name, value in (("row_bits", (4, 1)), ("activation_bits", 16), ("activation_weights", (("awq", 4),))):
    config = zq_experiment.get_config("quick")
    config[name] = value
    with pytest.raises(xp.ConfigError, match=f"--config.{name}"):
      xp.run_experiment(zq_experiment.EXPERIMENT, config, str(tmp_path))
