r"""Random-feature models whose last layer is fitted by different optimisers: the setting of double descent.

Liu and Flanigan, "Understanding the Role of Optimization in Double Descent", NeurIPS 2023 Workshop on Optimization
for Machine Learning (arXiv 2312.03951). Model-wise double descent (the test error peaking where the number of
features P equals the number of training points N) is observed *if and only if the optimiser reaches a low enough
training loss at the interpolation threshold*; how low it gets is set by the condition number of the problem
(which is worst at P = N) and by the optimiser's step size, step budget, normalisation and preconditioning.

The model is ``f(x) = w · φ(x W / √d)`` with a fixed random first layer ``W`` (entries N(0, 1), ``φ`` = tanh or
ReLU) and the last layer ``w`` fitted to the targets by

- ``fit_min_norm``: the minimum-norm least-squares solution (the pseudo-inverse), which interpolates for P ≥ N;
- ``fit_ridge``: ridge regression, the pseudo-inverse as the penalty goes to 0;
- ``fit_gd``: full-batch gradient descent from zero on ``½‖Zw − y‖²`` for a budget of steps;
- ``fit_optax``: any optax optimiser (Adam in the paper's comparison) on the same loss, from zero;
- gradient descent on normalised features: ``standardize_features`` then ``fit_gd``.

To sweep P with one compiled program, the features of the largest width are computed once and narrower models
are the same matrix with the columns past P set to zero (``mask_features``): a zero column changes neither the
fit of the other columns, nor the minimum-norm solution, nor gradient descent from zero.

Our choices (the paper's exact data and hyperparameters were not available to us): the scikit-learn digits with
label noise as data, one-hot targets, tanh features, and step sizes given relative to ``1 / s_max²`` of the
feature matrix (``relative_lr``), the largest stable step of gradient descent, so one setting means the same thing
at every width.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from toolkit import _checks

Activation = Callable[[jax.Array], jax.Array]


def _check_matrix(features: jax.Array, targets: jax.Array) -> None:
  if jnp.ndim(features) != 2:
    raise ValueError(f"`features` must be a matrix (num_points, num_features), got shape {jnp.shape(features)}.")
  if jnp.ndim(targets) not in (1, 2) or jnp.shape(targets)[0] != jnp.shape(features)[0]:
    raise ValueError(
      f"`targets` must be (num_points,) or (num_points, num_outputs) with num_points = {jnp.shape(features)[0]}, "
      f"got shape {jnp.shape(targets)}."
    )


def _check_count(value, name: str) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value < 0:
    raise ValueError(f"`{name}` must be a Python int >= 0, got {value!r}.")


def _check_num_features(num_features, total: int, minimum: int) -> None:
  # May be traced (a sweep over widths); then only its dtype can be checked.
  if isinstance(num_features, bool) or not jnp.issubdtype(jnp.result_type(num_features), jnp.integer):
    raise TypeError(f"`num_features` must be an integer, got {num_features!r}.")
  if not _checks.is_traced(num_features):
    value = np.asarray(num_features)
    if value.ndim != 0 or not minimum <= value <= total:
      raise ValueError(f"`num_features` must be an int in [{minimum}, {total}] (the columns), got {num_features!r}.")


def init_first_layer(key: jax.Array, num_inputs: int, num_features: int, dtype=jnp.float32) -> jax.Array:
  """The fixed first layer ``W`` (num_inputs, num_features) with i.i.d. N(0, 1) entries."""
  _check_count(num_inputs, "num_inputs")
  _check_count(num_features, "num_features")
  return jax.random.normal(key, (num_inputs, num_features), dtype)


def random_feature_map(x: jax.Array, first_layer: jax.Array, activation: Activation = jnp.tanh) -> jax.Array:
  """``φ(x W / √d)`` for inputs ``x`` (n, d) and a first layer ``W`` (d, P): the feature matrix (n, P).

  >>> w = init_first_layer(jax.random.key(0), 3, 5)
  >>> random_feature_map(jnp.ones((4, 3)), w).shape
  (4, 5)
  """
  if jnp.ndim(x) != 2 or jnp.ndim(first_layer) != 2 or x.shape[1] != first_layer.shape[0]:
    raise ValueError(
      f"`x` (n, d) and `first_layer` (d, P) must agree on d, got shapes {jnp.shape(x)} and {jnp.shape(first_layer)}."
    )
  return activation(x @ first_layer / jnp.sqrt(x.shape[1]).astype(x.dtype))


def mask_features(features: jax.Array, num_features: jax.Array | int) -> jax.Array:
  """The first ``num_features`` columns kept and the rest set to zero (``num_features`` may be traced)."""
  if jnp.ndim(features) < 1:
    raise ValueError(f"`features` must have a last axis of features, got shape {jnp.shape(features)}.")
  _check_num_features(num_features, features.shape[-1], 0)
  return features * (jnp.arange(features.shape[-1]) < num_features).astype(features.dtype)


def standardize_features(train: jax.Array, test: jax.Array, eps: float = 1e-6) -> tuple[jax.Array, jax.Array]:
  """Columns centred and scaled to unit standard deviation with the training set's statistics (zero columns stay
  zero): the "normalised features" setting."""
  if jnp.ndim(train) != 2 or jnp.shape(train)[0] < 1 or jnp.ndim(test) != 2 or jnp.shape(test)[1] != train.shape[1]:
    raise ValueError(
      f"`train` and `test` must be (num_points, num_features) with the same columns and >= 1 training point, got "
      f"{jnp.shape(train)} and {jnp.shape(test)}."
    )
  if not _checks.is_traced(eps) and not (np.ndim(eps) == 0 and np.isfinite(eps) and eps >= 0):
    # A negative eps scales the constant columns by 1 / 0.
    raise ValueError(f"`eps` must be a finite scalar >= 0, got {eps!r}.")
  mean = train.mean(0)
  std = train.std(0)
  scale = jnp.where(std > eps, 1.0 / jnp.maximum(std, eps), 0.0)
  return (train - mean) * scale, (test - mean) * scale


def singular_values(features: jax.Array) -> jax.Array:
  """Singular values of the feature matrix, in decreasing order (min(n, P) of them)."""
  if jnp.ndim(features) != 2:
    raise ValueError(f"`features` must be a matrix (num_points, num_features), got shape {jnp.shape(features)}.")
  return jnp.linalg.svd(features, compute_uv=False)


def condition_number(features: jax.Array, num_features: jax.Array | int | None = None) -> jax.Array:
  """``σ_max / σ_min`` of the feature matrix (n, P), over its min(n, P) singular values; with ``num_features``,
  of the masked matrix whose first ``num_features`` columns are kept (its min(n, num_features) singular values).

  >>> z = jnp.diag(jnp.array([4.0, 2.0, 1.0]))
  >>> float(condition_number(z)), float(condition_number(z, 2))
  (4.0, 2.0)
  """
  s = singular_values(features)
  if num_features is not None:
    _check_num_features(num_features, features.shape[1], 1)
  rank = s.shape[0] if num_features is None else jnp.minimum(s.shape[0], num_features)
  return s[0] / s[jnp.maximum(rank, 1) - 1]


def fit_min_norm(features: jax.Array, targets: jax.Array, *, rcond: float | None = None) -> jax.Array:
  """The minimum-norm least-squares last layer ``Z⁺ y`` (the pseudo-inverse; singular values below
  ``rcond · σ_max`` are treated as zero, default ``max(n, P) · eps``).

  >>> z = jnp.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
  >>> fit_min_norm(z, jnp.array([1.0, 4.0, 5.0])).tolist()
  [1.0, 2.0]
  """
  _check_matrix(features, targets)
  return jnp.linalg.pinv(features, rtol=rcond) @ targets


def fit_ridge(features: jax.Array, targets: jax.Array, *, ridge: float) -> jax.Array:
  """Ridge regression ``argmin ½‖Zw − y‖² + ½ λ‖w‖²``, through the SVD (stable for tiny λ)."""
  _check_matrix(features, targets)
  if not ridge >= 0:
    raise ValueError(f"`ridge` must be >= 0, got {ridge!r}.")
  u, s, vt = jnp.linalg.svd(features, full_matrices=False)
  shrink = s / (s**2 + ridge)
  coefficients = shrink[:, None] * (u.T @ targets.reshape(targets.shape[0], -1))
  return (vt.T @ coefficients).reshape(features.shape[1:] + targets.shape[1:])


def relative_lr(features: jax.Array, fraction: float) -> jax.Array:
  """A gradient-descent step size ``fraction / σ_max²`` for ``½‖Zw − y‖²`` (stable for fraction < 2)."""
  _checks.check_positive(fraction, "fraction")
  return fraction / singular_values(features)[0] ** 2


def fit_gd(features: jax.Array, targets: jax.Array, *, lr: float | jax.Array, num_steps: int) -> jax.Array:
  """Full-batch gradient descent from zero on ``½‖Zw − y‖²``: ``w ← w − lr · Zᵀ(Zw − y)``, ``num_steps`` times.

  From zero, the iterate stays in the row space of ``Z`` and converges to the minimum-norm solution when
  ``lr < 2 / σ_max²``; direction i of the SVD is fitted to ``1 − (1 − lr σ_i²)^t`` of its share.

  >>> z = jnp.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
  >>> [round(v, 4) for v in fit_gd(z, jnp.array([1.0, 4.0, 5.0]), lr=0.2, num_steps=200).tolist()]
  [1.0, 2.0]
  """
  _check_matrix(features, targets)
  _check_count(num_steps, "num_steps")
  w0 = jnp.zeros(features.shape[1:] + targets.shape[1:], features.dtype)

  def step(w, _):
    return w - lr * (features.T @ (features @ w - targets)), None

  return jax.lax.scan(step, w0, length=num_steps)[0]


def fit_optax(
  features: jax.Array, targets: jax.Array, *, optimizer: optax.GradientTransformation, num_steps: int
) -> jax.Array:
  """The last layer fitted from zero by an optax optimiser on ``½‖Zw − y‖²`` for ``num_steps`` full-batch steps.

  >>> z = jnp.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
  >>> w = fit_optax(z, jnp.array([1.0, 4.0, 5.0]), optimizer=optax.adam(0.05), num_steps=500)
  >>> [round(v, 2) for v in w.tolist()]
  [1.0, 2.0]
  """
  _check_matrix(features, targets)
  _check_count(num_steps, "num_steps")
  if not isinstance(optimizer, optax.GradientTransformation):
    raise TypeError(f"`optimizer` must be an optax.GradientTransformation, got {type(optimizer).__name__}.")
  w0 = jnp.zeros(features.shape[1:] + targets.shape[1:], features.dtype)

  def loss(w):
    return 0.5 * jnp.sum((features @ w - targets) ** 2)

  def step(carry, _):
    w, state = carry
    updates, state = optimizer.update(jax.grad(loss)(w), state, w)
    return (optax.apply_updates(w, updates), state), None

  return jax.lax.scan(step, (w0, optimizer.init(w0)), length=num_steps)[0][0]


def _check_readout(features: jax.Array, weights: jax.Array) -> None:
  if jnp.ndim(features) != 2 or jnp.ndim(weights) not in (1, 2) or jnp.shape(weights)[0] != jnp.shape(features)[1]:
    raise ValueError(
      f"`features` must be (num_points, num_features) and `weights` (num_features,) or (num_features, "
      f"num_outputs), got {jnp.shape(features)} and {jnp.shape(weights)}."
    )


def squared_loss(features: jax.Array, weights: jax.Array, targets: jax.Array) -> jax.Array:
  """Mean over points of ``½‖f(x) − y‖²`` (summed over outputs)."""
  _check_readout(features, weights)
  _check_matrix(features, targets)
  if jnp.shape(targets)[1:] != jnp.shape(weights)[1:]:
    raise ValueError(f"`targets` must have {jnp.shape(weights)[1:]} outputs like `weights`, got {jnp.shape(targets)}.")
  residual = (features @ weights - targets).reshape(targets.shape[0], -1)
  return 0.5 * jnp.mean(jnp.sum(residual**2, axis=-1))


def classification_error(features: jax.Array, weights: jax.Array, labels: jax.Array) -> jax.Array:
  """Fraction of points whose largest output is not their label (one-hot regression used as a classifier)."""
  _check_readout(features, weights)
  if jnp.shape(labels) != jnp.shape(features)[:1]:
    raise ValueError(f"`labels` must have shape ({jnp.shape(features)[0]},), got {jnp.shape(labels)}.")
  return jnp.mean(jnp.argmax(features @ weights, axis=-1) != labels)
