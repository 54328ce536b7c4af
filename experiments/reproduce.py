"""The main job: every paper's headline claim at quick scale, written to ``reports/``.

  python -m experiments.reproduce                      # all papers -> reports/REPORT.md, reports/results.json
  python -m experiments.reproduce --only=grokking      # a subset (comma-separated keys of experiments/registry.py)

Each experiment runs as its own process (``python -m experiments.<name> --quick --restart``) with a time limit,
so that one failure or timeout does not stop the rest; its log, metrics and figures land in
``reports/<name>/``. Papers not built yet are listed as "not implemented" and never count as passed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence

from absl import app, flags

from . import registry

FLAGS = flags.FLAGS
# `experiments` when run from a clone, `toolkit.experiments` when installed (the `toolkit` command).
_PACKAGE = __spec__.parent if __spec__ is not None and __spec__.parent else "experiments"
flags.DEFINE_string("out_dir", "reports", "Where REPORT.md, results.json and each experiment's outputs go.")
flags.DEFINE_list("only", [], "Run only these papers (keys of experiments/registry.py).")
flags.DEFINE_integer("timeout", 900, "Seconds allowed to each experiment before it is stopped and reported.")
flags.DEFINE_integer("seed", 0, "Seed passed to every experiment.")


def _module(entry: registry.Entry) -> str:
  # A dotted name is taken as is (tests point at their own modules); a bare one lives beside this module:
  # `experiments` in a clone, `toolkit.experiments` in an installed package.
  return entry.experiment if "." in entry.experiment else f"{_PACKAGE}.{entry.experiment}"


def run_one(entry: registry.Entry, out_dir: str, timeout: float, seed: int = 0) -> dict:
  """Runs one experiment's quick config in a subprocess; returns its status, seconds and metrics record."""
  exp_dir = os.path.abspath(os.path.join(out_dir, entry.key))
  os.makedirs(exp_dir, exist_ok=True)
  metrics_path = os.path.join(exp_dir, "metrics.json")
  if os.path.exists(metrics_path):
    os.remove(metrics_path)  # never report a previous run's numbers
  log_path = os.path.join(exp_dir, "log.txt")
  cmd = [
    sys.executable,
    "-m",
    _module(entry),
    "--quick",
    "--restart",
    f"--seed={seed}",
    f"--out_dir={exp_dir}",
  ]
  start = time.time()
  status = "ok"
  with open(log_path, "w") as log:
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=_repo_root())
    printed = 0
    while process.poll() is None:
      time.sleep(1.0)
      printed = _echo_progress(entry.key, log_path, printed)
      if time.time() - start > timeout:
        process.kill()
        process.wait()
        status = "timeout"
        break
    _echo_progress(entry.key, log_path, printed)
  seconds = time.time() - start
  if status == "ok" and process.returncode != 0:
    status = "error"
  record = None
  if status == "ok":
    if os.path.exists(metrics_path):
      with open(metrics_path) as f:
        record = json.load(f)
    else:
      status = "error"
  return {
    "entry": entry,
    "status": status,
    "seconds": seconds,
    "record": record,
    "log": log_path,
    "returncode": process.returncode,
  }


def _repo_root() -> str | None:
  """The clone's root, where `python -m experiments.<name>` resolves; None in an installed package."""
  return os.path.dirname(os.path.dirname(os.path.abspath(__file__))) if _PACKAGE == "experiments" else None


def _echo_progress(key: str, log_path: str, printed: int) -> int:
  """Prints the lines the experiment logged since the last call, so a long reproduce shows progress."""
  with open(log_path, errors="replace") as f:
    lines = f.read().splitlines()
  for line in lines[printed:]:
    if "] [" in line or "claim " in line or "Error" in line:  # the harness's progress and verdict lines
      print(f"  [{key}] {line.split('] ', 1)[-1]}", flush=True)
  return len(lines)


def results_rows(outcome: dict) -> list[dict]:
  """The results.json objects of one paper: one per claim, or one saying why there are none."""
  entry, record = outcome["entry"], outcome["record"]
  base = {
    "paper": entry.title,
    "arxiv": entry.arxiv,
    "key": entry.key,
    "experiment": entry.experiment,
    "seconds": outcome["seconds"],
    "status": outcome["status"],
  }
  if outcome["status"] == "not implemented" or record is None:
    return [
      {
        **base,
        "metric": None,
        "measured": None,
        "target": None,
        "comparison": None,
        "passed": False,
      }
    ]
  return [
    {
      **base,
      "metric": c["metric"],
      "statement": c["statement"],
      "paper_value": c["paper_value"],
      "comparison": c["comparison"],
      "target": c["target"],
      "measured": c["measured"],
      "passed": c["passed"],
    }
    for c in record["claims"]
  ]


def _verdict(outcome: dict) -> str:
  status = outcome["status"]
  if status != "ok":
    return {"timeout": "**timeout**", "error": "**error**"}.get(status, status)
  claims = outcome["record"]["claims"]
  passed = sum(c["passed"] for c in claims)
  return f"passed ({passed}/{len(claims)})" if passed == len(claims) else f"**failed** ({passed}/{len(claims)})"


def _cell(text: str) -> str:
  """Text for a Markdown table cell: a bar would end the cell."""
  return text.replace("|", "\\|")


def _value(v) -> str:
  return "—" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def write_report(outcomes: Sequence[dict], out_dir: str) -> str:
  rows = [r for o in outcomes for r in results_rows(o)]
  with open(os.path.join(out_dir, "results.json"), "w") as f:
    json.dump(rows, f, indent=2)
  implemented = [o for o in outcomes if o["status"] != "not implemented"]
  passed = [o for o in implemented if o["status"] == "ok" and o["record"]["passed"]]
  lines = [
    "# Reproduction report",
    "",
    (
      f"Quick scale, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. {len(passed)} of {len(outcomes)} "
      f"papers reproduced; {len(outcomes) - len(implemented)} not implemented yet. Per-experiment outputs: "
      "`<key>/summary.md`, `metrics.json`, `log.txt`."
    ),
    "",
    "| paper | claim | paper's figure | target | measured | verdict | seconds | figure |",
    "|---|---|---|---|---|---|---|---|",
  ]
  for o in outcomes:
    entry = o["entry"]
    paper = f"{entry.title} ([{entry.arxiv}](https://arxiv.org/abs/{entry.arxiv}))"
    if o["status"] == "not implemented":
      lines.append(f"| {paper} | | | | | not implemented | | |")
      continue
    record = o["record"]
    if record is None:
      lines.append(f"| {paper} | | | | | {_verdict(o)} (see `{entry.key}/log.txt`) | {o['seconds']:.0f} | |")
      continue
    claims = record["claims"]
    claim_text = "<br>".join(_cell(c["statement"]) for c in claims)
    # The paper's own value for each claim, with its source, or "—" where the paper gives none.
    paper_text = "<br>".join(_cell(c.get("paper_value") or "—") for c in claims)
    target_text = "<br>".join(f"`{c['metric']}` {c['comparison']} {c['target']:g}" for c in claims)
    measured_text = "<br>".join(f"{_value(c['measured'])}" + ("" if c["passed"] else " ✗") for c in claims)
    figures = " ".join(f"[{name}]({entry.key}/{name})" for name in record["figures"])
    lines.append(
      f"| {paper} | {claim_text} | {paper_text} | {target_text} | {measured_text} | {_verdict(o)} | "
      f"{o['seconds']:.0f} | {figures} |"
    )
  path = os.path.join(out_dir, "REPORT.md")
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
  return path


def reproduce(entries: Sequence[registry.Entry], out_dir: str, timeout: float, seed: int = 0) -> list[dict]:
  os.makedirs(out_dir, exist_ok=True)
  outcomes = []
  built = [e for e in entries if e.experiment]
  for entry in entries:
    if not entry.experiment:
      outcomes.append({"entry": entry, "status": "not implemented", "seconds": 0.0, "record": None})
      continue
    print(f"[{built.index(entry) + 1}/{len(built)}] {entry.key}: {entry.title}", flush=True)
    outcome = run_one(entry, out_dir, timeout, seed)
    print(
      f"[{built.index(entry) + 1}/{len(built)}] {entry.key}: {_verdict(outcome)} in {outcome['seconds']:.0f} s",
      flush=True,
    )
    outcomes.append(outcome)
  path = write_report(outcomes, out_dir)
  print(f"wrote {path} and {os.path.join(out_dir, 'results.json')}", flush=True)
  return outcomes


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  entries = registry.PAPERS
  if FLAGS.only:
    known = {e.key for e in registry.PAPERS}
    unknown = sorted(set(FLAGS.only) - known)
    if unknown:
      sys.stderr.write(f"error: --only: unknown paper(s) {unknown}; known: {sorted(known)}\n")
      sys.exit(2)
    entries = [e for e in registry.PAPERS if e.key in FLAGS.only]
  outcomes = reproduce(entries, FLAGS.out_dir, FLAGS.timeout, FLAGS.seed)
  # Claims that do not hold are findings written to the report; an experiment that crashed or timed out is a
  # failure of the job itself.
  if any(o["status"] in ("error", "timeout") for o in outcomes):
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
