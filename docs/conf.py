"""Sphinx configuration of the toolkit's documentation site (``make docs``; warnings are errors)."""

from __future__ import annotations

import inspect
import json
import os
import pathlib
import re
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
DOCS = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(DOCS.parent))

import toolkit_pages
from sphinx.util import logging

import toolkit

project = "toolkit"
author = "the toolkit authors"
copyright = "2026, the toolkit authors"
release = version = toolkit.__version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax", "myst_nb"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "_ext", "notebooks.py", "shared.md"]
root_doc = "index"

# The notebooks render from the outputs that `make notebooks` stored; the build never runs them.
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_default_options = {"show-inheritance": False}
add_module_names = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True

html_theme = "sphinx_book_theme"
html_title = f"toolkit {release}"
html_theme_options = {"show_toc_level": 2}

_COUNTS = toolkit_pages.generate()
_DOCUMENTED: set[str] = set()
_logger = logging.getLogger("toolkit_docs")


def _check_docstring(app, what, name, obj, skip, options):
  """Every public function and class of a module has a docstring: a missing one is a warning (so an error)."""
  # Called whether or not autodoc keeps the member (it drops those without a docstring), so a missing one shows.
  if what != "module" or name.startswith("_"):
    return
  if inspect.isfunction(obj) or inspect.isclass(obj):
    module = getattr(obj, "__module__", "")
    if not module.startswith("toolkit") or "._" in module:
      return
    qualified = f"{module}.{name}"
    if not (obj.__doc__ or "").strip():
      _logger.warning(f"{qualified} is public and has no docstring")
    _DOCUMENTED.add(qualified)
  return


_LITERAL = re.compile(r"(``.*?``)")


def _escape_bars(app, what, name, obj, options, lines):
  """Docstrings write math as text, with ``|x|`` for a norm: escape the bars, which reST reads as substitutions.

  Doctest blocks (``>>>`` to the next blank line), literal blocks (after ``::``) and ````literal```` spans are left
  as they are.
  """
  in_doctest = False
  literal_indent = None
  for i, line in enumerate(lines):
    stripped = line.strip()
    indent = len(line) - len(line.lstrip())
    if literal_indent is not None:
      if stripped and indent <= literal_indent:
        literal_indent = None
      else:
        continue
    if stripped.startswith(">>>"):
      in_doctest = True
    elif not stripped:
      in_doctest = False
    if in_doctest:
      continue
    if stripped.endswith("::"):
      literal_indent = indent
    parts = _LITERAL.split(line)
    lines[i] = "".join(part if part.startswith("``") else part.replace("|", "\\|") for part in parts)


def _summary(app, exception):
  if exception is None:
    counts = dict(_COUNTS, public_names=len(_DOCUMENTED))
    (pathlib.Path(app.outdir) / "counts.json").write_text(json.dumps(counts, indent=1))
    _logger.info(f"toolkit docs: {counts}")


def setup(app):
  app.connect("autodoc-skip-member", _check_docstring)
  app.connect("autodoc-process-docstring", _escape_bars)
  app.connect("build-finished", _summary)
