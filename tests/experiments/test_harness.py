"""The experiment harness: claims, results, checkpoint/resume after a kill, and flag handling of the binaries."""

import json
import os
import re
import signal
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import ConfigDict

from toolkit import experiment as xp

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A grokking run small enough for a test: p = 23, 40 epochs a run, a checkpoint every 20 epochs (6 in all).
TINY = [
  "--quick",
  "--config.p=23",
  "--config.eval_every=10",
  "--config.checkpoint_every=20",
  "--config.runs.softmax_adamw.epochs=40",
  "--config.runs.stablemax_adamw.epochs=40",
  "--config.runs.perp_adamw.epochs=40",
]


def run_binary(args, env_extra=None, timeout=300):
  env = {**os.environ, "JAX_PLATFORMS": "cpu", **(env_extra or {})}
  return subprocess.run(
    [sys.executable, "-m", "experiments.grokking", *args],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout,
  )


def test_claim_verdicts():
  claim = xp.Claim("m", "s", "p", "<=", 300, full_target=100)
  assert claim.check(300.0) and not claim.check(301.0)
  assert not claim.check(150.0, scale="full") and claim.check(100.0, scale="full")
  assert not claim.check(float("nan")) and not claim.check(None) and not claim.check(float("inf"))
  with pytest.raises(ValueError, match="comparison"):
    xp.Claim("m", "s", "p", "=>", 1.0)
  with pytest.raises(ValueError, match="scales"):
    xp.Claim("m", "s", "p", "<=", 1.0, scales=("medium",))


def test_claims_are_judged_only_at_their_scales():
  claims = (
    xp.Claim("a", "s", "p", "<=", 1.0),
    xp.Claim("b", "s", "p", "<=", 1.0, scales=("full",)),
  )
  experiment = xp.Experiment("e", xp.Paper("e", "t", "0000.00000"), claims, lambda scale: None, lambda c, ctx: {})
  assert [r["metric"] for r in xp.evaluate_claims(experiment, {"a": 0.5, "b": 2.0}, "quick")] == ["a"]
  full = xp.evaluate_claims(experiment, {"a": 0.5, "b": 2.0}, "full")
  assert [(r["metric"], r["passed"]) for r in full] == [("a", True), ("b", False)]


def _ctx(tmp_path, fingerprint="a"):
  return xp.Context(str(tmp_path), 0, "quick", xp.Checkpointer(str(tmp_path / "ckpt"), fingerprint))


class Interrupt(Exception):
  pass


def test_resumable_loop_resumes_where_it_stopped(tmp_path):
  """An exception after the second checkpoint, then a restart: the same history as one uninterrupted run."""
  advance = lambda s, n: {"x": s["x"] * 1.01 + n, "n": s["n"] + n}
  record = lambda s, step: {"x": float(s["x"][0])}
  init = {"x": jnp.ones(3), "n": jnp.asarray(0)}
  _, reference = xp.resumable_loop(xp.Context(str(tmp_path), 0, "quick", None), "loop", init, 95, 10, advance, record)

  calls = []

  def flaky(state, n):
    calls.append(n)
    if len(calls) == 5:
      raise Interrupt
    return advance(state, n)

  ctx = _ctx(tmp_path)
  with pytest.raises(Interrupt):
    xp.resumable_loop(ctx, "loop", init, 95, 10, flaky, record, checkpoint_every=20)
  state, history = xp.resumable_loop(_ctx(tmp_path), "loop", init, 95, 10, advance, record, checkpoint_every=20)
  assert history == reference
  assert int(state["n"]) == 95 and [h["step"] for h in history][-2:] == [90, 95]


def test_checkpoints_of_another_config_are_refused(tmp_path):
  _ctx(tmp_path, "a")
  with pytest.raises(xp.ConfigError, match="another configuration"):
    _ctx(tmp_path, "b")


def kill_after_checkpoints(args, num_checkpoints, timeout=300):
  """Starts the binary and sends it a real SIGKILL (as an out-of-memory killer or a pre-empted job would) once its
  log says that ``num_checkpoints`` checkpoints are on disk; returns the exit code and the log up to the kill."""
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  process = subprocess.Popen(
    [sys.executable, "-m", "experiments.grokking", *args],
    cwd=REPO,
    env=env,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
    text=True,
  )
  lines = []
  try:
    for line in process.stderr:
      lines.append(line)
      if f"checkpoint {num_checkpoints} saved" in line:
        process.send_signal(signal.SIGKILL)
        break
    return process.wait(timeout=timeout), "".join(lines)
  finally:
    process.kill()
    process.stderr.close()


@pytest.mark.slow
def test_killed_binary_resumes_to_the_same_result(tmp_path):
  straight, killed = tmp_path / "straight", tmp_path / "killed"
  assert run_binary([*TINY, f"--out_dir={straight}"]).returncode == 0
  # SIGKILL once the third checkpoint is saved: in the second of the three runs (epoch 20 of 40; the signal may
  # land just after that run's next checkpoint, at epoch 40).
  returncode, log = kill_after_checkpoints([*TINY, f"--out_dir={killed}"], 3)
  assert returncode == -signal.SIGKILL, log[-2000:]
  assert not (killed / "metrics.json").exists()
  second = run_binary([*TINY, f"--out_dir={killed}"])
  assert second.returncode == 0, second.stderr[-2000:]
  assert re.search(r"resumed from the checkpoint at epoch (20|40)", second.stderr), second.stderr[-2000:]
  a = json.loads((straight / "metrics.json").read_text())
  b = json.loads((killed / "metrics.json").read_text())
  assert a["measured"] == b["measured"]  # bit for bit: same chunks, same compiled steps
  assert a["claims"] == b["claims"]
  for name in ("summary.md", "accuracy.png", "softmax_collapse.png"):
    assert (killed / name).exists()


@pytest.mark.parametrize(
  "args, message",
  [
    (["--config.runs.perp_adamw.lr=-1"], "error: --config.runs.perp_adamw.lr must be > 0"),
    (["--config.train_fraction=1.5"], "error: --config.train_fraction must lie in (0, 1)"),
    (
      ["--config.runs.perp_adamw.optimizer=sgd"],
      "error: --config.runs.perp_adamw.optimizer must be one of",
    ),
    (["--config.no_such_field=1"], "no_such_field"),
    (["--config.p=abc"], "p"),
    (["--no_such_flag"], "no_such_flag"),
  ],
)
def test_bad_flags_exit_with_a_one_line_message(tmp_path, args, message):
  result = run_binary(["--quick", f"--out_dir={tmp_path}", *args], timeout=120)
  assert result.returncode != 0
  assert "Traceback" not in result.stderr
  error_lines = [line for line in result.stderr.splitlines() if message in line]
  assert error_lines, result.stderr[-2000:]


def test_unwritable_out_dir_exits_with_a_one_line_message(tmp_path):
  a_file = tmp_path / "a_file"
  a_file.write_text("")
  for out_dir in (a_file, a_file / "below", "/proc/no_such_dir/x"):
    result = run_binary(["--quick", f"--out_dir={out_dir}"], timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"error: --out_dir={out_dir} cannot be written:" in result.stderr, result.stderr[-2000:]


def test_help_lists_the_binarys_flags_and_config_fields():
  result = run_binary(["--help"], timeout=120)  # absl's --help exits with status 1
  for flag in ("--out_dir", "--[no]quick", "--seed", "--[no]restart", "--config"):
    assert flag in result.stdout, result.stdout[-2000:]
  assert "train_fraction" in result.stdout  # a field of the config, with its default


def test_overrides_apply_to_the_quick_config(tmp_path):
  """--quick picks the quick preset; --config.* overrides are applied on top of it."""
  result = run_binary([*TINY, "--config.runs.perp_adamw.lr=0.003", f"--out_dir={tmp_path}"], timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  record = json.loads((tmp_path / "metrics.json").read_text())
  assert record["scale"] == "quick" and record["config"]["p"] == 23
  assert record["config"]["runs"]["perp_adamw"]["lr"] == 0.003
  assert record["config"]["runs"]["softmax_adamw"]["epochs"] == 40
  assert {c["metric"] for c in record["claims"]} >= {"perp_adamw_epochs_to_95pct_test"}
  summary = (tmp_path / "summary.md").read_text()
  assert "Grokking at the Edge of Numerical Stability" in summary and "accuracy.png" in summary
  assert np.isfinite(record["measured"]["perp_adamw_final_test_accuracy"])


def test_run_cases_skips_finished_cases_after_a_restart(tmp_path):
  calls = []

  def run_case(i, case):
    calls.append(case)
    if case == "c" and len(calls) == 3:
      raise Interrupt
    return {"case": case, "value": i * 10}

  with pytest.raises(Interrupt):
    xp.run_cases(_ctx(tmp_path), ["a", "b", "c", "d"], run_case)
  results = xp.run_cases(_ctx(tmp_path), ["a", "b", "c", "d"], run_case)
  assert calls == ["a", "b", "c", "c", "d"]  # a and b were not run again
  assert results == [{"case": c, "value": 10 * i} for i, c in enumerate("abcd")]


def test_append_xla_flags_keeps_the_flags_already_set(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_a=1")
  xp.append_xla_flags("--xla_b=2", "--xla_c=3")
  assert os.environ["XLA_FLAGS"] == "--xla_a=1 --xla_b=2 --xla_c=3"
  monkeypatch.delenv("XLA_FLAGS")
  xp.append_xla_flags("--xla_b=2")
  assert os.environ["XLA_FLAGS"] == "--xla_b=2"


def _two_claims():
  claims = (xp.Claim("a", "s", "p", "<=", 1.0), xp.Claim("b", "s", "p", "<=", 1.0, scales=("full",)))
  return xp.Experiment("e", xp.Paper("e", "t", "0000.00000"), claims, lambda scale: None, lambda c, ctx: {})


@pytest.mark.parametrize("flag", ["xla_a=1", "--xla_a=1 --xla_b=2", 3, None])
def test_append_xla_flags_bad_flag_leaves_the_environment_alone(monkeypatch, flag):
  monkeypatch.setenv("XLA_FLAGS", "--xla_a=1")
  with pytest.raises(ValueError, match="`flags`"):
    xp.append_xla_flags("--xla_b=2", flag)
  assert os.environ["XLA_FLAGS"] == "--xla_a=1"


def test_config_fingerprint_bad_config_seed_or_scale():
  config = ConfigDict({"lr": 0.1})
  assert xp.config_fingerprint(config, np.int64(0), "quick") == xp.config_fingerprint(config, 0, "quick")
  with pytest.raises(TypeError, match="`config`"):
    xp.config_fingerprint({"lr": 0.1}, 0, "quick")
  with pytest.raises(TypeError, match="`seed`"):
    xp.config_fingerprint(config, "0", "quick")
  with pytest.raises(TypeError, match="`seed`"):
    xp.config_fingerprint(config, 0.0, "quick")
  with pytest.raises(ValueError, match="`scale`"):
    xp.config_fingerprint(config, 0, "medium")


def test_define_flags_and_main_bad_experiment():
  # Refused before absl defines a flag or parses sys.argv (a flag defined twice would be an error of its own).
  with pytest.raises(TypeError, match="`experiment`"):
    xp.define_flags("grokking")
  with pytest.raises(TypeError, match="`experiment`"):
    xp.main(None)


def test_evaluate_claims_bad_experiment_measured_or_scale():
  experiment = _two_claims()
  with pytest.raises(ValueError, match="`scale`"):
    xp.evaluate_claims(experiment, {"a": 0.5}, "medium")  # used to judge no claim at all
  with pytest.raises(TypeError, match="`measured`"):
    xp.evaluate_claims(experiment, [0.5], "quick")
  with pytest.raises(TypeError, match="`measured\\['a'\\]`"):
    xp.evaluate_claims(experiment, {"a": "low"}, "quick")
  with pytest.raises(TypeError, match="`experiment`"):
    xp.evaluate_claims("e", {"a": 0.5}, "quick")


def test_write_results_bad_input_writes_nothing(tmp_path):
  experiment, config, measured = _two_claims(), ConfigDict({"lr": 0.1}), {"a": 0.5}
  ctx = xp.Context(str(tmp_path), 0, "quick", None)
  with pytest.raises(ValueError, match="`seconds`"):
    xp.write_results(experiment, ctx, config, measured, -1.0)
  with pytest.raises(ValueError, match="`seconds`"):
    xp.write_results(experiment, ctx, config, measured, float("nan"))
  with pytest.raises(TypeError, match="`ctx`"):
    xp.write_results(experiment, str(tmp_path), config, measured, 1.0)
  with pytest.raises(TypeError, match="`config`"):
    xp.write_results(experiment, ctx, config.to_dict(), measured, 1.0)
  with pytest.raises(TypeError, match="`measured`"):
    xp.write_results(experiment, ctx, config, None, 1.0)
  with pytest.raises(ValueError, match="`scale`"):
    xp.write_results(experiment, xp.Context(str(tmp_path), 0, "tiny", None), config, measured, 1.0)
  assert not os.listdir(tmp_path)
  record = xp.write_results(experiment, ctx, config, measured, 1.0)
  assert record["passed"] and [c["metric"] for c in record["claims"]] == ["a"]
