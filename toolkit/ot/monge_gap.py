"""The Monge gap: a regulariser that pushes a map towards optimality for any cost.

Uscidda and Cuturi. "The Monge Gap: A Regularizer to Learn All Transport Maps", ICML 2023, arXiv 2302.04953.

For a reference measure ρ and a cost c, the Monge gap of a map T is

  M_ρ^c(T) = ∫ c(x, T(x)) dρ(x) - W_c(ρ, T#ρ) ≥ 0,

zero exactly when T is c-optimal between ρ and its image. On samples it is estimated with entropic OT (Eq. 8):

  M̂(T) = (1/n) Σ_i c(x_i, T(x_i)) - W_{c,ε}(ρ̂_n, T#ρ̂_n),   W_{c,ε} = <P, C> - ε H(P)  (ott's ``ent_reg_cost``),

which is at least ε log n (the diagonal coupling is feasible and has entropy log n), with equality for an optimal
map. A map is then learned by minimising a fitting loss Δ(T#μ, ν) plus λ·M̂(T) over an unconstrained network.

The entropic OT inside is a swappable solver of an ott ``LinearProblem`` (``solver=``): ott's Sinkhorn by default,
or Sinkhorn-Newton-Sparse (``toolkit.ot.SinkhornNewtonSparse``); both differentiate through their fixed point.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from ott.geometry import costs, pointcloud
from ott.problems.linear import linear_problem
from ott.solvers.linear import sinkhorn
from ott.tools import sinkhorn_divergence

from toolkit.ot import _checks

# A linear OT solver: an ott LinearProblem in, an output with ``ent_reg_cost`` and ``converged`` out (ott's
# ``sinkhorn.Sinkhorn(...)``, ``toolkit.ot.SinkhornNewtonSparse(...)``, ...). It must be differentiable in the
# problem (ott's implicit differentiation, SNS's) for the gap to be a training loss.
LinearSolver = Callable[[linear_problem.LinearProblem], Any]

# The estimator's default Sinkhorn: tighter than ott's default (threshold 1e-3, 2000 iterations), which often stops
# unconverged at the small ε the Monge gap needs; ``converged`` is reported either way.
DEFAULT_SOLVER_KWARGS = {"threshold": 1e-4, "max_iterations": 5000}
# Both losses of :func:`fit_map` during training: ott's defaults, ten times cheaper per step than the above.
TRAINING_SOLVER_KWARGS = {"threshold": 1e-3, "max_iterations": 2000}
# Adam's learning rate of :func:`fit_map` when no optimiser is given.
DEFAULT_LEARNING_RATE = 1e-3


class MongeGapOutput(NamedTuple):
  """The Monge gap estimate and its parts.

  Attributes:
    value: ``displacement - ent_reg_cost``.
    displacement: mean cost of the pairs ``(x_i, T(x_i))``.
    ent_reg_cost: entropic OT cost between the two point clouds.
    floor: ``ε log n``, the value for an optimal map once the OT solver has converged.
    epsilon: the ε used.
    converged: whether the OT solver converged.
  """

  value: jax.Array
  displacement: jax.Array
  ent_reg_cost: jax.Array
  floor: jax.Array
  epsilon: jax.Array
  converged: jax.Array


def _check_samples(source, mapped) -> None:
  for name, arr in (("source", source), ("mapped", mapped)):
    if jnp.ndim(arr) != 2:
      raise ValueError(f"`{name}` must be a [n, d] array of samples, got shape {jnp.shape(arr)}.")
    if not jnp.issubdtype(jnp.result_type(arr), jnp.floating):
      raise TypeError(f"`{name}` must be floating point, got {jnp.result_type(arr)}.")
    if min(jnp.shape(arr)) < 1:  # no samples divides by zero; d = 0 gave a finite gap of nothing
      raise ValueError(f"`{name}` must hold n >= 1 samples of dimension d >= 1, got shape {jnp.shape(arr)}.")
  if jnp.shape(source) != jnp.shape(mapped):
    raise ValueError(
      f"`source` and `mapped` must pair up sample by sample (same shape), got {jnp.shape(source)} and "
      f"{jnp.shape(mapped)}."
    )


def _check_solver(solver: Any, default_kwargs: dict[str, Any]) -> LinearSolver:
  if solver is None:
    return sinkhorn.Sinkhorn(**default_kwargs)
  if not callable(solver):
    raise TypeError(
      f"`solver` must be a callable taking an ott LinearProblem (e.g. ott's sinkhorn.Sinkhorn(...) or "
      f"toolkit.ot.SinkhornNewtonSparse(...)), got {type(solver).__name__}."
    )
  return solver


def monge_gap_output(
  source: jax.Array,
  mapped: jax.Array,
  *,
  cost_fn: costs.CostFn | None = None,
  epsilon: float | None = None,
  relative_epsilon: str | None = None,
  solver: LinearSolver | None = None,
) -> MongeGapOutput:
  """The entropic Monge gap estimator (arXiv 2302.04953, Eq. 8) with its parts; see :func:`monge_gap`.

  >>> grid = jnp.stack(jnp.meshgrid(jnp.arange(4.0), jnp.arange(4.0)), -1).reshape(-1, 2)
  >>> out = monge_gap_output(grid, grid + 0.1, epsilon=0.01)  # a translation is optimal for ‖x - y‖²
  >>> print(bool(out.converged), bool(jnp.abs(out.value - out.floor) < 1e-5))  # at the floor ε log n
  True True
  """
  _check_samples(source, mapped)
  if epsilon is not None:
    _checks.check_epsilon(epsilon, "the entropic regularisation")
  if not (relative_epsilon is None or (isinstance(relative_epsilon, str) and relative_epsilon in ("mean", "std"))):
    raise ValueError(f"`relative_epsilon` must be None, 'mean' or 'std' (as in ott), got {relative_epsilon!r}.")
  if cost_fn is not None and not isinstance(cost_fn, costs.CostFn):
    raise TypeError(
      f"`cost_fn` must be an ott cost, an instance of ott.geometry.costs.CostFn (e.g. costs.SqEuclidean()), "
      f"got {cost_fn!r}."
    )
  solver = _check_solver(solver, DEFAULT_SOLVER_KWARGS)
  cost_fn = costs.SqEuclidean() if cost_fn is None else cost_fn
  # scale_cost stays 1: ott 0.6 rescales the OT cost but not the displacement term otherwise.
  geom = pointcloud.PointCloud(source, mapped, cost_fn=cost_fn, epsilon=epsilon, relative_epsilon=relative_epsilon)
  displacement = jnp.mean(jax.vmap(cost_fn)(source, mapped))
  out = solver(linear_problem.LinearProblem(geom))
  n = source.shape[0]
  return MongeGapOutput(
    value=displacement - out.ent_reg_cost,
    displacement=displacement,
    ent_reg_cost=out.ent_reg_cost,
    floor=geom.epsilon * jnp.log(n),
    epsilon=geom.epsilon,
    converged=out.converged,
  )


def monge_gap(
  source: jax.Array,
  mapped: jax.Array,
  *,
  cost_fn: costs.CostFn | None = None,
  epsilon: float | None = None,
  relative_epsilon: str | None = None,
  solver: LinearSolver | None = None,
) -> jax.Array:
  """Entropic estimate of the Monge gap of the map ``source[i] -> mapped[i]`` (arXiv 2302.04953, Eq. 8).

  Args:
    source: ``[n, d]`` samples x_i of the reference measure.
    mapped: ``[n, d]`` their images T(x_i).
    cost_fn: any ott cost; squared Euclidean (``‖x - y‖²``, no ½) by default.
    epsilon: entropic regularisation; ``None`` gives ott's default (0.05 × std of the cost matrix).
    relative_epsilon: ``"mean"`` or ``"std"`` to read ``epsilon`` relative to the cost matrix, as in ott.
    solver: the entropic OT solver, any callable taking an ott ``LinearProblem`` and returning an output with
      ``ent_reg_cost`` and ``converged`` (``LinearSolver``); ``None``: ott's
      ``sinkhorn.Sinkhorn(**DEFAULT_SOLVER_KWARGS)``. ``toolkit.ot.SinkhornNewtonSparse(...)`` fits too.

  Returns:
    A scalar ≥ ε log n (up to the solver's tolerance); differentiable in both arguments.

  >>> from toolkit.ot.sinkhorn_newton_sparse import SinkhornNewtonSparse
  >>> x = jax.random.normal(jax.random.key(0), (16, 2))
  >>> y = x[::-1]  # a permutation: far from optimal
  >>> gap = monge_gap(x, y, epsilon=0.1)
  >>> gap_sns = monge_gap(x, y, epsilon=0.1, solver=SinkhornNewtonSparse(threshold=1e-5))
  >>> print(bool(gap > 10 * 0.1 * jnp.log(16)), bool(jnp.abs(gap - gap_sns) < 1e-3))
  True True
  """
  return monge_gap_output(
    source,
    mapped,
    cost_fn=cost_fn,
    epsilon=epsilon,
    relative_epsilon=relative_epsilon,
    solver=solver,
  ).value


class MapMLP(nn.Module):
  """An unconstrained map ``T(x) = x + MLP(x)``: no convexity, any cost (starts near the identity)."""

  hidden: Sequence[int] = (64, 64, 64)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = x
    for width in self.hidden:
      h = nn.gelu(nn.Dense(width)(h))
    return x + nn.Dense(x.shape[-1], kernel_init=nn.initializers.zeros)(h)


REGULARIZERS = ("monge_gap", "displacement")


class MapFit(NamedTuple):
  """A learned map: ``model.apply(params, x)``, and the losses along training.

  ``monge_gap`` holds the regulariser's value at each step: the Monge gap, or with ``regularizer="displacement"``
  the mean displacement cost.
  """

  params: Any
  model: nn.Module
  fitting_loss: jax.Array
  monge_gap: jax.Array

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.model.apply(self.params, x)


def fit_map(
  key: jax.Array,
  source_sampler: Callable[[jax.Array, int], jax.Array],
  target_sampler: Callable[[jax.Array, int], jax.Array],
  *,
  cost_fn: costs.CostFn | None = None,
  lambda_mg: float = 1.0,
  hidden: Sequence[int] = (64, 64, 64),
  num_steps: int = 2000,
  batch_size: int = 256,
  optimizer: optax.GradientTransformation | None = None,
  fitting_epsilon: float = 0.1,
  mg_epsilon: float = 0.01,
  solver: LinearSolver | None = None,
  fitting_solve_kwargs: dict[str, Any] | None = None,
  regularizer: str = "monge_gap",
) -> MapFit:
  """Learns a map from samples by ``min_θ S_ε(T_θ#μ, ν) + λ M̂(T_θ)`` (arXiv 2302.04953, Sec. 4).

  The fitting loss is ott's Sinkhorn divergence with a squared-Euclidean cost; the Monge gap uses ``cost_fn``.
  Both ε are relative to the mean cost of the batch (``relative_epsilon="mean"``), as in ott's tutorial.

  Args:
    key: PRNG key (initialisation and batches).
    source_sampler, target_sampler: ``(key, n) -> [n, d]`` samples of μ and ν.
    cost_fn: the cost the map should be optimal for.
    lambda_mg: weight λ of the Monge gap; 0 trains with the fitting loss alone.
    hidden: widths of the MLP.
    num_steps, batch_size: the training steps and the samples of each side per step.
    optimizer: any optax transformation; ``None``: ``optax.adam(DEFAULT_LEARNING_RATE)``.
    fitting_epsilon, mg_epsilon: relative ε of the Sinkhorn divergence and of the Monge gap.
    solver: the Monge gap's OT solver during training (see :func:`monge_gap`); ``None``: ott's
      ``sinkhorn.Sinkhorn(**TRAINING_SOLVER_KWARGS)`` (ott's defaults, ten times cheaper per step here than the
      estimator's tighter default).
    fitting_solve_kwargs: ott Sinkhorn options of the Sinkhorn divergence (ott's ``sinkdiv(solve_kwargs=...)``);
      ``None``: ``TRAINING_SOLVER_KWARGS``.
    regularizer: ``"monge_gap"``, or ``"displacement"``: the mean cost ``E c(x, T(x))`` at the same weight, the
      naive penalty the paper compares against (it pulls T towards the identity instead of towards optimality;
      the Monge gap subtracts the OT cost between x and T(x) from it).

  Returns:
    A :class:`MapFit`.

  >>> source = lambda k, n: jax.random.normal(k, (n, 2))
  >>> target = lambda k, n: jax.random.normal(k, (n, 2)) + 2.0
  >>> learned = fit_map(jax.random.key(0), source, target, num_steps=3, batch_size=16, hidden=(8,),
  ...                   optimizer=optax.adam(1e-2))
  >>> print(learned.fitting_loss.shape, learned(jnp.zeros((5, 2))).shape)
  (3,) (5, 2)
  """
  if lambda_mg < 0:
    raise ValueError(f"`lambda_mg` must be >= 0, got {lambda_mg}.")
  if regularizer not in REGULARIZERS:
    raise ValueError(f"`regularizer` must be one of {REGULARIZERS}, got {regularizer!r}.")
  if num_steps < 1 or batch_size < 2:
    raise ValueError(f"need num_steps >= 1 and batch_size >= 2, got {num_steps} and {batch_size}.")
  solver = _check_solver(solver, TRAINING_SOLVER_KWARGS)
  if fitting_solve_kwargs is None:
    fitting_solve_kwargs = dict(TRAINING_SOLVER_KWARGS)
  if optimizer is None:
    optimizer = optax.adam(DEFAULT_LEARNING_RATE)
  elif not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
    raise TypeError(f"`optimizer` must be an optax GradientTransformation, got {type(optimizer).__name__}.")
  init_key, data_key = jax.random.split(key)
  probe = source_sampler(init_key, 2)
  model = MapMLP(tuple(hidden))
  params = model.init(init_key, probe)

  def losses(params, x, y):
    mapped = model.apply(params, x)
    fit, _ = sinkhorn_divergence.sinkdiv(
      mapped,
      y,
      epsilon=fitting_epsilon,
      relative_epsilon="mean",
      static_b=True,
      solve_kwargs=fitting_solve_kwargs,
    )
    if regularizer == "displacement":
      pairwise = cost_fn if cost_fn is not None else costs.SqEuclidean()
      return fit, jnp.mean(jax.vmap(pairwise)(x, mapped))
    gap = monge_gap(x, mapped, cost_fn=cost_fn, epsilon=mg_epsilon, relative_epsilon="mean", solver=solver)
    return fit, gap

  def objective(params, x, y):
    fit, gap = losses(params, x, y)
    return fit + lambda_mg * gap, (fit, gap)

  def step(carry, step_key):
    params, opt_state = carry
    kx, ky = jax.random.split(step_key)
    x, y = source_sampler(kx, batch_size), target_sampler(ky, batch_size)
    (_, (fit, gap)), grads = jax.value_and_grad(objective, has_aux=True)(params, x, y)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), (fit, gap)

  @jax.jit
  def train(params, keys):
    return jax.lax.scan(step, (params, optimizer.init(params)), keys)

  (params, _), (fit, gap) = train(params, jax.random.split(data_key, num_steps))
  return MapFit(params, model, fit, gap)
