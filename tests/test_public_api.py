"""The package's public surface: each field's ``__init__`` exports its modules and their public classes (the
states, outputs and models a user annotates with), and no two public classes anywhere in the package share a name.

Functions are exported by the field's package when their name says what they are (``toolkit.smc.backward_mcmc``);
generic step-API names (``paris.init``, ``fkc.step``, ``light_sb.fit``) and names that two modules share
(``kivi.dequantize``, ``tmac.dequantize``) are reached through their module, like ``blackjax.smc.tempered.init``.
"""

import collections
import importlib
import inspect
import pkgutil

import pytest

import toolkit

FIELDS = sorted(m.name for m in pkgutil.iter_modules(toolkit.__path__) if m.ispkg)


def modules_of(field):
  package = importlib.import_module(f"toolkit.{field}")
  return package, {
    m.name: importlib.import_module(f"toolkit.{field}.{m.name}")
    for m in pkgutil.iter_modules(package.__path__)
    if not m.name.startswith("_")
  }


def public_definitions(module):
  return {
    name: obj
    for name, obj in vars(module).items()
    if not name.startswith("_")
    and (inspect.isfunction(obj) or inspect.isclass(obj))
    and getattr(obj, "__module__", None) == module.__name__
  }


@pytest.mark.parametrize("field", FIELDS)
def test_each_field_exports_its_modules_and_their_public_classes(field):
  package, modules = modules_of(field)
  exported = set(getattr(package, "__all__", ()))
  assert set(modules) <= exported, f"toolkit.{field} does not export {sorted(set(modules) - exported)}"
  classes = {
    name for module in modules.values() for name, obj in public_definitions(module).items() if inspect.isclass(obj)
  }
  missing = sorted(classes - exported)
  assert not missing, f"toolkit.{field} does not export {missing}"
  for name in exported:
    assert hasattr(package, name), f"toolkit.{field}.__all__ names {name}, which it does not define"


def test_no_two_public_classes_share_a_name():
  classes = collections.defaultdict(set)
  for field in FIELDS:
    for module in modules_of(field)[1].values():
      for name, obj in public_definitions(module).items():
        if inspect.isclass(obj):
          classes[name].add(f"{module.__name__}.{name}")
  shared = {name: sorted(where) for name, where in classes.items() if len(where) > 1}
  assert not shared, shared
