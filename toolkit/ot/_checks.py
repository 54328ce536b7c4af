"""Trace-time input checks shared by the OT modules (each message names the argument)."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp


def is_tracer(value: Any) -> bool:
  return isinstance(value, jax.core.Tracer)


def check_epsilon(epsilon: Any, meaning: str = "the Wiener variance of the prior") -> None:
  """ε must be a positive scalar; checked at trace time when it is concrete (``meaning`` goes into the message)."""
  if is_tracer(epsilon):
    if jnp.ndim(epsilon) != 0:
      raise ValueError(f"`epsilon` must be a scalar, got shape {jnp.shape(epsilon)}.")
    return
  try:
    value = float(epsilon)
  except (TypeError, ValueError):
    raise TypeError(f"`epsilon` must be a positive scalar, got {epsilon!r}.") from None
  if not value > 0 or not math.isfinite(value):
    raise ValueError(f"`epsilon` must be a finite number > 0 ({meaning}), got {epsilon!r}.")


def check_points(x: Any, dim: int, name: str) -> jax.Array:
  """``x`` as a floating-point array of shape ``(..., dim)``."""
  x = jnp.asarray(x)
  if x.ndim < 1 or x.shape[-1] != dim:
    raise ValueError(f"`{name}` must have shape (..., d) with d = {dim} (the parameters' dimension), got {x.shape}.")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"`{name}` must be a floating-point array, got dtype {x.dtype}.")
  return x


def check_square(cov: jax.Array, dim: int, name: str) -> None:
  if jnp.shape(cov) != (dim, dim):
    raise ValueError(f"`{name}` must have shape (d, d) = ({dim}, {dim}), got {jnp.shape(cov)}.")


def check_count(value: Any, name: str, minimum: int = 1) -> None:
  """A static Python int count (``num_*``) of at least ``minimum``."""
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise ValueError(f"`{name}` must be an int >= {minimum}, got {value!r}.")
