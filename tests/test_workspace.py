"""WORKSPACE.md tells the truth: 24 rows matching the registry, and every path a done row names exists."""

import os
import re

from experiments import registry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def paper_rows():
  with open(os.path.join(REPO, "WORKSPACE.md")) as f:
    text = f.read().split("## Shared pieces")[0]
  rows = [line for line in text.splitlines() if re.match(r"^\| .* \| \d{4}\.\d{4,5} \|", line)]
  return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


def test_one_row_per_registered_paper():
  rows = paper_rows()
  assert len(rows) == 24
  assert {r[1] for r in rows} == {e.arxiv for e in registry.PAPERS}
  assert all(r[-1] in ("done", "planned") for r in rows)


def test_done_rows_name_existing_files_and_a_registered_experiment():
  done = [r for r in paper_rows() if r[-1] == "done"]
  built = {e.arxiv for e in registry.PAPERS if e.experiment}
  assert {r[1] for r in done} == built
  for row in done:
    module, binary, notebook, tests = row[2:6]
    for cell in (module, binary, notebook, tests):
      paths = re.findall(r"`([^`]+)`", cell)
      assert paths, row
      for path in paths:
        assert os.path.exists(os.path.join(REPO, path)), path
