"""The KIVI experiment end to end on a tiny freshly trained model (the real run uses the cached pretrained LM)."""

import pytest

from experiments import kivi as kivi_experiment
from toolkit import experiment as xp


@pytest.mark.slow
def test_kivi_experiment_on_a_tiny_model(tmp_path):
  config = kivi_experiment.get_config("quick")
  config.train_steps = 60
  config.num_sequences, config.batch_size, config.seq_len, config.prompt_len = 4, 4, 96, 16
  config.variants = ("fp", "kivi16", "kivi4", "kivi2")
  config.long_context = 1024
  config.speed_context, config.speed_heads, config.speed_head_dim, config.speed_repeats = 256, 2, 64, 2
  record = xp.run_experiment(kivi_experiment.EXPERIMENT, config, str(tmp_path), seed=0, scale="quick")
  measured = record["measured"]
  # 16-bit "codes" through the KIVI cache reproduce the exact cache.
  assert measured["kivi16_max_abs_log_prob_diff"] < 1e-4 and measured["kivi16_agreement"] == 1.0
  assert measured["fp_perplexity_increase_percent"] == 0.0
  assert abs(measured["kivi4_perplexity_increase_percent"]) < abs(measured["kivi2_perplexity_increase_percent"])
  # One layer of one head of 64 channels: 48 quantized bytes per token against 256 in fp16.
  assert measured["kivi2_bytes_per_token_vs_fp16"] == pytest.approx(256 / 48)
  # The speed table's byte counts are the arrays' own: at 256 tokens the 128-token full-precision residual is half
  # of the KIVI cache, which still reads fewer bytes than the fp32 one.
  assert 0.25 < measured["kivi2_decode_attention_bytes_over_fp32"] < 1.0
  assert measured["kivi2_decode_attention_ms"] > 0 and measured["fp32_decode_attention_ms"] > 0
  table = (tmp_path / "table.md").read_text()
  assert (tmp_path / "kivi.png").exists() and "KIVI-2" in table and "| fp32 (full-precision cache) |" in table


def test_bad_config_is_refused(tmp_path):
  config = kivi_experiment.get_config("quick")
  config.variants = ("kivi2",)
  with pytest.raises(xp.ConfigError, match="must include 'fp'"):
    xp.run_experiment(kivi_experiment.EXPERIMENT, config, str(tmp_path))
  config = kivi_experiment.get_config("quick")
  config.residual = 48
  with pytest.raises(xp.ConfigError, match="residual"):
    xp.run_experiment(kivi_experiment.EXPERIMENT, config, str(tmp_path))
  config = kivi_experiment.get_config("quick")
  config.speed_context = 100
  with pytest.raises(xp.ConfigError, match="--config.speed_context"):
    xp.run_experiment(kivi_experiment.EXPERIMENT, config, str(tmp_path))
