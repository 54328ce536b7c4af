"""The Dual-Head KD experiment at a tiny size: every arm trains, the outputs and claim records are written."""

import json

import numpy as np
import pytest

from experiments import dual_head_kd as dhkd_experiment
from toolkit import experiment as xp


@pytest.mark.slow
def test_small_run(tmp_path, monkeypatch):
  # A tiny teacher, trained into a private cache: the test does not depend on (or fill) the user's cache.
  monkeypatch.setenv("TOOLKIT_CACHE_DIR", str(tmp_path / "cache"))
  config = dhkd_experiment.get_config("quick")
  config.teacher_features = (8,)
  config.teacher_epochs = 3
  config.num_seeds = 2
  config.arms = ("ce", "ce_kd", "dual_head_ga")  # each arm compiles its own training loop: three keep it short
  config.num_epochs = 2
  config.student_hidden = (16,)
  record = xp.run_experiment(dhkd_experiment.EXPERIMENT, config, str(tmp_path / "out"), scale="quick")
  m = record["measured"]
  assert 0.1 < m["teacher_test_accuracy"] <= 1.0
  for arm in config.arms:
    assert 0.1 < m[f"{arm}_test_accuracy"] <= 1.0
  # CE alone has no distillation gradient; under DHKD each loss reaches only its own head.
  assert m["ce_head_cosine"] == 0.0 and m["ce_backbone_cosine"] == 0.0
  assert m["dual_head_ga_head_cosine"] == 0.0 and m["dual_head_ga_backbone_cosine"] != 0.0
  assert m["ce_kd_head_cosine"] != 0.0
  # The paired interval contains its mean; a claim whose arms did not run is recorded as failed, not dropped.
  assert m["dual_head_ga_minus_ce_kd_ci_low"] <= m["dual_head_ga_minus_ce_kd"] <= m["dual_head_ga_minus_ce_kd_ci_high"]
  assert {c["metric"] for c in record["claims"]} == {c.metric for c in dhkd_experiment.CLAIMS}
  assert all(c["paper_value"] for c in record["claims"])
  by_metric = {c["metric"]: c for c in record["claims"]}
  assert by_metric["same_head_worse_than_either_ci_high"]["measured"] is None
  assert not by_metric["same_head_worse_than_either_ci_high"]["passed"]
  saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
  assert saved["claims"][0]["metric"] == "same_head_worse_than_either_ci_high"
  assert (tmp_path / "out" / "accuracy.png").exists() and "DHKD" in (tmp_path / "out" / "table.md").read_text()


def test_paired_interval():
  mean, low, high = dhkd_experiment.paired_interval(np.array([0.8, 0.9, 1.0]), np.array([0.7, 0.7, 0.7]))
  # Differences 0.1, 0.2, 0.3: mean 0.2, sd 0.1, t(0.975, 2) = 4.3027.
  np.testing.assert_allclose(
    [mean, low, high], [0.2, 0.2 - 4.3027 * 0.1 / np.sqrt(3), 0.2 + 4.3027 * 0.1 / np.sqrt(3)], rtol=1e-4
  )


def test_bad_config(tmp_path):
  config = dhkd_experiment.get_config("quick")
  config.arms = ("ce", "mse")
  with pytest.raises(xp.ConfigError, match="unknown arm"):
    xp.run_experiment(dhkd_experiment.EXPERIMENT, config, str(tmp_path))
  config = dhkd_experiment.get_config("quick")
  config.num_seeds = 1
  with pytest.raises(xp.ConfigError, match="num_seeds"):
    xp.run_experiment(dhkd_experiment.EXPERIMENT, config, str(tmp_path))
