"""Executes the notebooks at their tutorial size and stores their outputs, so the docs render them without running.

  python docs/notebooks.py                 # every notebook under notebooks/
  python docs/notebooks.py grokking kivi   # some of them

Each notebook runs top to bottom in a fresh kernel from the repository root, with inline figures. Its metadata then
records a hash of its code cells (``toolkit.source_sha256``): ``tests/test_notebook_outputs.py`` fails when a code
cell was edited after the outputs were stored, or when a code cell was never executed. The same script rewrites
each notebook's first code cell from ``install_cell()``, the one place that says where the toolkit is installed from.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"

# The pip requirement a notebook installs when the toolkit is missing: where the repository is published
# (`[project.urls]` of pyproject.toml, checked by tests/test_notebook_outputs.py).
INSTALL_REQUIREMENT = "toolkit @ git+https://github.com/toolkit-dev/toolkit.git"


def install_cell() -> str:
  """The first code cell of every notebook: installs the toolkit where it cannot be imported (Colab)."""
  return f'''# Installs the toolkit where it cannot be imported (Colab, a bare kernel). TOOLKIT_REQUIREMENT overrides
# where from: any pip requirement (a git URL, a wheel file, a local clone).
import importlib
import importlib.util
import os
import subprocess
import sys

if importlib.util.find_spec("toolkit") is None:
  requirement = os.environ.get("TOOLKIT_REQUIREMENT", "{INSTALL_REQUIREMENT}")
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", requirement], check=True)
  importlib.invalidate_caches()'''


def code_sha256(nb) -> str:
  """A hash of the notebook's code cells, in order: what its stored outputs were computed from."""
  digest = hashlib.sha256()
  for cell in nb.cells:
    if cell.cell_type == "code":
      digest.update(cell.source.encode())
      digest.update(b"\0")
  return digest.hexdigest()


def set_install_cell(nb) -> None:
  first = next(cell for cell in nb.cells if cell.cell_type == "code")
  first.source = install_cell()


def execute(path: pathlib.Path, timeout: int = 3600) -> float:
  """Runs one notebook at its tutorial size and writes it back with its outputs; returns the seconds it took."""
  import nbclient
  import nbformat

  nb = nbformat.read(path, as_version=4)
  set_install_cell(nb)
  env_backup = {k: os.environ.pop(k, None) for k in ("TOOLKIT_SMOKE", "MPLBACKEND")}
  start = time.time()
  try:
    client = nbclient.NotebookClient(
      nb, timeout=timeout, kernel_name="python3", record_timing=False, resources={"metadata": {"path": str(REPO)}}
    )
    client.execute()
  finally:
    for key, value in env_backup.items():
      if value is not None:
        os.environ[key] = value
  nb.metadata.setdefault("toolkit", {})["source_sha256"] = code_sha256(nb)
  nbformat.write(nb, path)
  return time.time() - start


def main(names: list[str]) -> None:
  paths = [NOTEBOOKS / f"{name}.ipynb" for name in names] if names else sorted(NOTEBOOKS.glob("*.ipynb"))
  for path in paths:
    if not path.exists():
      sys.exit(f"no notebook {path}")
  for path in paths:
    print(f"{path.name}: running", flush=True)
    seconds = execute(path)
    print(f"{path.name}: {seconds:.0f} s", flush=True)


if __name__ == "__main__":
  main(sys.argv[1:])
