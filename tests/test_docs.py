"""The documentation site builds with no warning (what ``make docs`` runs), and documents the public API."""

import json
import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_docs_build_without_warnings(tmp_path):
  out = tmp_path / "html"
  cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(REPO / "docs"), str(out)]
  result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-5000:]
  counts = json.loads((out / "counts.json").read_text())
  # Every field, module and notebook has its page; the API reference holds every public function and class.
  assert counts["fields"] == 12 and counts["tutorials"] == len(list((REPO / "notebooks").glob("*.ipynb")))
  assert counts["modules"] >= 60 and counts["public_names"] >= 600
  for page in ("index", "generated/api/smc", "generated/tutorials/grokking", "generated/fields/ot"):
    assert (out / f"{page}.html").exists(), page
  # A tutorial page carries the notebook's stored figures, written out as images of the site.
  page = (out / "generated" / "tutorials" / "grokking.html").read_text()
  images = re.findall(r'<img[^>]* src="\.\./\.\./(_images/[0-9a-f]+\.png)"', page)
  assert images and all((out / image).exists() for image in images)
