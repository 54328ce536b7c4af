"""The notebooks are stored with the outputs of one top-to-bottom run of their current code (``make notebooks``).

The docs render these outputs without running anything, so a stale or partial set would show figures that the
code no longer makes. The tests of ``test_notebooks*.py`` execute the same notebooks again at a small size.
"""

import importlib.util
import pathlib

import nbformat
import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def load_docs_notebooks():
  spec = importlib.util.spec_from_file_location("docs_notebooks", REPO / "docs" / "notebooks.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_outputs_come_from_the_current_code(path):
  nb = nbformat.read(path, as_version=4)
  code = [cell for cell in nb.cells if cell.cell_type == "code"]
  stored = nb.metadata.get("toolkit", {}).get("source_sha256")
  assert stored == load_docs_notebooks().code_sha256(nb), f"{path.name}: code changed since `make notebooks`"
  # Every code cell ran, in order, in one kernel, without an error.
  assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1)), path.name
  errors = [out for cell in code for out in cell.outputs if out.output_type == "error"]
  assert not errors, f"{path.name}: {errors[0].ename}: {errors[0].evalue}"
  # The tutorial shows what it computes: printed results and at least one figure.
  assert any(out.get("text") or out.get("data", {}).get("text/plain") for cell in code for out in cell.outputs)
  assert any("image/png" in out.get("data", {}) for cell in code for out in cell.outputs), path.name
