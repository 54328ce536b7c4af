"""Exact moments, normaliser and draws of an unnormalised 2-D density by quadrature on a grid.

The oracle of a sampler whose target has no closed form (e.g. ``q^½`` of a Gaussian mixture): the midpoint rule
on a ``num_points × num_points`` grid over ``[-half_width, half_width]²``. For smooth densities that the grid resolves
and
holds (``edge_mass`` ≈ 0) the error of the rule falls faster than any power of the cell width (it is the
trapezoidal rule of a function that vanishes at the edges; L. N. Trefethen and J. A. C. Weideman, "The
exponentially convergent trapezoidal rule", SIAM Review 56(3), 2014, §5).

>>> import jax.numpy as jnp
>>> from toolkit.stats import quadrature
>>> oracle = quadrature.grid_oracle(lambda x: -0.5 * jnp.sum(x**2, -1), 6.0, 201)
>>> print(round(oracle.log_normalizer, 4), round(float(jnp.log(2 * jnp.pi)), 4))  # ∫ exp(-|x|²/2) = 2π
1.8379 1.8379
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from toolkit import _checks
from toolkit.smc import resampling


class GridOracle(NamedTuple):
  """Quadrature of ``exp(log_density)`` on a 2-D grid.

  Attributes:
    mean: ``(2,)`` mean of the normalised density.
    cov: ``(2, 2)`` covariance.
    log_normalizer: ``log ∫ exp(log_density)`` (a Python float).
    points: ``(num_points², 2)`` the grid's cell centres.
    log_probs: ``(num_points²,)`` normalised log-masses of the cells.
    cell: the cell width (a Python float).
    edge_mass: mass in the outer ring of cells (a Python float): the grid must hold the whole target, so this
      should be negligible.
  """

  mean: jax.Array
  cov: jax.Array
  log_normalizer: float
  points: jax.Array
  log_probs: jax.Array
  cell: float
  edge_mass: float


def _edge_mass(w):
  return w[0].sum() + w[-1].sum() + w[:, 0].sum() + w[:, -1].sum()


def grid_oracle(log_density: Callable[[jax.Array], jax.Array], half_width: float, num_points: int) -> GridOracle:
  """Mean, covariance and log-normaliser of ``exp(log_density)`` by the midpoint rule on ``[-L, L]²`` (float32).

  Args:
    log_density: ``(M, 2) -> (M,)`` unnormalised log-density.
    half_width: ``L``, the grid's half width.
    num_points: number of grid points per axis (>= 2).

  Returns:
    :class:`GridOracle`.
  """
  if not isinstance(num_points, int) or isinstance(num_points, bool) or num_points < 2:
    raise ValueError(f"`num_points` must be a Python int >= 2, got {num_points!r}.")
  if not half_width > 0:
    raise ValueError(f"`half_width` must be > 0, got {half_width!r}.")
  g = np.linspace(-half_width, half_width, num_points)
  xx, yy = np.meshgrid(g, g)
  points = jnp.asarray(np.stack([xx.ravel(), yy.ravel()], -1), jnp.float32)
  lp = log_density(points)
  log_norm = jax.nn.logsumexp(lp)
  w = jnp.exp(lp - log_norm)
  mean = w @ points
  cov = (w[:, None] * (points - mean)).T @ (points - mean)
  cell = float(g[1] - g[0])
  return GridOracle(
    mean=mean,
    cov=cov,
    log_normalizer=float(log_norm + 2 * np.log(cell)),
    points=points,
    log_probs=lp - log_norm,
    cell=cell,
    edge_mass=float(_edge_mass(w.reshape(num_points, num_points))),
  )


def grid_sample(key: jax.Array, oracle: GridOracle, num_samples: int) -> jax.Array:
  """``(num_samples, 2)`` draws from the grid oracle: a cell by its mass, then uniform within the cell.

  The draws are shuffled (cells are drawn in sorted order).

  >>> import jax.numpy as jnp
  >>> oracle = grid_oracle(lambda x: -0.5 * jnp.sum(x**2, -1), 6.0, 101)
  >>> grid_sample(jax.random.key(0), oracle, 1000).shape
  (1000, 2)
  """
  if not isinstance(oracle, GridOracle):
    raise TypeError(f"`oracle` must be a GridOracle (see grid_oracle), got {type(oracle).__name__}.")
  num_samples = _checks.check_int(num_samples, "num_samples")
  # A NaN log-density on the grid would otherwise surface as a complaint about resampling `weights`.
  if not _checks.is_traced(oracle.log_probs) and np.isnan(np.asarray(oracle.log_probs)).any():
    raise ValueError("`oracle.log_probs` contains NaN: the log-density was NaN somewhere on the grid.")
  k_cell, k_jitter = jax.random.split(key)
  idx = resampling.multinomial(k_cell, jnp.exp(oracle.log_probs), num_samples)
  jitter = (jax.random.uniform(k_jitter, (num_samples, 2)) - 0.5) * oracle.cell
  return jax.random.permutation(key, oracle.points[idx] + jitter)
