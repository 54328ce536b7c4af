"""The ``toolkit`` command: the experiment binaries and the main job, for an installed toolkit as for a clone.

  toolkit list                                # the papers, their binaries and the benchmarks
  toolkit reproduce --out_dir=reports         # every paper's quick-scale claim -> reports/REPORT.md
  toolkit grokking --quick --out_dir=runs/g   # one paper's binary with its own flags (`--help` lists them)
  toolkit bench_tmac                          # a benchmark

``toolkit <name> ...`` is ``python -m experiments.<name> ...`` in a clone: the binaries ship inside the package as
``toolkit.experiments``, and the command runs one of them as ``__main__`` with the remaining arguments.
"""

from __future__ import annotations

import importlib
import pkgutil
import runpy
import sys
from collections.abc import Sequence

_NOT_BINARIES = frozenset({"registry"})


def experiments_package() -> str:
  """The importable name of the experiment binaries: ``toolkit.experiments`` when installed, else ``experiments``."""
  for name in ("toolkit.experiments", "experiments"):
    try:
      importlib.import_module(name)
    except ImportError:
      continue
    return name
  raise ImportError("neither toolkit.experiments nor experiments can be imported: is the toolkit installed?")


def binaries() -> list[str]:
  """The names ``toolkit <name>`` accepts: each paper's experiment, ``reproduce`` and the ``bench_*`` scripts."""
  package = importlib.import_module(experiments_package())
  return sorted(
    m.name
    for m in pkgutil.iter_modules(package.__path__)
    if not m.ispkg and not m.name.startswith("_") and m.name not in _NOT_BINARIES
  )


def _listing() -> str:
  registry = importlib.import_module(f"{experiments_package()}.registry")
  names = binaries()
  lines = ["papers (toolkit <binary> --quick runs the reproduce scale; without --quick, the paper's):"]
  for entry in registry.PAPERS:
    binary = entry.experiment if entry.experiment in names else "(not implemented)"
    lines.append(f"  {binary:<26} {entry.title} (arXiv {entry.arxiv})")
  lines.append("main job:")
  lines.append(f"  {'reproduce':<26} every paper's quick-scale claim -> <out_dir>/REPORT.md")
  lines.append("benchmarks:")
  lines.extend(f"  {name}" for name in names if name.startswith("bench_"))
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
  """Entry point of the ``toolkit`` console script; returns the exit status."""
  # A bare string would be split into one-letter arguments and reported as an unknown binary.
  args = list(sys.argv[1:] if argv is None or isinstance(argv, str | bytes) else argv)
  if isinstance(argv, str | bytes) or not all(isinstance(a, str) for a in args):
    raise TypeError(f"`argv` must be a sequence of str (the arguments after `toolkit`) or None, got {argv!r}.")
  if not args or args[0] in ("-h", "--help", "help"):
    print("\n\n".join(__doc__.strip().split("\n\n")[:2]))  # what the command is, and its usage lines
    print()
    print(_listing())
    return 0 if args else 2
  if args[0] == "list":
    print(_listing())
    return 0
  name = args[0]
  if name not in binaries():
    print(f"toolkit: no binary named {name!r}; `toolkit list` names them.", file=sys.stderr)
    return 2
  # absl reads the flags from sys.argv; its program name shows in --help and in one-line errors.
  sys.argv = [f"toolkit {name}", *args[1:]]
  try:
    runpy.run_module(f"{experiments_package()}.{name}", run_name="__main__")
  except SystemExit as exit_:
    code = exit_.code
    if code is None or isinstance(code, int):
      return code or 0
    print(code, file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
