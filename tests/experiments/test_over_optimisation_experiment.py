"""The over-optimisation experiment at a small size: DPO with and without the NLL term, outputs and claim records."""

import json

import pytest

from experiments import over_optimisation as oo
from toolkit import experiment as xp


@pytest.mark.slow
def test_small_run(tmp_path):
  config = oo.get_config("quick")
  config.losses, config.betas, config.nll_weights = ("dpo",), (0.1,), (0.0, 1.0)
  config.sft_steps, config.daa_steps, config.eval_every, config.num_samples = 200, 240, 30, 8
  record = xp.run_experiment(oo.EXPERIMENT, config, str(tmp_path), scale="quick")
  m = record["measured"]
  assert {c["metric"] for c in record["claims"]} == {c.metric for c in oo.CLAIMS}
  assert all(c["metric"] in m for c in record["claims"])
  # SFT learned the task: above the 1/3 of a uniform content token, near the demonstrations' 0.5 + 0.5 · 4/12.
  assert 0.55 < m["sft_heldout_gold_reward"] < 0.8
  for name in ("metrics.json", "summary.md", "table.md", "curves.png"):
    assert (tmp_path / name).exists()
  table = (tmp_path / "table.md").read_text().splitlines()
  assert len(table) == 2 + 2  # header, rule, one row per (β, λ)
  history = json.loads((tmp_path / "metrics.json").read_text())
  assert history["measured"]["num_pairs"] > 100


def test_overopt_test_on_hand_made_curves():
  steps = list(range(0, 70, 10))
  curves = {
    "step": steps,
    "gold_reward": [0.5, 0.6, 0.7, 0.8, 0.7, 0.6, 0.5],
    "chosen_log_likelihood": [-6, -5, -4, -3, -2, -1, 0],
    "margin": [0, 1, 2, 3, 4, 5, 6],
  }
  t = oo.overopt_test(curves, min_drop=0.02)
  assert t["peak_step"] == 30 and t["overoptimises"] and t["likelihood_passes"] and t["margin_passes"]
  short = oo.overopt_test(curves, min_drop=0.02, end=3)  # still rising: no over-optimisation yet
  assert not short["overoptimises"] and not short["margin_passes"]
  assert oo.turn([3, 2, 1, 0]) == 0 and oo.turn([0, 1, 2, 3]) == 3


def test_bad_config(tmp_path):
  config = oo.get_config("quick")
  config.losses = ("dpo", "kto")
  with pytest.raises(xp.ConfigError, match="unknown loss 'kto'"):
    xp.run_experiment(oo.EXPERIMENT, config, str(tmp_path))
