"""Synthetic matrix-completion problems and their error metrics (apart from the method).

The setting of Gu, Song, Yin, Zhang (ICLR 2024, arXiv 2302.11068) and of Jain, Netrapalli, Sanghavi (STOC
2013): a rank-k matrix M = U* diag(σ) V*ᵀ ∈ R^{m×n} with μ-incoherent singular vectors (‖U*ᵢ‖ ≤ μ√(k/m),
‖V*ⱼ‖ ≤ μ√(k/n)), observed on a set Ω of entries drawn uniformly at random. Random orthonormal factors (QR of
Gaussian matrices) are incoherent with μ = O(√log(m)) with high probability; :func:`incoherence` measures it.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from toolkit import _checks


class LowRankMatrix(NamedTuple):
  """M = left diag(singular_values) rightᵀ.

  Attributes:
    left: ``(m, k)`` orthonormal U*.
    singular_values: ``(k,)`` σ, descending.
    right: ``(n, k)`` orthonormal V*.
  """

  left: jax.Array
  singular_values: jax.Array
  right: jax.Array

  @property
  def shape(self) -> tuple[int, int]:
    return self.left.shape[0], self.right.shape[0]

  @property
  def rank(self) -> int:
    return self.singular_values.shape[0]

  def dense(self) -> jax.Array:
    """``(m, n)`` the matrix itself."""
    return (self.left * self.singular_values) @ self.right.T

  def entries(self, rows: jax.Array, cols: jax.Array) -> jax.Array:
    """M[rows, cols] from the factors, in O(|Ω|k)."""
    return jnp.sum(self.left[rows] * self.singular_values * self.right[cols], axis=-1)


class CompletionProblem(NamedTuple):
  """A matrix and its observed entries Ω (``rows``, ``cols``, ``values = M[rows, cols]``)."""

  matrix: LowRankMatrix
  rows: jax.Array
  cols: jax.Array
  values: jax.Array


def random_low_rank(
  key: jax.Array,
  shape: tuple[int, int],
  rank: int,
  *,
  condition_number: float = 1.0,
  dtype=jnp.float32,
) -> LowRankMatrix:
  """A random rank-k matrix with Haar-random singular subspaces.

  U* and V* are the Q factors of Gaussian matrices (incoherent with high probability); the singular values are
  geometrically spaced from 1 down to 1/condition_number.

  >>> mat = random_low_rank(jax.random.key(0), (50, 40), 3, condition_number=4.0)
  >>> print(mat.dense().shape, jnp.linalg.matrix_rank(mat.dense()).item(), mat.singular_values.round(2))
  (50, 40) 3 [1.   0.5  0.25]
  """
  if not (isinstance(shape, (tuple, list)) and len(shape) == 2):
    raise ValueError(f"`shape` must be a pair (m, n), got {shape!r}.")
  m, n = (_checks.check_int(s, "shape", 1) for s in shape)
  rank = _checks.check_int(rank, "rank", 1)
  if rank > min(m, n):
    raise ValueError(f"`rank` must be <= min(shape) = {min(m, n)}, got {rank}.")
  if not condition_number >= 1.0:
    raise ValueError(f"`condition_number` must be >= 1, got {condition_number!r}.")
  k_u, k_v = jax.random.split(key)
  left, _ = jnp.linalg.qr(jax.random.normal(k_u, (m, rank), dtype))
  right, _ = jnp.linalg.qr(jax.random.normal(k_v, (n, rank), dtype))
  sv = jnp.asarray(np.geomspace(1.0, 1.0 / condition_number, rank), dtype)
  return LowRankMatrix(left, sv, right)


def uniform_mask(key: jax.Array, shape: tuple[int, int], num_observed: int) -> tuple[jax.Array, jax.Array]:
  """``num_observed`` distinct entries of an m×n matrix, uniformly at random without replacement.

  Returns:
    ``(rows, cols)``, int32 arrays of length ``num_observed``, sorted by row then column.

  >>> rows, cols = uniform_mask(jax.random.key(0), (4, 5), 20)
  >>> print(sorted(set(zip(rows.tolist(), cols.tolist()))) == [(i, j) for i in range(4) for j in range(5)])
  True
  """
  m, n = (_checks.check_int(s, "shape", 1) for s in shape)
  num_observed = _checks.check_int(num_observed, "num_observed", 1)
  if num_observed > m * n:
    raise ValueError(f"`num_observed` must be <= m·n = {m * n}, got {num_observed}.")
  flat = jnp.sort(jax.random.choice(key, m * n, (num_observed,), replace=False))
  return (flat // n).astype(jnp.int32), (flat % n).astype(jnp.int32)


def make_problem(
  key: jax.Array,
  shape: tuple[int, int],
  rank: int,
  num_observed: int,
  *,
  condition_number: float = 1.0,
  dtype=jnp.float32,
) -> CompletionProblem:
  """A random incoherent rank-k matrix (:func:`random_low_rank`) observed on a uniform mask (:func:`uniform_mask`).

  >>> prob = make_problem(jax.random.key(0), (30, 20), 2, 300)
  >>> print(prob.rows.shape, bool(jnp.allclose(prob.values, prob.matrix.dense()[prob.rows, prob.cols], atol=1e-6)))
  (300,) True
  """
  k_mat, k_mask = jax.random.split(key)
  matrix = random_low_rank(k_mat, shape, rank, condition_number=condition_number, dtype=dtype)
  rows, cols = uniform_mask(k_mask, shape, num_observed)
  return CompletionProblem(matrix, rows, cols, matrix.entries(rows, cols))


def incoherence(factor: jax.Array) -> jax.Array:
  """μ = √(m/k)·maxᵢ ‖factorᵢ‖ of an ``(m, k)`` orthonormal factor (1 ≤ μ ≤ √(m/k))."""
  if jnp.ndim(factor) != 2 or 0 in jnp.shape(factor):
    raise ValueError(f"`factor` must be an (m, k) matrix with m, k >= 1, got shape {jnp.shape(factor)}.")
  m, k = factor.shape
  return jnp.sqrt(m / k) * jnp.max(jnp.linalg.norm(factor, axis=-1))


def relative_error(u: jax.Array, v: jax.Array, matrix: LowRankMatrix, *, block_rows: int = 256) -> jax.Array:
  """‖u vᵀ - M‖_F / ‖M‖_F, computed densely over blocks of rows (no cancellation; memory block_rows·n).

  >>> mat = random_low_rank(jax.random.key(0), (20, 10), 2)
  >>> print(float(relative_error(mat.left * mat.singular_values, mat.right, mat)) < 1e-6)
  True
  """
  if not isinstance(matrix, LowRankMatrix):
    raise TypeError(f"`matrix` must be a LowRankMatrix, got {type(matrix).__name__}.")
  m, n = matrix.shape
  if jnp.ndim(u) != 2 or jnp.ndim(v) != 2 or u.shape[0] != m or v.shape[0] != n or u.shape[1] != v.shape[1]:
    raise ValueError(
      f"`u` and `v` must be (m, r) and (n, r) with (m, n) = {(m, n)}, got {jnp.shape(u)} and {jnp.shape(v)}."
    )
  block_rows = min(_checks.check_int(block_rows, "block_rows", 1), m)
  pad = -m % block_rows
  left = jnp.pad(matrix.left * matrix.singular_values, ((0, pad), (0, 0))).reshape(-1, block_rows, matrix.rank)
  ub = jnp.pad(u, ((0, pad), (0, 0))).reshape(-1, block_rows, u.shape[1])

  def block(args):
    ui, li = args
    return jnp.sum((ui @ v.T - li @ matrix.right.T) ** 2)

  err2 = jnp.sum(jax.lax.map(block, (ub, left)))
  return jnp.sqrt(err2) / jnp.linalg.norm(matrix.singular_values)


def subspace_distance(a: jax.Array, b: jax.Array) -> jax.Array:
  """sin of the largest principal angle between the column spaces of orthonormal ``a`` and ``b``: ‖(I - aaᵀ)b‖₂."""
  if jnp.ndim(a) != 2 or jnp.ndim(b) != 2 or jnp.shape(a)[0] != jnp.shape(b)[0]:
    raise ValueError(f"`a` and `b` must be (n, k) bases of one space R^n, got {jnp.shape(a)} and {jnp.shape(b)}.")
  return jnp.linalg.norm(b - a @ (a.T @ b), ord=2)
