r"""Top-K sparse softmax gating Gaussian mixture of experts: density, sampler, log-likelihood and MLE fitter.

Nguyen, Akbarian, Yan, Ho. "Statistical Perspective of Top-K Sparse Softmax Gating Mixture of Experts", ICLR 2024,
arXiv 2309.13850 (§2, the model; §3–4, the rates of the maximum-likelihood estimator).

The model. A covariate ``x ∈ R^d`` and a response ``y ∈ R``; ``k`` experts with gating parameters ``(β0_i, β1_i)``
and Gaussian experts ``N(y | a_iᵀx + b_i, σ_i)`` (``σ_i`` a *variance*). Of the ``k`` gating scores ``β1_iᵀx``,
the ``K`` largest are kept; the softmax runs over those ``K`` with the biases ``β0_i`` added *after* the
selection:

  g_G(y|x) = Σ_i Softmax(TopK((β1_jᵀx)_j, K; β0))_i · N(y | a_iᵀx + b_i, σ_i),
  TopK(v, K; β0)_i = v_i + β0_i if v_i is among the K largest entries of v, and -∞ otherwise.

The mixing measure is ``G = Σ_i exp(β0_i) δ_(β1_i, a_i, b_i, σ_i)``. The model is unchanged when a common vector is
added to every ``β1_i`` or a common scalar to every ``β0_i`` (the Voronoi losses in ``toolkit.stats.voronoi`` are
made invariant to both). With ``K = k`` it is the dense softmax-gating Gaussian MoE (Jordan & Jacobs, 1994).

Provenance of the details. The abstract (read) fixes the model family, the parametric rates in the exact-specified
case and the qualitative over-specified result. The formula above (selection on ``β1ᵀx`` only, ``β0`` added after
the selection, ``σ`` a variance) is as recalled from the paper's §2, not checked against its text here. The fitter
is **our choice**: the paper's Appendix simulations are described as EM plus coordinate gradient descent; we
maximise the likelihood directly with optax (L-BFGS by default) from a given initial point, with random restarts
around it (:func:`fit_restarts`). The top-K mask is a function of ``β1`` with zero derivative almost everywhere,
so gradients move ``β1`` only through the selected logits; ties are broken towards the lower expert index
(``jax.lax.top_k``'s rule).

>>> import jax, jax.numpy as jnp, numpy as np
>>> from toolkit.stats import topk_moe
>>> p = topk_moe.topk_moe_params([0.5, 0.0, -0.5], [[-2.0], [0.0], [2.0]], [[-1.0], [0.5], [2.0]],
...                              [1.0, -1.0, 0.5], [0.3, 0.2, 0.4])
>>> x = jnp.array([[-0.5], [0.5]])
>>> print(np.exp(np.asarray(topk_moe.gating_log_weights(p, x, num_selected=2), np.float64)).round(3))
[[0.818 0.182 0.   ]
 [0.    0.378 0.622]]
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from toolkit import _checks

_LOG_2PI = math.log(2 * math.pi)


class TopKMoEParams(NamedTuple):
  """Parameters of a top-K sparse softmax gating Gaussian MoE with ``k`` experts on ``R^d`` (paper, §2).

  Attributes:
    gate_bias: ``(k,)`` β0, added after the top-K selection.
    gate_weight: ``(k, d)`` β1, the gating slopes that the top-K selection ranks.
    expert_weight: ``(k, d)`` a, the experts' regression slopes.
    expert_bias: ``(k,)`` b, the experts' intercepts.
    variance: ``(k,)`` σ, the experts' variances (> 0).
  """

  gate_bias: jax.Array
  gate_weight: jax.Array
  expert_weight: jax.Array
  expert_bias: jax.Array
  variance: jax.Array

  @property
  def num_experts(self) -> int:
    return self.gate_bias.shape[-1]

  @property
  def dim(self) -> int:
    return self.gate_weight.shape[-1]


class TopKMoEDraw(NamedTuple):
  """Draws of ``y | x`` and the expert each came from.

  Attributes:
    y: ``(n,)`` responses.
    expert: ``(n,)`` int32 index of the expert that generated each response.
  """

  y: jax.Array
  expert: jax.Array


class TopKMoEFit(NamedTuple):
  """A maximum-likelihood fit.

  Attributes:
    params: the fitted :class:`TopKMoEParams`.
    log_likelihood: the (weighted) mean log-density of the data at ``params``, a scalar.
    grad_norm: the norm of the gradient of the objective at the end (small at a stationary point).
    converged: ``isfinite(log_likelihood) & (grad_norm < tol)`` with the ``tol`` of the fit.
  """

  params: TopKMoEParams
  log_likelihood: jax.Array
  grad_norm: jax.Array
  converged: jax.Array


def topk_moe_params(gate_bias: Any, gate_weight: Any, expert_weight: Any, expert_bias: Any, variance: Any):
  """Builds :class:`TopKMoEParams` from array-likes, checking their shapes ((k,), (k, d), (k, d), (k,), (k,)).

  >>> p = topk_moe_params([0.0, 0.0], [[1.0], [-1.0]], [[0.0], [0.0]], [1.0, -1.0], [1.0, 1.0])
  >>> p.num_experts, p.dim
  (2, 1)
  """
  dtype = jnp.result_type(float)
  params = TopKMoEParams(
    *(jnp.asarray(v, dtype) for v in (gate_bias, gate_weight, expert_weight, expert_bias, variance))
  )
  check_params(params)
  return params


def check_params(params: Any) -> None:
  """Raises ``TypeError``/``ValueError`` unless ``params`` is a :class:`TopKMoEParams` of consistent shapes."""
  if not isinstance(params, TopKMoEParams):
    raise TypeError(f"`params` must be a TopKMoEParams, got {type(params).__name__}.")
  k = params.gate_bias.shape[-1] if params.gate_bias.ndim == 1 else None
  if k is None or params.gate_weight.ndim != 2 or params.gate_weight.shape[0] != k:
    raise ValueError(
      f"`params.gate_bias` must be (k,) and `params.gate_weight` (k, d), got {params.gate_bias.shape} and "
      f"{params.gate_weight.shape}."
    )
  d = params.gate_weight.shape[1]
  if params.expert_weight.shape != (k, d):
    raise ValueError(f"`params.expert_weight` must have shape (k, d) = ({k}, {d}), got {params.expert_weight.shape}.")
  for name in ("expert_bias", "variance"):
    if getattr(params, name).shape != (k,):
      raise ValueError(f"`params.{name}` must have shape (k,) = ({k},), got {getattr(params, name).shape}.")
  if not isinstance(params.variance, jax.core.Tracer) and not (np.asarray(params.variance) > 0).all():
    raise ValueError(f"`params.variance` must be > 0, got {np.asarray(params.variance).tolist()}.")


def _check_num_selected(num_selected: Any, k: int) -> None:
  if isinstance(num_selected, bool) or not isinstance(num_selected, int) or not 1 <= num_selected <= k:
    raise ValueError(f"`num_selected` (K) must be a Python int in [1, k] = [1, {k}], got {num_selected!r}.")


def _check_x(x: Any, d: int) -> jax.Array:
  x = jnp.asarray(x)
  if x.ndim != 2 or x.shape[1] != d:
    raise ValueError(f"`x` must have shape (n, d) with d = {d}, got {x.shape}.")
  return x


def _check_y(y: Any, n: int) -> jax.Array:
  y = jnp.asarray(y)
  if y.shape != (n,):
    raise ValueError(f"`y` must have shape (n,) = ({n},), got {y.shape}.")
  return y


def top_k_mask(scores: jax.Array, num_selected: int) -> jax.Array:
  """``(..., k)`` boolean mask of the ``num_selected`` largest scores of each row (ties: lower index first).

  >>> top_k_mask(jnp.array([0.3, -1.0, 2.0]), 2)
  Array([ True, False,  True], dtype=bool)
  """
  scores = jnp.asarray(scores)
  if scores.ndim < 1:
    raise ValueError(f"`scores` must have a last axis over the k experts, (..., k), got shape {scores.shape}.")
  k = scores.shape[-1]
  _check_num_selected(num_selected, k)
  _, idx = jax.lax.top_k(jax.lax.stop_gradient(scores), num_selected)
  return jnp.any(jax.nn.one_hot(idx, k, dtype=jnp.bool_), axis=-2)


def gating_log_weights(params: TopKMoEParams, x: jax.Array, *, num_selected: int) -> jax.Array:
  """``(n, k)`` log gating weights ``log Softmax(TopK(β1ᵀx, K; β0))``, ``-inf`` for the experts not selected.

  Args:
    params: the model.
    x: ``(n, d)`` covariates.
    num_selected: K, a Python int in ``[1, k]``.
  """
  check_params(params)
  x = _check_x(x, params.dim)
  scores = x @ params.gate_weight.T
  mask = top_k_mask(scores, num_selected)
  logits = jnp.where(mask, scores + params.gate_bias, -jnp.inf)
  return jax.nn.log_softmax(logits, axis=-1)


def expert_log_densities(params: TopKMoEParams, x: jax.Array, y: jax.Array) -> jax.Array:
  """``(n, k)`` Gaussian expert log-densities ``log N(y_n | a_iᵀx_n + b_i, σ_i)``."""
  check_params(params)
  x = _check_x(x, params.dim)
  y = _check_y(y, x.shape[0])
  mean = x @ params.expert_weight.T + params.expert_bias
  return -0.5 * ((y[:, None] - mean) ** 2 / params.variance + jnp.log(params.variance) + _LOG_2PI)


def log_density(params: TopKMoEParams, x: jax.Array, y: jax.Array, *, num_selected: int) -> jax.Array:
  """``(n,)`` conditional log-densities ``log g_G(y_n | x_n)`` of the top-K sparse gating MoE (paper, §2).

  Args:
    params: the model.
    x: ``(n, d)`` covariates.
    y: ``(n,)`` responses.
    num_selected: K.

  >>> p = topk_moe_params([0.0, 0.0], [[1.0], [-1.0]], [[0.0], [0.0]], [1.0, -1.0], [1.0, 1.0])
  >>> print(round(float(log_density(p, jnp.array([[0.5]]), jnp.array([1.0]), num_selected=1)[0]), 4))  # N(1|1,1)
  -0.9189
  """
  log_gate = gating_log_weights(params, x, num_selected=num_selected)
  y = _check_y(y, x.shape[0])
  return jax.nn.logsumexp(log_gate + expert_log_densities(params, jnp.asarray(x), y), axis=-1)


def log_likelihood(
  params: TopKMoEParams, x: jax.Array, y: jax.Array, *, num_selected: int, weights: jax.Array | None = None
) -> jax.Array:
  """The mean log-likelihood ``Σ_n w_n log g_G(y_n|x_n) / Σ_n w_n`` (``w = 1`` by default), a scalar.

  ``weights`` (``(n,)``, ≥ 0) lets samples of different sizes share one padded array: zero weights drop points.
  """
  logp = log_density(params, x, y, num_selected=num_selected)
  if weights is None:
    return jnp.mean(logp)
  weights = jnp.asarray(weights, logp.dtype)
  if weights.shape != logp.shape:
    raise ValueError(f"`weights` must have shape (n,) = {logp.shape}, got {weights.shape}.")
  # A zero weight must drop even a point of log-density -inf.
  return jnp.sum(jnp.where(weights > 0, weights * logp, 0.0)) / jnp.sum(weights)


def sample(key: jax.Array, params: TopKMoEParams, x: jax.Array, *, num_selected: int) -> TopKMoEDraw:
  """Draws ``y_n ~ g_G(· | x_n)`` for each row of ``x``: an expert from the top-K softmax, then its Gaussian.

  Args:
    key: PRNG key.
    params: the model.
    x: ``(n, d)`` covariates.
    num_selected: K.

  Returns:
    ``TopKMoEDraw(y, expert)``.

  >>> p = topk_moe_params([0.0, 0.0], [[1.0], [-1.0]], [[0.0], [0.0]], [1.0, -1.0], [0.01, 0.01])
  >>> draw = sample(jax.random.key(0), p, jnp.array([[0.5], [-0.5]]), num_selected=1)
  >>> print(draw.expert, draw.y.round(0))
  [0 1] [ 1. -1.]
  """
  log_gate = gating_log_weights(params, x, num_selected=num_selected)
  k_expert, k_noise = jax.random.split(key)
  expert = jax.random.categorical(k_expert, log_gate, axis=-1).astype(jnp.int32)
  mean = jnp.sum(x * params.expert_weight[expert], axis=-1) + params.expert_bias[expert]
  noise = jax.random.normal(k_noise, mean.shape, mean.dtype)
  return TopKMoEDraw(mean + jnp.sqrt(params.variance[expert]) * noise, expert)


# ----------------------------------------------------------------------------------------------------------------
# Maximum likelihood.


def _to_raw(params: TopKMoEParams) -> TopKMoEParams:
  return params._replace(variance=jnp.log(params.variance))


def _from_raw(raw: TopKMoEParams) -> TopKMoEParams:
  return raw._replace(variance=jnp.exp(raw.variance))


def default_optimizer() -> optax.GradientTransformation:
  """L-BFGS with a backtracking (Armijo) line search of at most 8 halvings: the fitter's default.

  Our choice over optax's default zoom line search: on this likelihood both reach the same optimum (to the float32
  floor of the gradient) and backtracking costs about half as much, batched or not.
  """
  return optax.lbfgs(linesearch=optax.scale_by_backtracking_linesearch(max_backtracking_steps=8, store_grad=True))


def _check_optimizer(optimizer: Any) -> optax.GradientTransformation:
  if optimizer is None:
    return default_optimizer()
  if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
    raise TypeError(f"`optimizer` must be an optax GradientTransformation, got {type(optimizer).__name__}.")
  return optimizer


def fit(
  x: jax.Array,
  y: jax.Array,
  init_params: TopKMoEParams,
  *,
  num_selected: int,
  num_steps: int = 200,
  optimizer: optax.GradientTransformation | None = None,
  weights: jax.Array | None = None,
  tol: float = 1e-3,
) -> TopKMoEFit:
  """Maximum-likelihood fit of a top-K sparse gating Gaussian MoE from ``init_params`` (our fitter, see module).

  Minimises ``-log_likelihood`` over ``(β0, β1, a, b, log σ)`` by at most ``num_steps`` steps of ``optimizer``
  inside one ``lax.while_loop``, which stops once the gradient norm is below ``tol``; the number of experts ``k``
  is that of ``init_params``. Works under ``jit`` and ``vmap`` (over data sets, weights or initial points), which
  is how :func:`fit_restarts` and the experiment batch many fits.

  Args:
    x: ``(n, d)`` covariates.
    y: ``(n,)`` responses.
    init_params: the starting point.
    num_selected: K of the fitted model.
    num_steps: the most optimiser steps.
    optimizer: an optax transformation; ``None``: :func:`default_optimizer` (L-BFGS). Transformations that take the
      extra arguments ``value``, ``grad`` and ``value_fn`` (L-BFGS and its line searches) get them.
    weights: optional ``(n,)`` weights of the points (zeros pad a smaller sample into a larger array).
    tol: the gradient norm at which the loop stops and ``converged`` is set.

  Returns:
    A :class:`TopKMoEFit`.

  >>> p = topk_moe_params([0.0, 0.0], [[2.0], [-2.0]], [[1.0], [-1.0]], [0.5, -0.5], [0.1, 0.1])
  >>> x = jax.random.uniform(jax.random.key(0), (2000, 1), minval=-1, maxval=1)
  >>> y = sample(jax.random.key(1), p, x, num_selected=2).y
  >>> out = fit(x, y, p, num_selected=2, num_steps=50)
  >>> print(bool(out.log_likelihood >= log_likelihood(p, x, y, num_selected=2)), out.params.expert_weight.shape)
  True (2, 1)
  """
  check_params(init_params)
  x = _check_x(x, init_params.dim)
  y = _check_y(y, x.shape[0])
  _check_num_selected(num_selected, init_params.num_experts)
  if isinstance(num_steps, bool) or not isinstance(num_steps, int | np.integer) or num_steps < 1:
    raise ValueError(f"`num_steps` must be a positive int, got {num_steps!r}.")
  if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 0:
    raise ValueError(f"`num_steps` must be a Python int >= 0, got {num_steps!r}.")
  if weights is not None:
    weights = jnp.asarray(weights)
    if weights.shape != y.shape:
      raise ValueError(f"`weights` must have shape (n,) = {y.shape}, got {weights.shape}.")
  optimizer = _check_optimizer(optimizer)

  def objective(raw):
    return -log_likelihood(_from_raw(raw), x, y, num_selected=num_selected, weights=weights)

  raw = _to_raw(init_params)
  opt_state = optimizer.init(raw)
  # L-BFGS keeps the last value and gradient in its state; reusing them saves one evaluation per step.
  from_state = optax.tree_utils.tree_get(opt_state, "value", None) is not None
  value_and_grad = optax.value_and_grad_from_state(objective) if from_state else jax.value_and_grad(objective)

  def keep_going(carry):
    _, _, step, grad_norm = carry
    return (step < num_steps) & (grad_norm >= tol)

  def step(carry):
    raw, opt_state, i, _ = carry
    value, grad = value_and_grad(raw, state=opt_state) if from_state else value_and_grad(raw)
    updates, new_state = optimizer.update(grad, opt_state, raw, value=value, grad=grad, value_fn=objective)
    new_raw = optax.apply_updates(raw, updates)
    # A step to non-finite parameters, or (L-BFGS, which keeps the new value in its state) one that raises the
    # objective because the line search ran out of halvings, is refused and ends the loop: the likelihood is
    # discontinuous where the top-K selection changes, and such a step can otherwise throw the fit far away.
    ok = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(new_raw)]))
    if from_state:
      new_value = optax.tree_utils.tree_get(new_state, "value")
      ok = ok & jnp.isfinite(new_value) & (new_value <= value)
    new_raw, new_state = jax.tree.map(lambda a, b: jnp.where(ok, a, b), (new_raw, new_state), (raw, opt_state))
    grad_norm = jnp.where(ok, optax.tree_utils.tree_norm(grad), -jnp.inf)
    return new_raw, new_state, i + 1, grad_norm

  # A while loop rather than a scan: a batch of fits (vmap) stops as soon as every one has converged, which saves
  # the line searches that stall on float32 noise once the gradient is at its floor.
  carry = (raw, opt_state, jnp.asarray(0), jnp.asarray(jnp.inf, raw.gate_bias.dtype))
  raw, _, _, _ = jax.lax.while_loop(keep_going, step, carry)
  value, grad = jax.value_and_grad(objective)(raw)
  grad_norm = optax.tree_utils.tree_norm(grad)
  converged = jnp.isfinite(value) & (grad_norm < tol)
  return TopKMoEFit(_from_raw(raw), -value, grad_norm, converged)


def perturb(key: jax.Array, params: TopKMoEParams, scale: float) -> TopKMoEParams:
  """``params`` with independent ``N(0, scale²)`` noise on β0, β1, a, b and on ``log σ``.

  >>> p = topk_moe_params([0.0], [[0.0]], [[0.0]], [0.0], [1.0])
  >>> print(perturb(jax.random.key(0), p, 0.0) == p)
  True
  """
  check_params(params)
  if not _checks.is_traced(scale):
    value = np.asarray(scale)
    if not (jnp.issubdtype(value.dtype, jnp.integer) or jnp.issubdtype(value.dtype, jnp.floating)):
      raise TypeError(f"`scale` must be a real number >= 0, got {scale!r}.")
    if not (np.isfinite(value.astype(np.float64)) & (value.astype(np.float64) >= 0)).all():
      raise ValueError(f"`scale` must be finite and >= 0 (the noise's standard deviation), got {scale!r}.")
  raw = _to_raw(params)
  leaves, treedef = jax.tree.flatten(raw)
  keys = jax.random.split(key, len(leaves))
  noisy = [leaf + scale * jax.random.normal(k, leaf.shape, leaf.dtype) for k, leaf in zip(keys, leaves)]
  return _from_raw(jax.tree.unflatten(treedef, noisy))


def fit_restarts(
  key: jax.Array,
  x: jax.Array,
  y: jax.Array,
  init_params: TopKMoEParams,
  *,
  num_selected: int,
  num_restarts: int = 4,
  init_scale: float = 0.1,
  num_steps: int = 200,
  optimizer: optax.GradientTransformation | None = None,
  weights: jax.Array | None = None,
  tol: float = 1e-3,
) -> TopKMoEFit:
  """:func:`fit` from ``num_restarts`` random starts ``perturb(init_params, init_scale)``; keeps the best likelihood.

  The restarts run as one ``vmap``. A start whose likelihood is not finite is never kept unless all are.

  >>> p = topk_moe_params([0.0, 0.0], [[2.0], [-2.0]], [[1.0], [-1.0]], [0.5, -0.5], [0.1, 0.1])
  >>> x = jax.random.uniform(jax.random.key(0), (1000, 1), minval=-1, maxval=1)
  >>> y = sample(jax.random.key(1), p, x, num_selected=2).y
  >>> out = fit_restarts(jax.random.key(2), x, y, p, num_selected=2, num_restarts=3, num_steps=30)
  >>> print(out.log_likelihood.shape, bool(jnp.abs(out.params.expert_weight - p.expert_weight).max() < 0.2))
  () True
  """
  if isinstance(num_restarts, bool) or not isinstance(num_restarts, int) or num_restarts < 1:
    raise ValueError(f"`num_restarts` must be a Python int >= 1, got {num_restarts!r}.")
  check_params(init_params)
  starts = jax.vmap(lambda k: perturb(k, init_params, init_scale))(jax.random.split(key, num_restarts))
  fits = jax.vmap(
    lambda p: fit(
      x, y, p, num_selected=num_selected, num_steps=num_steps, optimizer=optimizer, weights=weights, tol=tol
    )
  )(starts)
  score = jnp.where(jnp.isfinite(fits.log_likelihood), fits.log_likelihood, -jnp.inf)
  best = jnp.argmax(score)
  return jax.tree.map(lambda leaf: leaf[best], fits)
