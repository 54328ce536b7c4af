"""Closed forms for gradient descent on least squares: the oracles of ``toolkit.dynamics.random_features``.

Gradient descent from zero on ``½‖Zw − y‖²`` with step ``η`` acts on each singular direction of ``Z = U S Vᵀ``
separately: after t steps ``w_t = Σ_i [1 − (1 − η s_i²)^t] (u_iᵀ y / s_i) v_i``, which tends to the minimum-norm
solution ``Z⁺ y`` when ``η < 2 / s_max²`` (e.g. Liu and Flanigan, arXiv 2312.03951, § 3; a textbook fact of
linear regression).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from toolkit import _checks
from toolkit.dynamics import random_features


def _check_lr_and_steps(lr, num_steps) -> None:
  _checks.check_int(num_steps, "num_steps", 0)
  # A traced step size (a sweep) cannot be read here; a concrete one must be a finite positive scalar.
  _checks.check_positive(lr, "lr")


def gd_closed_form(features: jax.Array, targets: jax.Array, *, lr: float | jax.Array, num_steps: int) -> jax.Array:
  """The last layer after ``num_steps`` of gradient descent from zero, per singular direction (no iteration).

  >>> z = jnp.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
  >>> gd_closed_form(z, jnp.array([1.0, 4.0, 5.0]), lr=0.25, num_steps=1).tolist()
  [0.25, 2.0]
  """
  random_features._check_matrix(features, targets)
  _check_lr_and_steps(lr, num_steps)
  u, s, vt = jnp.linalg.svd(features, full_matrices=False)
  fitted = 1.0 - (1.0 - lr * s**2) ** num_steps
  safe = jnp.where(s > 0, s, 1.0)
  coefficients = jnp.where(s > 0, fitted / safe, 0.0)[:, None] * (u.T @ targets.reshape(targets.shape[0], -1))
  return (vt.T @ coefficients).reshape(features.shape[1:] + targets.shape[1:])


def fitted_fraction(singular_values: jax.Array, *, lr: float | jax.Array, num_steps: int) -> jax.Array:
  """The share ``1 − (1 − η s_i²)^t`` of each singular direction that t steps of gradient descent have fitted."""
  _check_lr_and_steps(lr, num_steps)
  return 1.0 - (1.0 - lr * singular_values**2) ** num_steps
