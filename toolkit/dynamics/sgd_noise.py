r"""SGD noise in the lazy and feature-learning regimes: the α-scaled centred model trained by SGD at temperature T.

Sclocchi, Geiger and Wyart, "Dissecting the Effects of SGD Noise in Distinct Regimes of Deep Learning", ICML 2023
(arXiv 2301.13703); definitions as in the authors' code (mariogeiger/feature_lazy, branch ``experimental``,
``sgd_jax.py``), rewritten here.

**Model (mean-field readout).** Each hidden layer computes ``z ← φ(z W / √d_in)`` with N(0, 1) weights and no bias,
``φ`` normalised so that ``E_{g~N(0,1)} φ(g)² = 1`` (``normalize_activation``), and the output is
``f(w, x) = zᵀ w_out / h`` with ``h`` the last width (``mlp_apply``). The *perceptron* (the paper's solvable case)
is ``f(w, x) = w · x / √d`` (``perceptron_apply``; ``h = 1`` in the temperature below).

**Centred, α-scaled predictor.** ``F(x) = α (f(w, x) − f(w₀, x))``: zero at initialisation, lazy (kernel) for
α ≫ 1, feature learning for α ≪ 1.

**Loss.** ``L = mean_μ ℓ(α o_μ, y_μ) / α`` with the hinge ``ℓ(z, y) = max(0, 1 − z y)`` and ``o = f(w) − f(w₀)``
(``alpha_hinge_loss``).

**SGD and temperature.** Each step draws B distinct training points and does ``w ← w − dt ∇L_batch``, time
``t = dt × steps``; the noise is controlled by the temperature ``T = dt / (α h B)`` (``step_size`` gives
``dt = T α h B``).

**Stopping.** Training stops when the training hinge loss is exactly 0, i.e. every margin ``α o_μ y_μ ≥ 1``
(``train``); ``t*`` is that time. Once every margin is ≥ 1 no batch has a gradient, so the weights are frozen:
``train`` checks the full training set every ``check_every`` steps and records the last step that moved the
weights, so ``t*`` is exact (not rounded up to a check) and the returned weights are those at ``t*``.

Our choices: the batch is drawn without replacement within a step and independently across steps (as the authors'
``permutation[:B]``); the training set may be the first ``num_points`` of a padded array, so that P can be a
vmapped sweep axis; the activation is normalised with a 201-node Gauss–Hermite rule (deterministic) rather than
10⁶ Monte-Carlo samples.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from toolkit import _checks

Params = Any
ApplyFn = Callable[[Params, jax.Array], jax.Array]

_HERMITE_NODES, _HERMITE_WEIGHTS = np.polynomial.hermite_e.hermegauss(201)
_HERMITE_WEIGHTS = _HERMITE_WEIGHTS / _HERMITE_WEIGHTS.sum()


def gaussian_second_moment(activation: Callable[[jax.Array], jax.Array]) -> float:
  """``E_{g~N(0,1)} φ(g)²`` by a 201-node Gauss–Hermite rule (exact for polynomials of degree ≤ 401).

  >>> round(gaussian_second_moment(lambda g: g**2), 6)
  3.0
  """
  if not callable(activation):
    raise TypeError(f"`activation` must be callable, got {type(activation).__name__}.")
  values = np.asarray(activation(jnp.asarray(_HERMITE_NODES, jnp.float32)), dtype=np.float64)
  return float(np.sum(_HERMITE_WEIGHTS * values**2))


def normalize_activation(activation: Callable[[jax.Array], jax.Array]) -> Callable[[jax.Array], jax.Array]:
  """``φ / c`` with ``c = sqrt(E φ(g)²)``, so that the normalised activation has unit second moment.

  >>> relu = normalize_activation(jax.nn.relu)
  >>> round(gaussian_second_moment(relu), 3), round(float(relu(1.0)) ** 2, 3)
  (1.0, 2.0)
  """
  if not callable(activation):
    raise TypeError(f"`activation` must be callable, got {type(activation).__name__}.")
  scale = gaussian_second_moment(activation) ** 0.5
  if not scale > 0:
    raise ValueError("`activation` is zero on the Gaussian measure; it cannot be normalised.")

  def normalized(x):
    if not isinstance(x, jax.Array | np.ndarray | np.generic | int | float | complex | list | tuple):
      raise TypeError(f"`x` must be an array or a number, got {type(x).__name__}.")
    return activation(x) / scale

  name = getattr(activation, "__name__", "φ")
  normalized.__doc__ = f"``{name}(x) / {scale:.6g}``: {name} with unit second moment under N(0, 1)."
  return normalized


NORMALIZED_RELU = normalize_activation(jax.nn.relu)


def init_mlp(key: jax.Array, num_inputs: int, width: int, depth: int = 1) -> dict:
  """Weights of an MLP with ``depth`` hidden layers of ``width`` units: ``{"hidden": [W (d_in, h), ...],
  "out": (h,)}``, all entries N(0, 1).

  >>> p = init_mlp(jax.random.key(0), 5, 8, depth=2)
  >>> [w.shape for w in p["hidden"]], p["out"].shape
  ([(5, 8), (8, 8)], (8,))
  """
  for value, name in ((num_inputs, "num_inputs"), (width, "width"), (depth, "depth")):
    _checks.check_int(value, name)
  keys = jax.random.split(key, depth + 1)
  sizes = [num_inputs] + [width] * depth
  hidden = [jax.random.normal(keys[i], (sizes[i], sizes[i + 1])) for i in range(depth)]
  return {"hidden": hidden, "out": jax.random.normal(keys[-1], (width,))}


def mlp_apply(params: dict, x: jax.Array, activation: Callable[[jax.Array], jax.Array] = NORMALIZED_RELU) -> jax.Array:
  """The mean-field MLP ``f(w, x) = φ(… φ(x W₁ / √d) …)ᵀ w_out / h`` for inputs ``x`` (n, d): outputs (n,).

  >>> p = init_mlp(jax.random.key(0), 3, 4)
  >>> mlp_apply(p, jnp.ones((2, 3))).shape
  (2,)
  """
  if jnp.ndim(x) != 2 or x.shape[1] != params["hidden"][0].shape[0]:
    raise ValueError(
      f"`x` must be (num_points, {params['hidden'][0].shape[0]}) for these weights, got shape {jnp.shape(x)}."
    )
  z = x
  for w in params["hidden"]:
    z = activation(z @ w / jnp.sqrt(z.shape[-1]).astype(z.dtype))
  return z @ params["out"] / z.shape[-1]


def init_perceptron(key: jax.Array, num_inputs: int) -> jax.Array:
  """Perceptron weights (d,), entries N(0, 1)."""
  _checks.check_int(num_inputs, "num_inputs")
  return jax.random.normal(key, (num_inputs,))


def perceptron_apply(params: jax.Array, x: jax.Array) -> jax.Array:
  """``f(w, x) = w · x / √d``: outputs (n,).

  >>> float(perceptron_apply(jnp.array([1.0, 3.0, 0.0, 0.0]), jnp.array([[2.0, 0.0, 5.0, 1.0]]))[0])
  1.0
  """
  if jnp.ndim(x) != 2 or x.shape[1] != jnp.shape(params)[0]:
    raise ValueError(f"`x` must be (num_points, {jnp.shape(params)[0]}), got shape {jnp.shape(x)}.")
  return x @ params / jnp.sqrt(x.shape[1]).astype(x.dtype)


def alpha_hinge_loss(alpha, centred_output: jax.Array, y: jax.Array, weights: jax.Array | None = None) -> jax.Array:
  """``mean_μ max(0, 1 − α o_μ y_μ) / α`` (a weighted mean with ``weights``, e.g. a mask of real points).

  >>> float(alpha_hinge_loss(2.0, jnp.array([0.25, 1.0]), jnp.array([1.0, 1.0])))
  0.125
  """
  if jnp.shape(y) != jnp.shape(centred_output) or (weights is not None and jnp.shape(weights) != jnp.shape(y)):
    raise ValueError(
      f"`centred_output`, `y` and `weights` must have one shape, got {jnp.shape(centred_output)}, {jnp.shape(y)} "
      f"and {None if weights is None else jnp.shape(weights)}."
    )
  _checks.check_positive(alpha, "alpha")
  per_point = jax.nn.relu(1.0 - alpha * centred_output * y) / alpha
  if weights is None:
    return per_point.mean()
  return jnp.sum(per_point * weights) / jnp.sum(weights)


def step_size(temperature, alpha, width, batch_size):
  """The SGD step ``dt = T α h B`` that gives temperature ``T`` (``h = 1`` for the perceptron).

  >>> step_size(1e-3, 2.0, 100, 8)
  1.6
  """
  for name, value in (("temperature", temperature), ("alpha", alpha), ("width", width), ("batch_size", batch_size)):
    _checks.check_positive(value, name)
  return temperature * alpha * width * batch_size


def _check_numeric_leaves(tree, name: str) -> None:
  for leaf in jax.tree.leaves(tree):
    try:
      dtype = jnp.asarray(leaf).dtype
    except TypeError:
      dtype = None
    if dtype is None or not (jnp.issubdtype(dtype, jnp.number) or dtype == jnp.bool_):
      raise TypeError(f"`{name}` must be a pytree of numeric arrays, got a leaf {leaf!r}.")


def tree_norm(tree) -> jax.Array:
  """The Euclidean norm of all leaves of a pytree together."""
  _check_numeric_leaves(tree, "tree")
  return jnp.sqrt(sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(tree)))


def relative_weight_change(params, params0) -> jax.Array:
  """``‖w − w₀‖ / ‖w₀‖`` over all weights together."""
  if jax.tree.structure(params) != jax.tree.structure(params0):
    raise ValueError(
      f"`params` and `params0` must have one tree structure, got {jax.tree.structure(params)} and "
      f"{jax.tree.structure(params0)}."
    )
  for w, w0 in zip(jax.tree.leaves(params), jax.tree.leaves(params0)):
    if jnp.shape(w) != jnp.shape(w0):
      raise ValueError(
        f"`params` and `params0` must have leaves of equal shapes, got {jnp.shape(w)} and {jnp.shape(w0)}."
      )
  return tree_norm(jax.tree.map(jnp.subtract, params, params0)) / tree_norm(params0)


class SGDState(NamedTuple):
  """The SGD iterate: ``params``; ``step`` (steps taken); ``last_active`` (index of the last step whose batch had
  a margin below 1, i.e. that moved the weights; −1 if none); ``key`` (the batch-sampling PRNG key)."""

  params: Params
  step: jax.Array
  last_active: jax.Array
  key: jax.Array


def init(params0: Params, key: jax.Array) -> SGDState:
  """The SGD state at initialisation."""
  if not isinstance(key, jax.Array) or not (
    jnp.issubdtype(key.dtype, jax.dtypes.prng_key) or (key.dtype == jnp.uint32 and key.ndim == 1)
  ):
    raise TypeError(f"`key` must be a jax.random key, got {type(key).__name__} {getattr(key, 'dtype', '')}.")
  return SGDState(params0, jnp.zeros((), jnp.int32), -jnp.ones((), jnp.int32), key)


def _sample_batch(key: jax.Array, num_padded: int, num_points, batch_size: int) -> jax.Array:
  # B distinct indices among the first `num_points`: the B smallest uniforms, padded points pushed to +2.
  u = jax.random.uniform(key, (num_padded,))
  u = jnp.where(jnp.arange(num_padded) < num_points, u, 2.0)
  return jax.lax.top_k(-u, batch_size)[1]


def step(
  state: SGDState,
  apply_fn: ApplyFn,
  x: jax.Array,
  y: jax.Array,
  out0: jax.Array,
  *,
  alpha,
  dt,
  batch_size: int,
  num_points=None,
) -> SGDState:
  """One SGD step ``w ← w − dt ∇ mean_{μ∈batch} max(0, 1 − α o_μ y_μ)/α`` on a batch of ``batch_size`` distinct
  points among the first ``num_points`` (default all); ``out0 = f(w₀, x)``."""
  _checks.check_int(batch_size, "batch_size")
  if batch_size > x.shape[0]:
    raise ValueError(f"`batch_size` ({batch_size}) must not exceed the number of training points ({x.shape[0]}).")
  key, k_batch = jax.random.split(state.key)
  idx = _sample_batch(k_batch, x.shape[0], x.shape[0] if num_points is None else num_points, batch_size)
  xb, yb, ob = x[idx], y[idx], out0[idx]

  def loss(params):
    centred = apply_fn(params, xb) - ob
    return alpha_hinge_loss(alpha, centred, yb), jnp.any(alpha * centred * yb < 1.0)

  grads, active = jax.grad(loss, has_aux=True)(state.params)
  params = jax.tree.map(lambda w, g: w - dt * g, state.params, grads)
  last_active = jnp.where(active, state.step, state.last_active)
  return SGDState(params, state.step + 1, last_active, key)


class TrainResult(NamedTuple):
  """The outcome of ``train``.

  Attributes:
    params: the weights at the stop (at ``t*`` when converged).
    num_steps: steps up to the stop, ``last_active + 1`` (the last step that moved the weights).
    time: ``t* = num_steps × dt``.
    converged: whether every training margin ``α o_μ y_μ`` reached 1 before ``max_steps``.
    train_loss: the full training hinge loss at the stop (exactly 0 when converged).
    min_margin: ``min_μ α o_μ y_μ`` over the training points at the stop.
    steps_run: the steps actually run (a multiple of ``check_every``; the steps after ``num_steps`` are no-ops).
    dt: the step size ``T α h B``.
  """

  params: Params
  num_steps: jax.Array
  time: jax.Array
  converged: jax.Array
  train_loss: jax.Array
  min_margin: jax.Array
  steps_run: jax.Array
  dt: jax.Array


def train(
  apply_fn: ApplyFn,
  params0: Params,
  x: jax.Array,
  y: jax.Array,
  key: jax.Array,
  *,
  alpha,
  temperature,
  width,
  batch_size: int,
  max_steps: int,
  check_every: int = 100,
  num_points=None,
) -> TrainResult:
  """SGD at temperature ``T`` on the α-scaled centred model, until every training margin is ≥ 1 (hinge loss
  exactly 0) or ``max_steps``: a ``lax.while_loop`` over blocks of ``check_every`` steps, the full training set
  checked after each block. ``alpha``, ``temperature``, ``width`` and ``num_points`` may be traced (sweep axes);
  ``batch_size``, ``max_steps`` and ``check_every`` are static. With ``num_points``, only the first
  ``num_points`` rows of ``x`` are the training set (the rest is padding); ``max_steps`` is rounded up to a
  multiple of ``check_every``; ``batch_size = len(x)`` without
  ``num_points`` is full-batch gradient descent (deterministic).

  >>> k1, k2 = jax.random.split(jax.random.key(0))
  >>> x = jax.random.normal(k1, (64, 5)); y = jnp.sign(x[:, 0])
  >>> r = train(perceptron_apply, init_perceptron(k2, 5), x, y, jax.random.key(1), alpha=1.0, temperature=0.05,
  ...           width=1, batch_size=8, max_steps=20_000)
  >>> bool(r.converged), float(r.train_loss), bool(r.min_margin >= 1.0)
  (True, 0.0, True)
  """
  if jnp.ndim(x) != 2 or jnp.ndim(y) != 1 or x.shape[0] != y.shape[0]:
    raise ValueError(f"`x` (n, d) and `y` (n,) must agree on n, got shapes {jnp.shape(x)} and {jnp.shape(y)}.")
  _checks.check_int(batch_size, "batch_size")
  _checks.check_int(max_steps, "max_steps")
  _checks.check_int(check_every, "check_every")
  if batch_size > x.shape[0]:
    raise ValueError(f"`batch_size` ({batch_size}) must not exceed the number of training points ({x.shape[0]}).")
  for value, name in ((alpha, "alpha"), (temperature, "temperature"), (width, "width")):
    if isinstance(value, int | float) and not value > 0:
      raise ValueError(f"`{name}` must be > 0, got {value!r}.")
  y = y.astype(x.dtype)
  out0 = apply_fn(params0, x)
  n = x.shape[0] if num_points is None else num_points
  mask = (jnp.arange(x.shape[0]) < n).astype(x.dtype)
  dt = step_size(jnp.asarray(temperature, x.dtype), alpha, width, batch_size)
  num_blocks = -(-max_steps // check_every)

  def margins(params):
    return alpha * (apply_fn(params, x) - out0) * y

  def fitted(params):
    return jnp.all((margins(params) >= 1.0) | (mask == 0))

  def cond(carry):
    state, done = carry
    return (~done) & (state.step < num_blocks * check_every)

  def body(carry):
    state, _ = carry
    state = jax.lax.fori_loop(
      0,
      check_every,
      lambda _, s: step(s, apply_fn, x, y, out0, alpha=alpha, dt=dt, batch_size=batch_size, num_points=num_points),
      state,
    )
    return state, fitted(state.params)

  state, done = jax.lax.while_loop(cond, body, (init(params0, key), fitted(params0)))
  m = margins(state.params)
  loss = jnp.sum(jax.nn.relu(1.0 - m) * mask) / (alpha * jnp.sum(mask))
  num_steps = state.last_active + 1
  return TrainResult(
    params=state.params,
    num_steps=num_steps,
    time=num_steps * dt,
    converged=done,
    train_loss=loss,
    min_margin=jnp.min(jnp.where(mask > 0, m, jnp.inf)),
    steps_run=state.step,
    dt=dt,
  )


def sign_error(apply_fn: ApplyFn, params: Params, params0: Params, x: jax.Array, y: jax.Array) -> jax.Array:
  """The fraction of points misclassified by the centred predictor, ``mean[(f(w, x) − f(w₀, x)) y ≤ 0]``."""
  if not callable(apply_fn):
    raise TypeError(f"`apply_fn` must be callable, got {type(apply_fn).__name__}.")
  centred = apply_fn(params, x) - apply_fn(params0, x)
  if jnp.shape(y) != centred.shape:
    raise ValueError(f"`y` must have the shape of the outputs {centred.shape}, got shape {jnp.shape(y)}.")
  return jnp.mean(centred * y <= 0)


__all__ = [
  "NORMALIZED_RELU",
  "SGDState",
  "TrainResult",
  "alpha_hinge_loss",
  "gaussian_second_moment",
  "init",
  "init_mlp",
  "init_perceptron",
  "mlp_apply",
  "normalize_activation",
  "perceptron_apply",
  "relative_weight_change",
  "sign_error",
  "step",
  "step_size",
  "train",
  "tree_norm",
]
