"""⊥Grad: gradients orthogonal to the weights.

Prieto, Barsbey, Mediano, Birdal. "Grokking at the Edge of Numerical Stability", ICLR 2025, arXiv 2501.04697,
Sec. 5 (Eq. 9):

  g_perp = g - (θᵀg / θᵀθ) θ.

For a positively homogeneous network (a bias-free ReLU MLP) the component of g along θ only scales the logits
("naïve loss minimisation"), which drives the float32 softmax into collapse. Removing it lets the network
generalise without weight decay. Following the authors' code, the projection is per parameter tensor by default
and the result is rescaled to the norm of the original gradient.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from toolkit import _checks


class PerpGradState(NamedTuple):
  """⊥Grad keeps no state."""


def _safe_ratio(num: jax.Array, den: jax.Array) -> jax.Array:
  positive = den > 0
  return jnp.where(positive, num / jnp.where(positive, den, 1.0), 0.0)


def _dot(a: jax.Array, b: jax.Array) -> jax.Array:
  # Not jnp.vdot: it ravels, which a leaf sharded with Explicit axis types refuses; a full reduction works.
  return jnp.sum(a * b)


def _project_and_rescale(grads, params, rescale: bool, parallel_rtol: float):
  """Projects the list of leaves ``grads`` off the single direction formed by ``params`` (all leaves together)."""
  # Squares overflow float32 from |x| ~ 1e19: g ×1e25 used to give ‖g‖² = inf and a zero update, θ ×1e20 a skipped
  # projection. The projection is linear in g and invariant to the scale of θ, so both are divided by their
  # largest entry first and the result multiplied back by g's.
  grad_scale = _max_abs(grads)
  grads_in = grads
  grads = [g / grad_scale.astype(g.dtype) for g in grads]
  params = [p / _max_abs(params).astype(p.dtype) for p in params]
  dot = sum(_dot(g, p) for g, p in zip(grads, params))
  sq_norm_params = sum(_dot(p, p) for p in params)
  # θ = 0 has no direction to remove: the coefficient is 0 and g passes through.
  coef = _safe_ratio(dot, sq_norm_params)
  perp = [g - (coef * p).astype(g.dtype) for g, p in zip(grads, params)]
  # A second projection ("twice is enough", as in Gram-Schmidt): when g is nearly parallel to θ the first one
  # leaves a rounding residue along θ of order eps·‖g‖, which the rescaling below would multiply by ‖g‖/‖perp‖.
  coef = _safe_ratio(sum(_dot(q, p) for q, p in zip(perp, params)), sq_norm_params)
  perp = [q - (coef * p).astype(q.dtype) for q, p in zip(perp, params)]
  norm_g = jnp.sqrt(sum(_dot(g, g) for g in grads))
  norm_perp = jnp.sqrt(sum(_dot(q, q) for q in perp))
  # If g ∥ θ what is left is rounding noise; rescaling it to ‖g‖ would take a full step in a random direction.
  # Such a gradient only rescales θ, which is exactly what ⊥Grad removes, so the update is zero.
  is_parallel = norm_perp <= parallel_rtol * norm_g
  scale = _safe_ratio(norm_g, norm_perp) if rescale else jnp.ones_like(norm_g)
  scale = jnp.where(is_parallel, 0.0, scale)
  return [(q * (scale * grad_scale)).astype(g.dtype) for q, g in zip(perp, grads_in)]


def _max_abs(leaves) -> jax.Array:
  """The largest |entry| over the leaves, or 1 when they are all zero (or empty)."""
  if not leaves:
    return jnp.ones(())
  m = jnp.max(jnp.stack([jnp.max(jnp.abs(x), initial=0.0).astype(jnp.float32) for x in leaves]))
  return jnp.where(m > 0, m, 1.0)


def perpgrad(rescale: bool = True, per_leaf: bool = True, parallel_rtol: float = 1e-6) -> optax.GradientTransformation:
  """⊥Grad as an optax transformation: ``g - (θᵀg / θᵀθ) θ`` (arXiv 2501.04697, Eq. 9).

  Chain it in front of any optimizer, e.g. ``optax.chain(perpgrad(), optax.adamw(1e-2))`` (⊥AdamW); its update
  needs the parameters: ``tx.update(grads, state, params)``.

  Args:
    rescale: rescale the projected gradient to the norm of the original one (the authors' code).
    per_leaf: project each parameter array on its own (the authors' code); ``False`` treats all parameters as one
      vector θ, as Eq. 9 is written.
    parallel_rtol: a gradient whose orthogonal part is at most this fraction of its norm counts as parallel to θ
      and gives a zero update instead of rescaled rounding noise.

  Returns:
    An ``optax.GradientTransformation``.

  Example:
    >>> import jax.numpy as jnp
    >>> params = {"w": jnp.array([1.0, 0.0])}
    >>> tx = perpgrad(rescale=False)
    >>> updates, _ = tx.update({"w": jnp.array([2.0, 3.0])}, tx.init(params), params)
    >>> updates["w"].tolist()  # the component along θ is gone
    [0.0, 3.0]
  """
  if not parallel_rtol >= 0:
    raise ValueError(f"`parallel_rtol` must be >= 0, got {parallel_rtol}.")

  def init_fn(params):
    del params
    return PerpGradState()

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("perpgrad needs the parameters: call `update(grads, state, params)`.")
    updates_treedef = jax.tree.structure(updates)
    if jax.tree.structure(params) != updates_treedef:
      raise ValueError(
        "perpgrad: `params` and the gradients must have the same tree structure, got "
        f"{jax.tree.structure(params)} and {updates_treedef}."
      )
    grads = jax.tree.leaves(updates)
    leaves = jax.tree.leaves(params)
    for g, p in zip(grads, leaves):
      if g.shape != p.shape:
        raise ValueError(f"perpgrad: a gradient of shape {g.shape} was paired with a parameter of shape {p.shape}.")
    if per_leaf:
      projected = [_project_and_rescale([g], [p], rescale, parallel_rtol)[0] for g, p in zip(grads, leaves)]
    else:
      projected = _project_and_rescale(grads, leaves, rescale, parallel_rtol)
    return jax.tree.unflatten(updates_treedef, projected), state

  return optax.GradientTransformation(init_fn, update_fn)


def _check_range(value, name: str, upper_open: float = np.inf, *, positive: bool = False) -> None:
  """A concrete scalar ``value`` must be finite, in ``[0, upper_open)`` and > 0 if ``positive``; a traced one is
  skipped."""
  if _checks.is_traced(value):
    return
  try:
    if isinstance(value, str | bytes):  # numpy would parse "0.01"; optax would fail on it only at the first update
      raise TypeError
    v = np.asarray(value, dtype=np.float64)
  except (TypeError, ValueError):
    raise TypeError(f"`{name}` must be a number, got {value!r}.") from None
  if v.ndim != 0 or not (np.isfinite(v) and 0 <= v < upper_open) or (positive and v == 0):
    lower = "(0" if positive else "[0"
    raise ValueError(f"`{name}` must be a finite scalar in {lower}, {upper_open:g}), got {value!r}.")


def perp_adamw(
  learning_rate: optax.ScalarOrSchedule,
  b1: float = 0.9,
  b2: float = 0.999,
  eps: float = 1e-8,
  weight_decay: float = 0.0,
  *,
  rescale: bool = True,
  per_leaf: bool = True,
) -> optax.GradientTransformation:
  """⊥AdamW: :func:`perpgrad` followed by ``optax.adamw`` (arXiv 2501.04697, Sec. 5).

  The defaults are those the authors' ⊥AdamW runs with (AdamW's usual betas and eps, no weight decay).
  """
  # A negative rate or weight decay climbs the loss or grows the weights without any error; b = 1 divides by
  # 1 - b^t = 0 in Adam's bias correction. A schedule's values are its own business.
  if not callable(learning_rate):
    _check_range(learning_rate, "learning_rate", positive=True)
  _check_range(b1, "b1", upper_open=1.0)
  _check_range(b2, "b2", upper_open=1.0)
  _check_range(eps, "eps")
  if not callable(weight_decay):
    _check_range(weight_decay, "weight_decay")
  return optax.chain(
    perpgrad(rescale=rescale, per_leaf=per_leaf),
    optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay),
  )
