"""Over-optimisation indicators: top-k probability mass and top-k entropy of next-token distributions.

Shi, Land, Locatelli, Geist, Bartolo, "Understanding Likelihood Over-optimisation in Direct Alignment Algorithms",
arXiv 2410.11677 (abstract and Sec. 5) propose two signals that a DAA-trained model has over-optimised, measured on
its generations for held-out prompts: a **decreasing entropy over the top-k tokens** and a **diminishing top-k
probability mass**. With p_t = softmax(logits_t) at a generated position t and T_k its k most probable tokens:

  M_k(t) = Σ_{i ∈ T_k} p_t,i                             (top-k probability mass)
  H_k(t) = −Σ_{i ∈ T_k} p̃_i log p̃_i,  p̃ = p_t / M_k(t)   (top-k entropy, renormalised; ``renormalize=True``)
  H_k(t) = −Σ_{i ∈ T_k} p_t,i log p_t,i                  (the un-renormalised variant; ``renormalize=False``)

The paper's exact choice of k and of renormalisation is not recoverable from the abstract (our notes mark it
unverified), so both are parameters. Per-position values are averaged over the scored positions of each sequence
and then over sequences by :func:`masked_sequence_mean`.

>>> logits = jnp.log(jnp.array([[0.5, 0.3, 0.1, 0.1]]))
>>> [round(float(v), 4) for v in (topk_probability_mass(logits, 2)[0], topk_entropy(logits, 2)[0])]
[0.8, 0.6616]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _check(logits, k) -> tuple[jax.Array, int]:
  logits = jnp.asarray(logits)
  if not jnp.issubdtype(logits.dtype, jnp.floating):
    raise TypeError(f"`logits` must be a floating-point array, got dtype {logits.dtype}.")
  if logits.ndim < 1 or logits.shape[-1] < 1:
    raise ValueError(f"`logits` must have a non-empty vocabulary axis (..., V), got shape {logits.shape}.")
  # Any integer scalar (np.int64 included) is an int; lax.top_k needs a Python one.
  if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= logits.shape[-1]:
    raise ValueError(f"`k` must be an int in [1, V = {logits.shape[-1]}] (the vocabulary size), got {k!r}.")
  return logits, int(k)


def _topk_log_probs(logits: jax.Array, k: int) -> jax.Array:
  compute = jnp.promote_types(logits.dtype, jnp.float32)
  log_probs = jax.nn.log_softmax(logits.astype(compute), axis=-1)
  return jax.lax.top_k(log_probs, k)[0]


def topk_probability_mass(logits: jax.Array, k: int) -> jax.Array:
  """M_k: the probability of the k most probable tokens, per position (arXiv 2410.11677, "top-k probability mass").

  Args:
    logits: (..., V) floating.
    k: static, 1 ≤ k ≤ V.

  Returns:
    (...) values in (0, 1], in the logits' dtype. Invariant to adding a constant to the logits.

  >>> float(topk_probability_mass(jnp.zeros(10), 3))  # uniform over 10 tokens: k / V
  0.30000001192092896
  """
  logits, k = _check(logits, k)
  return jnp.exp(jax.nn.logsumexp(_topk_log_probs(logits, k), axis=-1)).astype(logits.dtype)


def topk_entropy(logits: jax.Array, k: int, renormalize: bool = True) -> jax.Array:
  """H_k: the entropy over the k most probable tokens, per position (arXiv 2410.11677, "entropy over top-k tokens").

  Args:
    logits: (..., V) floating.
    k: static, 1 ≤ k ≤ V.
    renormalize: static; ``True`` renormalises the top-k probabilities to sum to one first (a proper entropy in
      [0, log k]); ``False`` sums −p log p over the top-k tokens of the full distribution.

  Returns:
    (...) entropies in nats, in the logits' dtype.

  >>> round(float(topk_entropy(jnp.zeros(10), 4)), 4)  # uniform: log k
  1.3863
  """
  logits, k = _check(logits, k)
  if not isinstance(renormalize, bool):
    raise TypeError(f"`renormalize` must be a bool, got {renormalize!r}.")
  top = _topk_log_probs(logits, k)
  if renormalize:
    top = top - jax.nn.logsumexp(top, axis=-1, keepdims=True)
  # p log p → 0 as p → 0: where exp underflows the product is 0, never 0 · (−inf).
  p = jnp.exp(top)
  return -jnp.sum(jnp.where(p > 0, p * top, 0.0), axis=-1).astype(logits.dtype)


def masked_sequence_mean(values: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """Average over the masked positions of each sequence, then over the sequences that have any.

  Args:
    values: (..., N, T) per-position values (e.g. :func:`topk_entropy` of sampled responses' logits).
    mask: (..., N, T) 0/1 or bool, 1 on the positions to average (``None``: all). Sequences with no masked
      position are left out of the outer mean.

  Returns:
    (...) the mean over sequences of the per-sequence means (NaN where no sequence has a masked position).

  >>> values = jnp.array([[1.0, 3.0, 100.0], [4.0, 0.0, 0.0]])
  >>> float(masked_sequence_mean(values, jnp.array([[1, 1, 0], [1, 0, 0]])))  # mean(2, 4)
  3.0
  """
  values = jnp.asarray(values)
  if not jnp.issubdtype(values.dtype, jnp.floating):
    raise TypeError(f"`values` must be a floating-point array, got dtype {values.dtype}.")
  if values.ndim < 2:
    raise ValueError(f"`values` must have shape (..., N, T) (sequences, positions), got {values.shape}.")
  mask = jnp.ones(values.shape, bool) if mask is None else jnp.asarray(mask).astype(bool)
  if mask.shape != values.shape:
    raise ValueError(f"`mask` must have the shape of `values` {values.shape}, got {mask.shape}.")
  counts = jnp.sum(mask, axis=-1)
  per_sequence = jnp.sum(jnp.where(mask, values, 0), axis=-1) / jnp.maximum(counts, 1)
  has_any = counts > 0
  return jnp.sum(jnp.where(has_any, per_sequence, 0), axis=-1) / jnp.sum(has_any, axis=-1)


__all__ = ["masked_sequence_mean", "topk_entropy", "topk_probability_mass"]
