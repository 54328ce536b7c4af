"""StableMax and Softmax Collapse.

Prieto, Barsbey, Mediano, Birdal. "Grokking at the Edge of Numerical Stability", ICLR 2025, arXiv 2501.04697.

StableMax replaces ``exp`` in the softmax by the ramp

  s(x) = x + 1        for x >= 0,
  s(x) = 1 / (1 - x)  for x < 0,

(Sec. 4 of the paper) which is positive, C^1 at 0 and grows only linearly, so the normaliser does not absorb the
wrong-class terms in floating point the way ``sum(exp(z - max z))`` does once the correct logit dominates.
That absorption, *Softmax Collapse* (SC), makes the float32 cross-entropy and its gradient on the correct logit
exactly zero, which stops learning before the network generalises.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _check_logits(logits, name: str = "logits") -> jax.Array:
  logits = jnp.asarray(logits)
  if not jnp.issubdtype(logits.dtype, jnp.floating):
    raise TypeError(f"`{name}` must be a floating-point array, got dtype {logits.dtype}.")
  if logits.ndim < 1:
    raise ValueError(f"`{name}` must have at least one (class) axis, got a scalar.")
  return logits


def _check_axis(axis, ndim: int) -> None:
  # An out-of-range axis would otherwise surface as numpy's AxisError from inside the normaliser's sum.
  if isinstance(axis, bool) or not isinstance(axis, int | np.integer) or not -ndim <= axis < ndim:
    raise ValueError(f"`axis` must be an int in [-{ndim}, {ndim}) (an axis of `logits`), got {axis!r}.")


def _check_labels(logits: jax.Array, labels) -> jax.Array:
  labels = jnp.asarray(labels) if not isinstance(labels, jax.Array) else labels
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise TypeError(f"`labels` must be an integer array of class indices, got dtype {labels.dtype}.")
  if labels.shape != logits.shape[:-1]:
    raise ValueError(f"`labels` must have shape logits.shape[:-1] = {logits.shape[:-1]}, got {labels.shape}.")
  # The range can only be checked on concrete values; under jit an out-of-range label gives a NaN loss, as in
  # optax (``take_along_axis`` fills out-of-bounds reads with NaN).
  if not isinstance(labels, jax.core.Tracer):
    values = np.asarray(labels)
    num_classes = logits.shape[-1]
    if values.size and (values.min() < 0 or values.max() >= num_classes):
      raise ValueError(
        f"`labels` must lie in [0, {num_classes}) (the number of classes), got values in "
        f"[{values.min()}, {values.max()}]."
      )
  return labels


def _ramp(x: jax.Array) -> jax.Array:
  """s(x) of the paper, with each branch evaluated only where it is finite (so gradients stay finite)."""
  nonneg = x >= 0
  return jnp.where(nonneg, x + 1.0, 1.0 / (1.0 - jnp.where(nonneg, 0.0, x)))


def _log_ramp(x: jax.Array) -> jax.Array:
  """log s(x) = log1p(x) for x >= 0 and -log1p(-x) for x < 0: no underflow, no epsilon needed."""
  # Masking with `where`, not max/min: jnp.maximum splits the gradient in half at a tie, which would halve
  # the slope at exactly x = 0.
  nonneg = x >= 0
  return jnp.where(nonneg, jnp.log1p(jnp.where(nonneg, x, 0.0)), -jnp.log1p(-jnp.where(nonneg, 0.0, x)))


def stablemax(logits: jax.Array, axis: int = -1) -> jax.Array:
  """StableMax probabilities ``s(x_i) / sum_j s(x_j)`` (arXiv 2501.04697, Eq. 7).

  Args:
    logits: floating array of any shape.
    axis: the class axis.

  Returns:
    An array like ``logits`` that is positive and sums to one along ``axis``. Unlike softmax it is not invariant to
    shifting the logits.
  """
  logits = _check_logits(logits)
  _check_axis(axis, logits.ndim)
  s = _ramp(logits)
  return s / jnp.sum(s, axis=axis, keepdims=True)


def log_stablemax(logits: jax.Array, axis: int = -1) -> jax.Array:
  """Logarithm of :func:`stablemax`, computed as ``log s(x_i) - log sum_j s(x_j)``."""
  logits = _check_logits(logits)
  _check_axis(axis, logits.ndim)
  return _log_ramp(logits) - jnp.log(jnp.sum(_ramp(logits), axis=axis, keepdims=True))


def stablemax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """StableMax cross-entropy with integer labels, ``-log stablemax(logits)[label]``.

  The drop-in replacement for ``optax.losses.softmax_cross_entropy_with_integer_labels`` used in
  arXiv 2501.04697 (Sec. 4) to grok without regularisation.

  Args:
    logits: ``[..., num_classes]`` floating array.
    labels: ``[...]`` integer array of class indices in ``[0, num_classes)``.

  Returns:
    ``[...]`` per-example loss.

  Example:
    >>> import jax.numpy as jnp
    >>> logits = jnp.array([[3.0, 0.0, -1.0], [0.0, 2.0, 0.0]])
    >>> loss = stablemax_cross_entropy(logits, jnp.array([0, 1]))
    >>> [round(float(v), 4) for v in loss]  # -log(4 / (4 + 1 + 1/2)), -log(3 / (1 + 3 + 1))
    [0.3185, 0.5108]
  """
  logits = _check_logits(logits)
  labels = _check_labels(logits, labels)
  log_probs = log_stablemax(logits, axis=-1)
  return -jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]


def softmax_collapse_fraction(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Share of samples in Softmax Collapse at the logits' precision (arXiv 2501.04697, Sec. 3).

  A sample is collapsed when the correct class has the largest logit and ``sum_j exp(z_j - max z)`` is exactly 1
  in the logits' dtype: every wrong-class term is absorbed, so the softmax cross-entropy and its gradient on the
  correct logit are exactly zero. (The authors' logger tests only the sum; with the argmax condition a
  misclassified sample, whose loss is far from zero, is never counted.)

  Args:
    logits: ``[..., num_classes]`` floating array, evaluated in its own dtype.
    labels: ``[...]`` integer labels.

  Returns:
    A scalar in [0, 1].

  Example:
    >>> import jax.numpy as jnp
    >>> logits = jnp.array([[120.0, 0.0, 0.0], [3.0, 0.0, 0.0]])  # exp(-120) vanishes next to 1 in float32
    >>> float(softmax_collapse_fraction(logits, jnp.array([0, 0])))
    0.5
    >>> float(stablemax_collapse_fraction(logits, jnp.array([0, 0])))
    0.0
  """
  logits = _check_logits(logits)
  labels = _check_labels(logits, labels)
  shifted = logits - jnp.max(logits, axis=-1, keepdims=True)
  total = jnp.sum(jnp.exp(shifted), axis=-1)
  correct_is_max = jnp.argmax(logits, axis=-1) == labels
  return jnp.mean(((total == 1) & correct_is_max).astype(jnp.float32))


def stablemax_collapse_fraction(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """The same test for StableMax: share of samples whose StableMax loss is exactly zero.

  That happens only if ``sum_j s(z_j) == s(z_label)`` at the logits' precision, i.e. the wrong-class terms are
  absorbed by the correct one; since s decays like 1/|x| instead of exponentially this needs a correct logit
  around 2^24 times the others in float32, far beyond what training produces.
  """
  logits = _check_logits(logits)
  labels = _check_labels(logits, labels)
  s = _ramp(logits)
  s_label = jnp.take_along_axis(s, labels[..., None], axis=-1)[..., 0]
  return jnp.mean((jnp.sum(s, axis=-1) == s_label).astype(jnp.float32))
