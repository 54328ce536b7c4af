"""Input checks that many modules share; each message names the argument and what was expected.

Shapes, dtypes and static values are checked at trace time. Values are checked only when they are concrete: a
traced value (inside ``jit``, ``vmap`` or a sweep) cannot be read at trace time, and its policy is the calling
module's (a flag in the output, or documented behaviour). Concrete values are read with numpy, never jnp
reductions: inside a ``jit`` trace, a jnp reduction of a closed-over constant is itself traced (CONTRIBUTING.md).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def is_traced(value: Any) -> bool:
  """Whether ``value`` is a tracer, whose values cannot be read at trace time."""
  return isinstance(value, jax.core.Tracer)


def check_int(value: Any, name: str, minimum: int = 1) -> int:
  """An integer scalar of at least ``minimum`` (a Python int or a numpy integer, never a bool), as a Python int.

  >>> check_int(np.int64(3), "num_steps")
  3
  >>> check_int(0, "num_steps")
  Traceback (most recent call last):
  ValueError: `num_steps` must be an int >= 1, got 0.
  """
  if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
    raise ValueError(f"`{name}` must be an int >= {minimum}, got {value!r}.")
  return int(value)


def check_positive(value: Any, name: str, *, scalar: bool = True) -> None:
  """A concrete ``value`` must be finite and > 0 everywhere (and a scalar when ``scalar``); a traced one is skipped.

  >>> check_positive(0.5, "sigma")
  >>> check_positive(0.0, "sigma")
  Traceback (most recent call last):
  ValueError: `sigma` must be a scalar > 0, got 0.0.
  """
  if is_traced(value):
    return
  try:
    concrete = np.asarray(value, dtype=np.float64)
  except (TypeError, ValueError):
    raise TypeError(
      f"`{name}` must be {'a scalar' if scalar else 'a number or an array'} > 0, got {value!r}."
    ) from None
  if scalar and concrete.ndim != 0:
    raise ValueError(f"`{name}` must be a scalar > 0, got shape {concrete.shape}.")
  if not (np.isfinite(concrete) & (concrete > 0)).all():
    raise ValueError(f"`{name}` must be {'a scalar ' if scalar else ''}> 0, got {value!r}.")


def check_ids(ids: Any, upper: int, name: str, meaning: str = "") -> None:
  """Concrete integer ids must lie in ``[0, upper)``; ``meaning`` says what they index (the classes, ...).

  An out-of-range id fails silently downstream: ``jnp.take`` and indexing clamp it to a real row, one-hot and
  segment sums drop it, and an embedding lookup gives NaN.

  >>> check_ids(np.array([0, 2]), 3, "labels", "the classes")
  >>> check_ids(np.array([0, 3]), 3, "labels", "the classes")
  Traceback (most recent call last):
  ValueError: `labels` must lie in [0, 3) (the classes), got values in [0, 3].
  """
  if is_traced(ids) or not np.size(ids):
    return
  concrete = np.asarray(ids)
  lo, hi = int(concrete.min()), int(concrete.max())
  if lo < 0 or hi >= upper:
    what = f" ({meaning})" if meaning else ""
    raise ValueError(f"`{name}` must lie in [0, {upper}){what}, got values in [{lo}, {hi}].")


def check_weight_values(weights: Any, name: str = "weights") -> None:
  """Concrete importance or case weights must be free of NaN, non-negative, with a positive finite sum.

  >>> check_weight_values(np.array([0.5, np.nan]))
  Traceback (most recent call last):
  ValueError: `weights` contains NaN (at indices [1]).
  """
  if is_traced(weights):
    return
  w = np.asarray(weights)
  if np.any(np.isnan(w)):
    raise ValueError(f"`{name}` contains NaN (at indices {np.flatnonzero(np.isnan(w)).tolist()[:8]}).")
  if np.any(w < 0):
    raise ValueError(f"`{name}` must be non-negative, got a minimum of {float(np.min(w))}.")
  total = np.sum(w, dtype=np.float64)
  if not np.isfinite(total) or not total > 0:
    raise ValueError(f"`{name}` must have a positive finite sum, got {float(total)}.")
