"""The ``toolkit`` command: its listing agrees with the registry, and a bad name is a one-line error."""

import subprocess
import sys

import pytest

from experiments import registry
from toolkit import cli


def test_list_names_every_built_paper_and_the_main_job(capsys):
  assert cli.main(["list"]) == 0
  out = capsys.readouterr().out
  built = [e for e in registry.PAPERS if e.experiment]
  assert all(f"  {e.experiment:<26} {e.title}" in out for e in built)
  assert "reproduce" in out and "bench_tmac" in out and "registry" not in cli.binaries()


def test_unknown_binary_and_no_arguments_are_refused(capsys):
  assert cli.main(["no_such_paper"]) == 2
  err = capsys.readouterr().err
  assert err.strip() == "toolkit: no binary named 'no_such_paper'; `toolkit list` names them."
  assert cli.main([]) == 2  # the usage lines, then the listing
  assert "toolkit list" in capsys.readouterr().out


def test_a_binary_runs_with_its_own_flags_and_keeps_its_exit_status():
  # In a process of its own, as the console script runs (a binary defines absl flags, once per process).
  # reproduce refuses an unknown paper with a one-line message and status 2, through the command as on its own.
  result = subprocess.run(
    [sys.executable, "-m", "toolkit.cli", "reproduce", "--only=nope"], capture_output=True, text=True, timeout=120
  )
  assert result.returncode == 2 and "unknown paper(s) ['nope']" in result.stderr, result.stderr[-2000:]


@pytest.mark.parametrize("argv", ["list", ["list", 3], [b"list"]])
def test_main_bad_argv_is_refused(argv):
  # A bare string used to be split into letters and reported as the unknown binary 'l'.
  with pytest.raises(TypeError, match="`argv`"):
    cli.main(argv)
