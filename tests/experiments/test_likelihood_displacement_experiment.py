"""The likelihood-displacement experiment at a tiny size: outputs, claim records and the toy's displacement."""

import json

import pytest

from experiments import likelihood_displacement as ld_experiment
from toolkit import experiment as xp


@pytest.mark.slow
def test_small_run(tmp_path):
  config = ld_experiment.get_config("quick")
  config.sft_num_examples, config.sft_num_steps, config.sft_batch_size = 600, 60, 32
  config.dpo_num_steps = 10
  config.toy_num_steps = 300
  config.num_prompts = 3
  config.num_chat_pairs = 16
  config.num_refusal_pairs = 16
  config.num_heldout_prompts = 8
  config.num_random_subsets = 2
  record = xp.run_experiment(ld_experiment.EXPERIMENT, config, str(tmp_path), scale="quick")
  m = record["measured"]
  # The toy is deterministic: No collapses and Yes takes the mass; the far-token control does not displace.
  assert m["toy_no_prob_ratio"] < 0.5 and m["toy_yes_prob_after"] > 0.5
  assert m["control_toy_yes_prob_after"] < 0.5 and m["control_toy_no_prob_ratio"] > 1
  assert 0 <= m["lm_frac_prompts_no_decreased"] <= 1 and -1 <= m["spearman_ches"] <= 1
  assert 0 < m["refusal_rate_sft"] < 1 and m["kept_frac_harmful_rejected"] >= 0
  names = {c["metric"] for c in record["claims"]}
  assert {
    "lm_frac_prompts_no_decreased",
    "spearman_ches_minus_best_control",
    "ches_filter_minus_random_refusal",
  } <= names
  for name in ("toy_no_vs_never.png", "lm_no_vs_never.png", "ches_vs_displacement.png", "refusal_filtering.png"):
    assert (tmp_path / name).exists()
  assert "Spearman(ches" in (tmp_path / "table.md").read_text()
  assert json.loads((tmp_path / "metrics.json").read_text())["measured"]["toy_yes_prob_after"] > 0.5


def test_bad_config(tmp_path):
  config = ld_experiment.get_config("quick")
  config.keep_fraction = 1.5
  with pytest.raises(xp.ConfigError, match="keep_fraction"):
    xp.run_experiment(ld_experiment.EXPERIMENT, config, str(tmp_path))
