"""The package as a user installs it: metadata in one place, and a wheel that works outside the source tree.

The slow test builds the wheel, makes a fresh virtual environment in a temporary folder, lets a notebook's first
cell install the wheel there (as it installs the toolkit on Colab), then imports every module, runs the ``toolkit``
command and one experiment binary at a tiny size: data files, the cache and the entry point without the repository.
"""

import importlib.metadata
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import time
import tomllib

import nbformat
import pytest

import toolkit

REPO = pathlib.Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def load_docs_notebooks():
  spec = importlib.util.spec_from_file_location("docs_notebooks", REPO / "docs" / "notebooks.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_pyproject_lists_every_package():
  listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
  on_disk = {
    ".".join(path.relative_to(REPO).parts)
    for path in (REPO / "toolkit").rglob("*")
    if path.is_dir() and path.name != "__pycache__"
  } | {"toolkit"}
  on_disk |= {"toolkit.experiments"} | {
    "toolkit.experiments." + path.name
    for path in (REPO / "experiments").iterdir()
    if path.is_dir() and path.name != "__pycache__"
  }
  assert listed == on_disk


def test_version_has_one_source():
  assert PYPROJECT["project"]["dynamic"] == ["version"]
  assert importlib.metadata.version("toolkit") == toolkit.__version__


def test_notebooks_install_from_the_published_repository():
  docs_notebooks = load_docs_notebooks()
  repository = PYPROJECT["project"]["urls"]["Repository"]
  assert docs_notebooks.INSTALL_REQUIREMENT == f"toolkit @ git+{repository}"
  for path in sorted((REPO / "notebooks").glob("*.ipynb")):
    nb = nbformat.read(path, as_version=4)
    first = next(cell for cell in nb.cells if cell.cell_type == "code")
    assert first.source == docs_notebooks.install_cell(), f"{path.name}: run `make notebooks` to refresh cell 1"


def test_console_script_is_declared():
  assert PYPROJECT["project"]["scripts"] == {"toolkit": "toolkit.cli:main"}


def run(cmd, cwd, env, timeout=900):
  result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
  assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
  return result.stdout


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_source_tree(tmp_path):
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TOOLKIT_SMOKE", "VIRTUAL_ENV")}
  # The pinned versions of the clone's environment, and a cache that is not the user's.
  env.update(PIP_CONSTRAINT=str(REPO / "constraints.txt"), TOOLKIT_CACHE_DIR=str(tmp_path / "cache"))
  env.update(MPLBACKEND="Agg", PIP_DISABLE_PIP_VERSION_CHECK="1")
  timings = {}

  start = time.time()
  run([sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path / "dist"), str(REPO)], tmp_path, env)
  (wheel,) = (tmp_path / "dist").glob("toolkit-*.whl")
  timings["build"] = time.time() - start

  start = time.time()
  venv = tmp_path / "venv"
  run([sys.executable, "-m", "venv", str(venv)], tmp_path, env)
  python = str(venv / "bin" / "python")
  env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
  # Only what executes a notebook: the notebook's own first cell installs the toolkit.
  run([python, "-m", "pip", "install", "-q", "nbclient", "nbformat", "ipykernel"], tmp_path, env)
  timings["venv"] = time.time() - start

  start = time.time()
  workdir = tmp_path / "work"
  workdir.mkdir()
  executed = workdir / "double_descent.ipynb"
  script = (
    "import nbclient, nbformat, sys\n"
    "nb = nbformat.read(sys.argv[1], as_version=4)\n"
    "nbclient.NotebookClient(nb, timeout=900, kernel_name='python3').execute(cwd=sys.argv[2])\n"
    "nbformat.write(nb, sys.argv[1])\n"
  )
  notebook = nbformat.read(REPO / "notebooks" / "double_descent.ipynb", as_version=4)
  nbformat.write(notebook, executed)
  run(
    [python, "-c", script, str(executed), str(workdir)],
    workdir,
    {**env, "TOOLKIT_SMOKE": "1", "TOOLKIT_REQUIREMENT": str(wheel)},
  )
  timings["notebook (installs the wheel)"] = time.time() - start
  printed = "".join(
    output.get("text", "")
    for cell in nbformat.read(executed, as_version=4).cells
    if cell.cell_type == "code"
    for output in cell.get("outputs", [])
  )
  assert "min-norm" in printed

  start = time.time()
  check = (
    "import importlib, pkgutil, sys, toolkit\n"
    "assert not toolkit.__file__.startswith(sys.argv[1]), toolkit.__file__\n"
    # The library's modules; the binaries define absl flags at import and run one per process (below).
    "names = [m.name for m in pkgutil.walk_packages(toolkit.__path__, 'toolkit.')\n"
    "         if not m.name.startswith('toolkit.experiments.')]\n"
    "for name in names: importlib.import_module(name)\n"
    "from toolkit.data import digits, text\n"
    "assert digits.load_digits()[0].shape[0] == 1797\n"
    "assert len(text.load_corpus()) > 10**6\n"
    "from toolkit import cache\n"
    "cache.write_atomically(cache.cache_dir('models') / 'probe.bin', b'1')\n"
    "assert str(cache.cache_dir('models')).startswith(sys.argv[2])\n"
    "from toolkit.experiments import reproduce, registry\n"
    "print(reproduce._module(registry.by_key('presto')), len(names))\n"
  )
  out = run([python, "-c", check, str(REPO), env["TOOLKIT_CACHE_DIR"]], workdir, env)
  assert out.split()[0] == "toolkit.experiments.presto"
  modules = int(out.split()[1])
  assert "double_descent" in run(["toolkit", "list"], workdir, env)
  run(
    [
      "toolkit",
      "double_descent",
      "--quick",
      f"--out_dir={workdir / 'run'}",
      "--config.num_train=40",
      "--config.num_test=200",
      "--config.num_seeds=2",
      "--config.ratios=(0.25,0.5,0.9,1.0,1.1,2.0,3.0)",
      "--config.settings=('min-norm','GD 10 steps','GD 100 steps','Adam 300 steps')",
    ],
    workdir,
    env,
  )
  record = json.loads((workdir / "run" / "metrics.json").read_text())
  assert record["measured"]["min_norm_peak_height"] > 1
  assert (workdir / "run" / "double_descent.png").exists()
  timings["imports, toolkit list, one binary"] = time.time() - start

  # The main job from the installed package: each paper's binary starts in its own process as
  # `python -m toolkit.experiments.<name>`. Stopped by its time limit here (a whole quick run is the clone's test).
  start = time.time()
  reports = workdir / "reports"
  cmd = ["toolkit", "reproduce", "--only=light_sb", "--timeout=25", f"--out_dir={reports}"]
  result = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 1 and "light_sb: **timeout**" in result.stdout, result.stdout + result.stderr
  log = (reports / "light_sb" / "log.txt").read_text()
  assert "light_sb: quick scale, seed 0" in log and "Traceback" not in log, log[-3000:]
  assert "**timeout**" in (reports / "REPORT.md").read_text()
  timings["toolkit reproduce (stopped at 25 s)"] = time.time() - start
  size = wheel.stat().st_size / 2**20
  print(
    f"wheel {wheel.name}: {size:.2f} MiB, {modules} modules; " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
  )
