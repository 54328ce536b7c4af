"""Modular arithmetic tables, the grokking task (Power et al. 2022; arXiv 2501.04697, Sec. 2)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

_OPS = {
  "add": lambda a, b, p: (a + b) % p,
  "sub": lambda a, b, p: (a - b) % p,
  "mul": lambda a, b, p: (a * b) % p,
}


class ModularSplit(NamedTuple):
  """Train and test sets of ``a ∘ b mod p`` over all ``p²`` pairs.

  ``x_*`` are the two one-hot vectors of ``a`` and ``b`` side by side (``[n, 2p]``, float32), ``y_*`` the
  results (``[n]``, int32) and ``pairs_*`` the ``(a, b)`` integers (``[n, 2]``).
  """

  x_train: jax.Array
  y_train: jax.Array
  x_test: jax.Array
  y_test: jax.Array
  pairs_train: jax.Array
  pairs_test: jax.Array


def modular_arithmetic(key: jax.Array, p: int = 113, train_fraction: float = 0.4, op: str = "add") -> ModularSplit:
  """All pairs ``(a, b)`` in ``[0, p)²`` with label ``a ∘ b mod p``, split at random into train and test.

  Args:
    key: PRNG key for the split.
    p: the modulus (113 in the paper).
    train_fraction: share of the ``p²`` pairs used for training (0.4 in the paper's main figures).
    op: ``"add"``, ``"sub"`` or ``"mul"``.

  Example:
    >>> import jax
    >>> split = modular_arithmetic(jax.random.key(0), p=7, train_fraction=0.5)
    >>> split.x_train.shape, split.y_test.shape  # round(0.5 · 49) = 24 pairs train; a and b one-hot side by side
    ((24, 14), (25,))
  """
  if op not in _OPS:
    raise ValueError(f"`op` must be one of {sorted(_OPS)}, got {op!r}.")
  if not isinstance(p, int) or p < 2:
    raise ValueError(f"`p` must be an integer >= 2, got {p!r}.")
  if not 0.0 < train_fraction < 1.0:
    raise ValueError(f"`train_fraction` must lie in (0, 1), got {train_fraction}.")
  a, b = jnp.meshgrid(jnp.arange(p), jnp.arange(p), indexing="ij")
  pairs = jnp.stack([a.ravel(), b.ravel()], axis=1).astype(jnp.int32)
  labels = _OPS[op](pairs[:, 0], pairs[:, 1], p).astype(jnp.int32)
  inputs = jnp.concatenate(
    [
      jax.nn.one_hot(pairs[:, 0], p, dtype=jnp.float32),
      jax.nn.one_hot(pairs[:, 1], p, dtype=jnp.float32),
    ],
    axis=1,
  )
  order = jax.random.permutation(key, p * p)
  n_train = round(float(train_fraction) * p * p)
  train, test = order[:n_train], order[n_train:]
  return ModularSplit(inputs[train], labels[train], inputs[test], labels[test], pairs[train], pairs[test])
