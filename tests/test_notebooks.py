"""Every notebook executes top to bottom at its smoke size (TOOLKIT_SMOKE=1) and prints what it claims."""

import glob
import os

import nbclient
import nbformat
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(REPO, "notebooks", "*.ipynb")))


def execute(path: str) -> str:
  """Runs the notebook in a fresh kernel from the repository root; returns the text it printed."""
  nb = nbformat.read(path, as_version=4)
  os.environ["TOOLKIT_SMOKE"] = "1"
  os.environ["MPLBACKEND"] = "Agg"
  nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": REPO}}).execute()
  return "".join(
    output.get("text", "") for cell in nb.cells if cell.cell_type == "code" for output in cell.get("outputs", [])
  )


def check_grokking(text: str) -> None:
  # The float32 collapse point of the single-sample demo lies in the window predicted from the mantissa.
  z = float(text.split("first z with softmax loss exactly 0 (float32):")[1].split()[0])
  assert 16.6 <= z <= 21.4
  assert "(c) softmax + ⊥AdamW: train acc" in text


def check_sinkhorn_newton_sparse(text: str) -> None:
  lines = {line.split(":")[0]: line for line in text.splitlines() if "iterations," in line}
  sns_iters = int(lines["SNS"].split(":")[1].split()[0])
  sinkhorn_iters = int(lines["ott Sinkhorn"].split(":")[1].split()[0])
  assert "converged True" in lines["SNS"] and "converged True" in lines["ott Sinkhorn"]
  assert sinkhorn_iters >= 20 * sns_iters
  # The two solvers find the same plan.
  assert float(text.split("max |P_SNS - P_Sinkhorn| =")[1].split()[0]) < 1e-6


def check_monge_gap(text: str) -> None:
  values = {}
  for line in text.splitlines():
    if "Monge gap" in line and "floor" in line:
      name, rest = line.split(":", 1)
      values[name] = [float(w.rstrip(",")) for w in rest.split() if w.rstrip(",").replace(".", "").isdigit()]
  (gap_t, floor_t), (gap_s, _) = values["translation"], values["shuffle"]
  assert abs(gap_t - floor_t) <= 1e-3 * floor_t  # an optimal map sits at ε log n
  assert gap_s > 50 * floor_t
  uvp = {line.split(":")[0]: float(line.split(":")[1].strip().rstrip("%")) for line in text.splitlines()
         if line.startswith("L2-UVP ")}
  assert uvp["L2-UVP with Monge gap"] < uvp["L2-UVP fitting only"]


def check_light_sb(text: str) -> None:
  value = lambda prefix: float(text.split(prefix)[1].split()[0].rstrip("%"))
  # K = 1 recovers the closed-form Gaussian bridge parameters S* = CᵀΣ0⁻¹, r* = μ1 - S*μ0.
  assert value("recovered S* relative error:") < 0.05
  assert value("recovered r* error:") < 0.05
  # The benchmark's conditional plans are recovered (the paper: 0.05% at d = 2, ε = 1, with 10k steps).
  assert value("cBW-UVP (d = 2, eps = 1):") < 1.0


CHECKS = {
  "grokking.ipynb": check_grokking,
  "light_sb.ipynb": check_light_sb,
  "monge_gap.ipynb": check_monge_gap,
  "sinkhorn_newton_sparse.ipynb": check_sinkhorn_newton_sparse,
}


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_executes(path):
  name = os.path.basename(path)
  assert name in CHECKS, f"{name} has no check in tests/test_notebooks.py"
  CHECKS[name](execute(path))
