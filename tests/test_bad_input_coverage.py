"""Every public function of the toolkit has a bad-input test (issue 18's contract): some test calls it inside a
``with pytest.raises(...)`` block and checks the error it gives.

Found statically, over the test files' syntax trees: a call inside such a block is resolved through the file's
imports (``from toolkit.smc import paris`` then ``paris.init(...)`` is ``toolkit.smc.paris.init``; ``from
toolkit.quant.zeroquant import rtn`` then ``rtn(...)``); a bare name that the file does not import from the toolkit
counts for the public function of that name when only one module defines it. Every public function is covered
(the backlog of 307 uncovered functions that this test started with is gone): a new one comes with its bad-input
test.
"""

from __future__ import annotations

import ast
import collections
import importlib
import inspect
import pathlib
import pkgutil

import toolkit

TESTS = pathlib.Path(__file__).parent


def public_functions() -> dict[str, str]:
  """Full name → bare name of every public function that takes an argument, defined in a public toolkit module.

  A function without parameters (``cli.binaries()``, ``dispatch.default_impl()``) cannot be handed a bad input.
  """
  modules = [toolkit]
  for info in pkgutil.walk_packages(toolkit.__path__, "toolkit."):
    if not any(part.startswith("_") for part in info.name.split(".")):
      modules.append(importlib.import_module(info.name))
  out = {}
  for module in modules:
    for name, obj in vars(module).items():
      if (
        not name.startswith("_")
        and inspect.isfunction(obj)
        and obj.__module__ == module.__name__
        and inspect.signature(obj).parameters
      ):
        out[f"{module.__name__}.{name}"] = name
  return out


def _imports(tree: ast.Module) -> tuple[dict[str, str], dict[str, str]]:
  """(alias → module, bare name → module of the function) from the file's toolkit imports."""
  modules, names = {}, {}
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name.startswith("toolkit"):
          modules[alias.asname or alias.name] = alias.name
    elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("toolkit"):
      for alias in node.names:
        full = f"{node.module}.{alias.name}"
        try:
          importlib.import_module(full)
          modules[alias.asname or alias.name] = full
        except ImportError:
          names[alias.asname or alias.name] = node.module
  return modules, names


def _is_raises(item: ast.withitem) -> bool:
  return isinstance(item.context_expr, ast.Call) and ast.unparse(item.context_expr.func).endswith("raises")


def functions_called_under_raises() -> tuple[set[str], set[str]]:
  """(fully resolved names, unresolved bare names) of the calls inside ``pytest.raises`` blocks of all tests."""
  resolved, bare = set(), set()
  for path in TESTS.rglob("*.py"):
    tree = ast.parse(path.read_text())
    modules, names = _imports(tree)
    for node in ast.walk(tree):
      if not (isinstance(node, ast.With) and any(_is_raises(item) for item in node.items)):
        continue
      for call in (c for stmt in node.body for c in ast.walk(stmt) if isinstance(c, ast.Call)):
        func = call.func
        if isinstance(func, ast.Attribute):
          base = ast.unparse(func.value)
          if base in modules:
            resolved.add(f"{modules[base]}.{func.attr}")
          else:  # a method, or a module reached another way: the bare name
            bare.add(func.attr)
        elif isinstance(func, ast.Name):
          if func.id in names:
            resolved.add(f"{names[func.id]}.{func.id}")
          else:
            bare.add(func.id)
  return resolved, bare


def uncovered() -> set[str]:
  functions = public_functions()
  resolved, bare = functions_called_under_raises()
  defined_in = collections.Counter(functions.values())
  # A function re-exported by its field package (``toolkit.smc.paris_smoother`` …) counts under its own module.
  return {
    full
    for full, name in functions.items()
    if full not in resolved
    and not any(r.endswith(f".{name}") and full.startswith(r.rsplit(".", 1)[0]) for r in resolved)
    and not (name in bare and defined_in[name] == 1)
  }


def test_every_public_function_has_a_bad_input_test():
  missing = sorted(uncovered())
  assert not missing, (
    f"{len(missing)} public function(s) with no call inside a `pytest.raises` block in tests/: {missing}. Give each "
    "a bad-input test (a ValueError/TypeError naming the argument)."
  )
