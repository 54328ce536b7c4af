"""Trace-time input checks shared by the OT modules (each message names the argument)."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from toolkit import _checks

is_tracer = _checks.is_traced


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


def check_covariance(cov: jax.Array, dim: int, name: str) -> None:
  """(d, d), and when concrete symmetric positive definite (a non-PSD one gave NaN, an asymmetric one was
  silently symmetrised by the matrix square root)."""
  check_square(cov, dim, name)
  if is_tracer(cov):
    return
  c = np.asarray(cov, np.float64)
  scale = max(float(np.abs(c).max()), 1e-30)
  if not np.all(np.isfinite(c)) or np.abs(c - c.T).max() > 1e-5 * scale:
    raise ValueError(f"`{name}` must be a finite symmetric matrix (a covariance).")
  smallest = float(np.linalg.eigvalsh(c).min())
  if not smallest > 0:
    raise ValueError(f"`{name}` must be positive definite (a covariance), got a smallest eigenvalue of {smallest:.3g}.")


def check_count(value: Any, name: str, minimum: int = 1) -> None:
  """A static Python int count (``num_*``) of at least ``minimum``."""
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise ValueError(f"`{name}` must be an int >= {minimum}, got {value!r}.")
