r"""PRESTO: ordinal regression that shrinks a non-parallel cumulative-logit model towards proportional odds.

Faletto, Bien. "Predicting Rare Events by Shrinking Towards Proportional Odds", ICML 2023 (PMLR 202:9547–9602),
arXiv 2305.18700 (authors' R code: github.com/gregfaletto/presto, a modified ``ordinalNet``).

Model (paper, §2; the authors' sign convention, the opposite of ``MASS::polr`` and statsmodels): for ordinal
labels ``y ∈ {0, …, K-1}`` and thresholds ``k = 0, …, K-2``

  P(y ≤ k | x) = σ(α_k + xᵀβ_k),     P(y = k | x) = P(y ≤ k | x) - P(y ≤ k-1 | x),

with one weight vector β_k per threshold. PRESTO reparametrises ``ψ_0 = β_0``, ``ψ_k = β_k - β_{k-1}`` and solves

  min_{α, ψ}  -(1/n) Σ_i log P(y_i | x_i)  +  λ Σ_{j,k} w_{jk} |ψ_{jk}|,

the lasso on the first weight vector and on the differences of adjacent vectors (``w = 1``; the intercepts are not
penalised). With ``penalize_first=False`` the first vector is free (``w_{j0} = 0``): a very large λ then gives
exactly the proportional-odds model (all ``ψ_{k≥1} = 0``), and with the first vector penalised too a very large λ
gives the intercept-only model. λ = 0 is the unpenalised non-parallel cumulative-logit fit.

Statsmodels' ``OrderedModel`` (and numpyro's ``OrderedLogistic``) write ``P(y ≤ k) = F(θ_k - xᵀb)``: the
conversion is ``α_k = θ_k``, ``β = -b``.

Choices (what follows the authors' code, read in their repository, and what is ours):

- Features are standardised (weighted mean 0, standard deviation 1) before the penalty is applied and the
  coefficients are returned on the original scale, as ``ordinalNet`` does by default (``standardize=TRUE``).
- λ path and tuning as the authors' ``getLambdaFusedPolr``: 20 values from λ_max down to 0.01 λ_max on a log
  grid, 5-fold cross-validation of the Brier score ``Σ_k (p̂_k - 1{y = k})²``, λ* = the largest λ attaining the
  smallest mean Brier score, then the fit on all the data at λ*. λ_max (the smallest λ at which every penalised
  coefficient is zero) is computed here from the gradient at the fully shrunk fit; the folds are uniformly random
  (not stratified). The authors solve with ``ordinalNet``'s MIRLS (IRLS + coordinate descent);
- ours: the solver is FISTA (Beck & Teboulle, SIAM J. Imaging Sci. 2009) with backtracking on the step size and a
  function-value restart of the momentum (O'Donoghue & Candès, FoCM 2015); the likelihood is finite only where the
  fitted cumulative probabilities increase at every training point, so a trial point outside that domain counts as
  ``+∞`` and is refused by the line search (the objective is convex on that convex domain). The run stops when
  the gradient mapping ``L ‖z - y‖_∞`` falls below ``tol``. Warm starts along the λ path; the folds, the full-data
  path (and, in the experiment, the replications) are ``vmap``-ed lanes of one computation, the held-out points of
  a fold having weight 0.
- ours: :func:`predict_proba` on new points where the fitted cumulative probabilities cross (possible out of sample
  for a non-parallel model, where a class probability would be negative) sorts the cumulative probabilities
  before differencing them (the monotone rearrangement of Chernozhukov, Fernández-Val, Galichon, Econometrica
  2010): probabilities are then non-negative and sum to one, and rows without crossing are unchanged. The authors'
  code stops with an error instead. :func:`crossing` flags such rows.

>>> import jax, jax.numpy as jnp
>>> from toolkit.stats import presto
>>> x = jax.random.normal(jax.random.key(0), (200, 2))
>>> y = jnp.digitize(x[:, 0] + 0.5 * jax.random.logistic(jax.random.key(1), (200,)), jnp.array([-0.5, 1.0]))
>>> model = presto.fit(x, y, lam=0.01)
>>> print(presto.predict_proba(model, x[:2]).shape, bool(model.converged))
(2, 3) True
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from toolkit import _checks

# λ used for "infinitely large": every penalised coefficient is soft-thresholded to exactly zero.
_HUGE_LAMBDA = 1e8


# ----------------------------------------------------------------------------------------------------------------
# Types.


class PrestoModel(NamedTuple):
  """A fitted cumulative-logit model ``P(y ≤ k | x) = σ(α_k + xᵀβ_k)``, on the original feature scale.

  A λ path (:func:`fit_path`) is the same type with a leading λ axis on every field.

  Attributes:
    intercepts: ``(K-1,)`` α_k.
    differences: ``(p, K-1)`` ψ: the first weight vector β_0 and the differences β_k - β_{k-1} (exact zeros where
      the lasso set them to zero); ``coef`` (property) gives the β_k as columns.
    lam: ``()`` the penalty λ it was fitted with.
    objective: ``()`` the penalised objective at the solution (on the standardised scale the penalty uses).
    num_iterations: ``()`` FISTA iterations run.
    converged: ``()`` whether the gradient mapping fell below ``tol`` within ``num_iterations``.
  """

  intercepts: jax.Array
  differences: jax.Array
  lam: jax.Array
  objective: jax.Array
  num_iterations: jax.Array
  converged: jax.Array

  @property
  def num_classes(self) -> int:
    return self.intercepts.shape[-1] + 1

  @property
  def coef(self) -> jax.Array:
    """``(p, K-1)`` β_k as columns: the cumulative sums of the differences."""
    return jnp.cumsum(self.differences, axis=-1)


class PrestoProblem(NamedTuple):
  """The penalised problem on standardised features (what :func:`step` needs besides its state).

  Attributes:
    x: ``(n, p)`` standardised features.
    y: ``(n,)`` int labels in ``0..K-1``.
    weights: ``(n,)`` observation weights (0 drops a point: the held-out part of a cross-validation fold).
    lam: ``()`` λ.
    penalty_factors: ``(p, K-1)`` w_{jk} (0 or 1).
    mean: ``(p,)`` and scale ``(p,)``: the standardisation ``x_std = (x - mean) / scale``.
    tol: ``()`` stopping tolerance on the gradient mapping (sup norm).
  """

  x: jax.Array
  y: jax.Array
  weights: jax.Array
  lam: jax.Array
  penalty_factors: jax.Array
  mean: jax.Array
  scale: jax.Array
  tol: jax.Array


class PrestoState(NamedTuple):
  """FISTA state.

  Attributes:
    intercepts: ``(K-1,)`` current α (standardised scale).
    psi: ``(p, K-1)`` current ψ (standardised scale).
    prev_intercepts, prev_psi: the previous iterate (for the momentum).
    momentum: ``()`` FISTA's t_k (1 after a restart).
    lipschitz: ``()`` current inverse step size L.
    objective: ``()`` penalised objective at the current iterate.
    iteration: ``()`` iterations done.
    converged: ``()`` gradient mapping below tolerance at the last step.
  """

  intercepts: jax.Array
  psi: jax.Array
  prev_intercepts: jax.Array
  prev_psi: jax.Array
  momentum: jax.Array
  lipschitz: jax.Array
  objective: jax.Array
  iteration: jax.Array
  converged: jax.Array


class PrestoCV(NamedTuple):
  """Cross-validated PRESTO.

  Attributes:
    lambdas: ``(L,)`` the λ path, decreasing.
    fold_brier: ``(num_folds, L)`` held-out mean Brier score of each fold's fit.
    mean_brier: ``(L,)`` its mean over folds.
    best_index: ``()`` index of λ* (the largest λ with the smallest mean Brier score).
    best_lambda: ``()`` λ*.
    path: the full-data fits along the path (a :class:`PrestoModel` with a leading ``(L,)`` axis).
    model: the full-data fit at λ*.
  """

  lambdas: jax.Array
  fold_brier: jax.Array
  mean_brier: jax.Array
  best_index: jax.Array
  best_lambda: jax.Array
  path: PrestoModel
  model: PrestoModel


# ----------------------------------------------------------------------------------------------------------------
# Input checks.


def _check_xy(x, y, num_classes):
  x = jnp.asarray(x)
  y = jnp.asarray(y)
  if x.ndim != 2 or x.shape[0] < 1:
    raise ValueError(f"`x` must have shape (n, p) with n >= 1, got {x.shape}.")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(jnp.result_type(float))
  if not isinstance(x, jax.core.Tracer) and not np.isfinite(np.asarray(x)).all():
    raise ValueError(f"`x` must be finite, got {int((~np.isfinite(np.asarray(x))).sum())} non-finite entries.")
  if y.ndim != 1 or y.shape[0] != x.shape[0]:
    raise ValueError(f"`y` must have shape (n,) = ({x.shape[0]},), got {y.shape}.")
  if not jnp.issubdtype(y.dtype, jnp.integer):
    raise TypeError(f"`y` must hold integer labels 0..K-1, got dtype {y.dtype}.")
  concrete = not isinstance(y, jax.core.Tracer)
  if num_classes is None:
    if not concrete:
      raise TypeError("`num_classes` must be given when `y` is traced (under jit or vmap).")
    num_classes = int(np.max(np.asarray(y))) + 1
  if not isinstance(num_classes, int | np.integer) or isinstance(num_classes, bool) or num_classes < 2:
    raise ValueError(f"`num_classes` must be an int >= 2, got {num_classes!r}.")
  # numpy: jnp reductions of a closed-over constant are traced under jit.
  if concrete and (int(np.min(np.asarray(y))) < 0 or int(np.max(np.asarray(y))) >= num_classes):
    raise ValueError(
      f"`y` must hold labels in 0..{num_classes - 1}, got values in "
      f"{int(np.min(np.asarray(y)))}..{int(np.max(np.asarray(y)))}."
    )
  return x, y.astype(jnp.int32), int(num_classes)


def _check_weights(weights, n: int, dtype) -> jax.Array:
  w = jnp.ones(n, dtype) if weights is None else jnp.asarray(weights, dtype)
  if w.shape != (n,):
    raise ValueError(f"`weights` must have shape (n,) = ({n},), got {w.shape}.")
  _checks.check_weight_values(w)  # a weight of 0 drops a point
  return w


def _check_lam(lam, name="lam"):
  if not isinstance(lam, jax.core.Tracer):
    arr = np.asarray(lam)
    if arr.ndim != 0 or not np.isfinite(arr) or arr < 0:
      raise ValueError(f"`{name}` must be a finite scalar >= 0, got {lam!r}.")


def _check_problem_state(problem, state=None) -> None:
  """``problem`` a :class:`PrestoProblem` and ``state`` a :class:`PrestoState` of its shapes (argument order)."""
  if not isinstance(problem, PrestoProblem):
    raise TypeError(f"`problem` must be a PrestoProblem (from make_problem), got {type(problem).__name__}.")
  if state is None:
    return
  if not isinstance(state, PrestoState):
    raise TypeError(f"`state` must be a PrestoState (from init), got {type(state).__name__}.")
  p, k1 = problem.penalty_factors.shape
  if jnp.shape(state.psi) != (p, k1) or jnp.shape(state.intercepts) != (k1,):
    raise ValueError(
      f"`state` must hold intercepts of shape ({k1},) and psi of shape ({p}, {k1}) (the problem's), got "
      f"{jnp.shape(state.intercepts)} and {jnp.shape(state.psi)}."
    )


def _default_tol(dtype) -> float:
  return 1e-9 if jnp.dtype(dtype) == jnp.float64 else 1e-5


# ----------------------------------------------------------------------------------------------------------------
# Likelihood.


def cumulative_logits(intercepts: jax.Array, coef: jax.Array, x: jax.Array) -> jax.Array:
  """``(n, K-1)`` linear predictors ``η_k(x) = α_k + xᵀβ_k``."""
  x, coef = jnp.asarray(x), jnp.asarray(coef)
  if coef.ndim < 2:
    raise ValueError(f"`coef` must have shape (p, K-1), got {coef.shape}.")
  if x.ndim != 2 or x.shape[1] != coef.shape[-2]:
    raise ValueError(f"`x` must have shape (n, {coef.shape[-2]}) (p = coef's rows), got {x.shape}.")
  if jnp.shape(intercepts)[-1:] != coef.shape[-1:]:
    raise ValueError(
      f"`intercepts` must have shape (K-1,) with K-1 = {coef.shape[-1]} (coef's columns), got {jnp.shape(intercepts)}."
    )
  return intercepts + x @ coef


def _class_log_probs(eta: jax.Array, y: jax.Array, weights: jax.Array) -> jax.Array:
  """log P(y_i | x_i) from the cumulative logits; ``-inf`` where the cumulative probabilities do not increase.

  Uses ``σ(a) - σ(b) = σ(a) σ(-b) (1 - e^{-(a-b)})`` with ``a = η_y``, ``b = η_{y-1}`` (η_{-1} = -∞, η_{K-1} = +∞).
  Points of weight 0 are replaced by a harmless value so that they contribute neither NaN nor gradient.
  """
  n = eta.shape[0]
  inf = jnp.full((n, 1), jnp.inf, eta.dtype)
  padded = jnp.concatenate([-inf, eta, inf], axis=1)
  a = jnp.take_along_axis(padded, (y + 1)[:, None], axis=1)[:, 0]
  b = jnp.take_along_axis(padded, y[:, None], axis=1)[:, 0]
  gap = a - b
  used = weights > 0
  ok = (gap > 0) & used
  a = jnp.where(ok, a, 1.0)
  b = jnp.where(ok, b, 0.0)
  gap = jnp.where(ok, gap, 1.0)
  log_p = jax.nn.log_sigmoid(a) + jax.nn.log_sigmoid(-b) + jnp.log(-jnp.expm1(-gap))
  return jnp.where(ok, log_p, jnp.where(used, -jnp.inf, 0.0))


def _smooth(params, problem: PrestoProblem) -> jax.Array:
  intercepts, psi = params
  eta = cumulative_logits(intercepts, jnp.cumsum(psi, axis=1), problem.x)
  log_p = _class_log_probs(eta, problem.y, problem.weights)
  return -jnp.sum(problem.weights * log_p) / jnp.sum(problem.weights)


def _penalty(psi, problem: PrestoProblem) -> jax.Array:
  return problem.lam * jnp.sum(problem.penalty_factors * jnp.abs(psi))


def soft_threshold(v: jax.Array, threshold: jax.Array) -> jax.Array:
  """The proximal operator of ``threshold · |·|`` (elementwise): ``sign(v) max(|v| - threshold, 0)``."""
  # A negative threshold would push every entry away from zero instead of shrinking it.
  if not _checks.is_traced(threshold) and not (np.asarray(threshold) >= 0).all():
    raise ValueError(f"`threshold` must be >= 0 everywhere, got a minimum of {float(np.min(threshold))}.")
  return jnp.sign(v) * jnp.maximum(jnp.abs(v) - threshold, 0.0)


def prox(intercepts, psi, lam, penalty_factors, step_size):
  """Exact minimiser of ``½‖(a, ψ) - (intercepts, psi)‖² + step_size · λ Σ w_{jk}|ψ_{jk}|``.

  The intercepts are not penalised (returned unchanged); ψ is soft-thresholded at ``step_size · λ · w``.
  """
  _check_lam(lam)
  _checks.check_positive(step_size, "step_size")
  return intercepts, soft_threshold(psi, step_size * lam * penalty_factors)


# ----------------------------------------------------------------------------------------------------------------
# The solver: init / step / run.


def make_problem(
  x: jax.Array,
  y: jax.Array,
  *,
  lam,
  penalize_first: bool = True,
  num_classes: int | None = None,
  weights: jax.Array | None = None,
  standardize: bool = True,
  tol: float | None = None,
) -> PrestoProblem:
  """Builds the penalised problem: standardises ``x`` (weighted) and sets the penalty factors."""
  x, y, num_classes = _check_xy(x, y, num_classes)
  _check_lam(lam)
  dtype = x.dtype
  w = _check_weights(weights, x.shape[0], dtype)
  if standardize:
    total = jnp.sum(w)
    mean = w @ x / total
    std = jnp.sqrt(w @ (x - mean) ** 2 / total)
    scale = jnp.where(std > 0, std, 1.0)
  else:
    mean, scale = jnp.zeros(x.shape[1], dtype), jnp.ones(x.shape[1], dtype)
  factors = jnp.ones((x.shape[1], num_classes - 1), dtype)
  if not penalize_first:
    factors = factors.at[:, 0].set(0.0)
  return PrestoProblem(
    x=(x - mean) / scale,
    y=y,
    weights=w,
    lam=jnp.asarray(lam, dtype),
    penalty_factors=factors,
    mean=mean,
    scale=scale,
    tol=jnp.asarray(_default_tol(dtype) if tol is None else tol, dtype),
  )


def null_intercepts(problem: PrestoProblem) -> jax.Array:
  """``(K-1,)`` intercepts of the intercept-only fit, smoothed so they are strictly increasing.

  ``α_k = logit((Σ_{l≤k} n_l + ½(k+1)) / (n + ½K))`` with weighted class counts n_l (a start inside the domain).
  """
  _check_problem_state(problem)
  k1 = problem.penalty_factors.shape[1]
  counts = jax.ops.segment_sum(problem.weights, problem.y, num_segments=k1 + 1)
  cum = (jnp.cumsum(counts)[:-1] + 0.5 * jnp.arange(1, k1 + 1)) / (jnp.sum(counts) + 0.5 * (k1 + 1))
  return jnp.log(cum) - jnp.log1p(-cum)


def init(problem: PrestoProblem, intercepts: jax.Array | None = None, psi: jax.Array | None = None) -> PrestoState:
  """FISTA state at a start (default: the smoothed intercept-only fit, ψ = 0); a warm start must be feasible."""
  _check_problem_state(problem)
  p, k1 = problem.penalty_factors.shape
  dtype = problem.x.dtype
  intercepts = null_intercepts(problem) if intercepts is None else jnp.asarray(intercepts, dtype)
  psi = jnp.zeros((p, k1), dtype) if psi is None else jnp.asarray(psi, dtype)
  if intercepts.shape != (k1,):
    raise ValueError(f"`intercepts` must have shape (K-1,) = ({k1},), got {intercepts.shape}.")
  if psi.shape != (p, k1):
    raise ValueError(f"`psi` must have shape (p, K-1) = ({p}, {k1}), got {psi.shape}.")
  objective = _smooth((intercepts, psi), problem) + _penalty(psi, problem)
  return PrestoState(
    intercepts=intercepts,
    psi=psi,
    prev_intercepts=intercepts,
    prev_psi=psi,
    momentum=jnp.asarray(1.0, dtype),
    lipschitz=jnp.asarray(1.0, dtype),
    objective=objective,
    iteration=jnp.asarray(0, jnp.int32),
    converged=jnp.asarray(False),
  )


_MAX_BACKTRACKS = 60


def step(problem: PrestoProblem, state: PrestoState) -> PrestoState:
  """One FISTA iteration with backtracking and a function-value restart."""
  _check_problem_state(problem, state)
  t_next = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * state.momentum**2))
  coeff = (state.momentum - 1.0) / t_next
  x = (state.intercepts, state.psi)
  y = jax.tree.map(lambda a, b: a + coeff * (a - b), x, (state.prev_intercepts, state.prev_psi))
  # A momentum point outside the likelihood's domain: fall back on the current iterate (a plain prox step).
  outside = ~jnp.isfinite(_smooth(y, problem))
  y = jax.tree.map(lambda a, b: jnp.where(outside, a, b), x, y)
  f_y, g = jax.value_and_grad(_smooth)(y, problem)
  slack = 10 * jnp.finfo(f_y.dtype).eps * jnp.abs(f_y)

  def trial(lipschitz):
    z = prox(y[0] - g[0] / lipschitz, y[1] - g[1] / lipschitz, problem.lam, problem.penalty_factors, 1.0 / lipschitz)
    d = jax.tree.map(jnp.subtract, z, y)
    model = f_y + sum(jnp.sum(gi * di) for gi, di in zip(g, d)) + 0.5 * lipschitz * sum(jnp.sum(di**2) for di in d)
    f_z = _smooth(z, problem)
    return z, f_z, f_z <= model + slack

  def body(carry):
    lipschitz = 2.0 * carry[0]
    return (lipschitz, carry[1] + 1, *trial(lipschitz))

  lipschitz0 = 0.8 * state.lipschitz
  carry = jax.lax.while_loop(lambda c: (~c[4]) & (c[1] < _MAX_BACKTRACKS), body, (lipschitz0, 0, *trial(lipschitz0)))
  lipschitz, _, z, f_z, _ = carry
  objective_z = f_z + _penalty(z[1], problem)
  accept = objective_z <= state.objective
  plain = outside | (coeff == 0)
  stall = 10 * jnp.finfo(f_y.dtype).eps * jnp.abs(state.objective)
  gap = lipschitz * jnp.maximum(jnp.max(jnp.abs(z[0] - y[0])), jnp.max(jnp.abs(z[1] - y[1])))
  pick = lambda new, old: jnp.where(accept, new, old)
  return PrestoState(
    intercepts=pick(z[0], x[0]),
    psi=pick(z[1], x[1]),
    prev_intercepts=x[0],
    prev_psi=x[1],
    momentum=jnp.where(accept & ~outside, t_next, 1.0).astype(state.momentum.dtype),
    lipschitz=lipschitz,
    objective=pick(objective_z, state.objective),
    iteration=state.iteration + 1,
    # Stationary, or stalled at machine precision: a plain proximal-gradient step (no momentum) that cannot lower
    # the objective by more than rounding.
    converged=(accept & (gap <= problem.tol)) | (plain & (state.objective - objective_z <= stall)),
  )


def run(problem: PrestoProblem, state: PrestoState, num_iterations: int) -> PrestoState:
  """Iterates :func:`step` until converged or ``num_iterations`` steps in all (``lax.while_loop``)."""
  _check_problem_state(problem, state)
  if not _checks.is_traced(num_iterations):
    _checks.check_int(num_iterations, "num_iterations", 0)
  return jax.lax.while_loop(
    lambda s: (~s.converged) & (s.iteration < num_iterations), lambda s: step(problem, s), state
  )


def to_model(problem: PrestoProblem, state: PrestoState) -> PrestoModel:
  """The fit on the original feature scale: β_k = (Σ_{l≤k} ψ_l) / scale, α_k = α̃_k - meanᵀβ_k."""
  _check_problem_state(problem, state)
  differences = state.psi / problem.scale[:, None]
  return PrestoModel(
    intercepts=state.intercepts - problem.mean @ jnp.cumsum(differences, axis=1),
    differences=differences,
    lam=problem.lam,
    objective=state.objective,
    num_iterations=state.iteration,
    converged=state.converged,
  )


# ----------------------------------------------------------------------------------------------------------------
# Public fits.


def fit(
  x: jax.Array,
  y: jax.Array,
  *,
  lam,
  penalize_first: bool = True,
  num_classes: int | None = None,
  weights: jax.Array | None = None,
  standardize: bool = True,
  num_iterations: int = 5000,
  tol: float | None = None,
) -> PrestoModel:
  """PRESTO at one λ (arXiv 2305.18700, §2): the lasso on ψ_0 = β_0 and ψ_k = β_k - β_{k-1}, by FISTA.

  Args:
    x: ``(n, p)`` features.
    y: ``(n,)`` integer labels in ``0..K-1`` (K-1 is the rare class in the paper's use).
    lam: λ >= 0 (a scalar; may be traced).
    penalize_first: penalise ψ_0 = β_0 too (the paper's PRESTO); ``False`` leaves it free, so a very large λ
      gives the proportional-odds fit.
    num_classes: K; inferred from ``y`` when ``None`` (``y`` must then be concrete).
    weights: optional ``(n,)`` observation weights (0 drops a point).
    standardize: apply the penalty to standardised features (``ordinalNet``'s default).
    num_iterations: the most FISTA iterations.
    tol: stopping tolerance on the gradient mapping (default 1e-5 in float32, 1e-9 in float64).

  Returns:
    A :class:`PrestoModel` (original feature scale); check ``converged``.

  >>> import jax, jax.numpy as jnp
  >>> from toolkit.stats import presto
  >>> x = jax.random.normal(jax.random.key(0), (300, 2))
  >>> y = (x[:, 0] + jax.random.logistic(jax.random.key(1), (300,)) > 0).astype(jnp.int32)
  >>> print(jnp.abs(presto.fit(x, y, lam=1e3).coef).ravel().tolist())  # λ ≫ λ_max: intercept-only
  [0.0, 0.0]
  """
  _checks.check_int(num_iterations, "num_iterations", 1)
  x, y, num_classes = _check_xy(x, y, num_classes)
  _check_lam(lam)
  weights = _check_weights(weights, x.shape[0], x.dtype)
  tol = _default_tol(x.dtype) if tol is None else tol
  return _fit_jit(x, y, weights, lam, tol, num_classes, penalize_first, standardize, num_iterations)


@jax.jit(static_argnums=(5, 6, 7, 8))
def _fit_jit(x, y, weights, lam, tol, num_classes, penalize_first, standardize, num_iterations):
  problem = make_problem(
    x, y, lam=lam, penalize_first=penalize_first, num_classes=num_classes, weights=weights,
    standardize=standardize, tol=tol,
  )  # fmt: skip
  return to_model(problem, run(problem, init(problem), num_iterations))


def fit_proportional_odds(x, y, *, num_classes: int | None = None, **kwargs) -> PrestoModel:
  """The proportional-odds MLE (β_k = β for all k): PRESTO with ψ_0 free and λ → ∞ on the differences."""
  return fit(x, y, lam=_HUGE_LAMBDA, penalize_first=False, num_classes=num_classes, **kwargs)


def fit_logistic(x, y, **kwargs) -> PrestoModel:
  """Unpenalised logistic regression of binary ``y`` (the K = 2 cumulative-logit model, λ = 0).

  ``P(y = 1 | x) = σ(-α - xᵀβ)``; :func:`predict_proba` ``[:, 1]`` gives it.
  """
  return fit(x, y, lam=0.0, num_classes=2, **kwargs)


def lambda_max(
  x, y, *, penalize_first: bool = True, num_classes: int | None = None, weights=None, standardize: bool = True,
  num_iterations: int = 5000, tol: float | None = None,
) -> jax.Array:  # fmt: skip
  """The smallest λ at which every penalised coefficient is zero: ``max |∂f/∂ψ_{jk}|`` over penalised entries,
  at the fit where they are all zero (the intercept-only fit, or the proportional-odds one if ψ_0 is free)."""
  _checks.check_int(num_iterations, "num_iterations", 1)
  x, y, num_classes = _check_xy(x, y, num_classes)
  weights = _check_weights(weights, x.shape[0], x.dtype)
  tol = _default_tol(x.dtype) if tol is None else tol
  return _lambda_max_jit(x, y, weights, tol, num_classes, penalize_first, standardize, num_iterations)


@jax.jit(static_argnums=(4, 5, 6, 7))
def _lambda_max_jit(x, y, weights, tol, num_classes, penalize_first, standardize, num_iterations):
  problem = make_problem(
    x, y, lam=_HUGE_LAMBDA, penalize_first=penalize_first, num_classes=num_classes, weights=weights,
    standardize=standardize, tol=tol,
  )  # fmt: skip
  return _lambda_max(problem, num_iterations)


def _lambda_max(problem: PrestoProblem, num_iterations: int) -> jax.Array:
  state = run(problem, init(problem), num_iterations)
  grad_psi = jax.grad(_smooth)((state.intercepts, state.psi), problem)[1]
  return jnp.max(jnp.where(problem.penalty_factors > 0, jnp.abs(grad_psi), 0.0))


def _path(problem: PrestoProblem, lambdas: jax.Array, num_iterations: int) -> PrestoModel:
  """Fits along decreasing ``lambdas`` with warm starts (``lax.scan``)."""

  def body(state, lam):
    prob = problem._replace(lam=lam)
    start = init(prob, state.intercepts, state.psi)
    state = run(prob, start, num_iterations)
    return state, to_model(prob, state)

  _, models = jax.lax.scan(body, init(problem), lambdas)
  return models


def lambda_path(lam_max, num_lambdas: int = 20, lambda_min_ratio: float = 0.01) -> jax.Array:
  """``num_lambdas`` values from ``lam_max`` down to ``lambda_min_ratio · lam_max``, equally spaced in log."""
  _checks.check_int(num_lambdas, "num_lambdas", 1)
  if not 0 < lambda_min_ratio <= 1:
    raise ValueError(f"`lambda_min_ratio` must be in (0, 1], got {lambda_min_ratio!r}.")
  return lam_max * jnp.logspace(0.0, math.log10(lambda_min_ratio), num_lambdas, dtype=jnp.asarray(lam_max).dtype)


def fit_path(
  x, y, *, lambdas=None, num_lambdas: int = 20, lambda_min_ratio: float = 0.01, penalize_first: bool = True,
  num_classes: int | None = None, weights=None, standardize: bool = True, num_iterations: int = 5000,
  tol: float | None = None,
) -> PrestoModel:  # fmt: skip
  """PRESTO along a decreasing λ path with warm starts; a :class:`PrestoModel` with a leading ``(L,)`` axis.

  With ``lambdas=None`` the path is :func:`lambda_path` from :func:`lambda_max`.

  >>> import jax, jax.numpy as jnp
  >>> from toolkit.stats import presto
  >>> x = jax.random.normal(jax.random.key(0), (300, 3))
  >>> y = jnp.digitize(x @ jnp.array([1.0, -1.0, 0.0]) + jax.random.logistic(jax.random.key(1), (300,)),
  ...                  jnp.array([-1.0, 1.0]))
  >>> path = presto.fit_path(x, y, num_lambdas=5)
  >>> print(path.coef.shape, [int(jnp.sum(c != 0)) for c in path.differences])
  (5, 3, 2) [0, 3, 3, 6, 6]
  """
  _checks.check_int(num_iterations, "num_iterations", 1)
  x, y, num_classes = _check_xy(x, y, num_classes)
  weights = _check_weights(weights, x.shape[0], x.dtype)
  tol = _default_tol(x.dtype) if tol is None else tol
  given = lambdas is not None
  if lambdas is None:
    lam_max = _lambda_max_jit(x, y, weights, tol, num_classes, penalize_first, standardize, num_iterations)
    lambdas = lambda_path(lam_max, num_lambdas, lambda_min_ratio)
  lambdas = jnp.asarray(lambdas, x.dtype)
  if lambdas.ndim != 1:
    raise ValueError(f"`lambdas` must be a 1-D decreasing array, got shape {lambdas.shape}.")
  # A negative λ soft-thresholds away from zero (a wrong fit, not an error); concrete values are read with numpy.
  if given and not _checks.is_traced(lambdas):
    concrete = np.asarray(lambdas)
    if not (np.isfinite(concrete) & (concrete >= 0)).all():
      raise ValueError(f"`lambdas` must be finite and >= 0, got {concrete.tolist()}.")
  return _path_jit(x, y, weights, lambdas, tol, num_classes, penalize_first, standardize, num_iterations)


@jax.jit(static_argnums=(5, 6, 7, 8))
def _path_jit(x, y, weights, lambdas, tol, num_classes, penalize_first, standardize, num_iterations):
  problem = make_problem(
    x, y, lam=0.0, penalize_first=penalize_first, num_classes=num_classes, weights=weights,
    standardize=standardize, tol=tol,
  )  # fmt: skip
  return _path(problem, lambdas, num_iterations)


# ----------------------------------------------------------------------------------------------------------------
# Prediction and cross-validation.


def predict_cumulative(model: PrestoModel, x: jax.Array) -> jax.Array:
  """``(n, K-1)`` fitted cumulative probabilities ``σ(α_k + xᵀβ_k)``, as fitted (they may cross)."""
  return jax.nn.sigmoid(cumulative_logits(model.intercepts, model.coef, x))


def crossing(model: PrestoModel, x: jax.Array) -> jax.Array:
  """``(n,)`` True where the fitted cumulative probabilities decrease somewhere (a negative class probability)."""
  eta = cumulative_logits(model.intercepts, model.coef, x)
  return jnp.any(jnp.diff(eta, axis=-1) < 0, axis=-1)


def predict_proba(model: PrestoModel, x: jax.Array) -> jax.Array:
  """``(n, K)`` class probabilities ``P(y = k | x)``.

  Where the cumulative probabilities cross (see :func:`crossing`) they are sorted first (monotone rearrangement),
  so the output is always a probability vector; elsewhere it is exactly ``σ(η_k) - σ(η_{k-1})``.

  >>> import jax.numpy as jnp
  >>> from toolkit.stats import presto
  >>> m = presto.PrestoModel(jnp.array([0.0, 2.0]), jnp.array([[1.0, -2.0]]), 0.0, 0.0, 0, True)  # β = (1, -1)
  >>> p = presto.predict_proba(m, jnp.array([[0.0], [3.0]]))  # row 2 crosses: σ(3) > σ(-1)
  >>> print([[round(float(v), 3) for v in row] for row in p], presto.crossing(m, jnp.array([[3.0]])).tolist())
  [[0.5, 0.381, 0.119], [0.269, 0.684, 0.047]] [True]
  """
  cum = jnp.sort(predict_cumulative(model, x), axis=-1)  # cumulative_logits checks x
  n = cum.shape[0]
  edges = jnp.concatenate([jnp.zeros((n, 1), cum.dtype), cum, jnp.ones((n, 1), cum.dtype)], axis=-1)
  return jnp.diff(edges, axis=-1)


def brier_score(probs: jax.Array, y: jax.Array, weights: jax.Array | None = None) -> jax.Array:
  """(Weighted) mean over points of ``Σ_k (p_k - 1{y = k})²``, the multi-class Brier score."""
  probs, y = jnp.asarray(probs), jnp.asarray(y)
  if probs.ndim != 2:
    raise ValueError(f"`probs` must have shape (n, K), got {probs.shape}.")
  if y.shape != probs.shape[:1]:
    raise ValueError(f"`y` must have shape (n,) = ({probs.shape[0]},), got {y.shape}.")
  # one_hot of a non-integer label, or of one outside 0..K-1, is silently all zeros.
  if not jnp.issubdtype(y.dtype, jnp.integer):
    raise TypeError(f"`y` must hold integer labels 0..K-1, got dtype {y.dtype}.")
  _checks.check_ids(y, probs.shape[1], "y", "the classes")
  if weights is not None:
    weights = jnp.asarray(weights)
    if weights.shape != y.shape:
      raise ValueError(f"`weights` must have shape (n,) = ({y.shape[0]},), got {weights.shape}.")
    _checks.check_weight_values(weights)
  onehot = jax.nn.one_hot(y, probs.shape[-1], dtype=probs.dtype)
  per_point = jnp.sum((probs - onehot) ** 2, axis=-1)
  if weights is None:
    return jnp.mean(per_point)
  return jnp.sum(weights * per_point) / jnp.sum(weights)


def fold_ids(key: jax.Array, num_samples: int, num_folds: int) -> jax.Array:
  """``(n,)`` fold of each point: a random permutation cut into ``num_folds`` near-equal parts."""
  _checks.check_int(num_samples, "num_samples", 1)
  _checks.check_int(num_folds, "num_folds", 1)
  return (
    jnp.zeros(num_samples, jnp.int32)
    .at[jax.random.permutation(key, num_samples)]
    .set(jnp.arange(num_samples, dtype=jnp.int32) % num_folds)
  )


def cross_validate(
  key: jax.Array,
  x: jax.Array,
  y: jax.Array,
  *,
  num_folds: int = 5,
  num_lambdas: int = 20,
  lambda_min_ratio: float = 0.01,
  penalize_first: bool = True,
  num_classes: int | None = None,
  standardize: bool = True,
  num_iterations: int = 5000,
  tol: float | None = None,
) -> PrestoCV:
  """PRESTO with λ chosen by ``num_folds``-fold cross-validation of the Brier score (the authors' tuning).

  The λ path comes from the full data; each fold's path and the full-data path are lanes of one ``vmap``
  (held-out points get weight 0). λ* is the largest λ with the smallest mean held-out Brier score; the model is
  the full-data fit at λ* (from the warm-started full-data path).

  >>> import jax, jax.numpy as jnp
  >>> from toolkit.stats import presto
  >>> x = jax.random.normal(jax.random.key(0), (300, 3))
  >>> y = jnp.digitize(x @ jnp.array([1.0, -1.0, 0.0]) + jax.random.logistic(jax.random.key(1), (300,)),
  ...                  jnp.array([-1.0, 1.0]))
  >>> cv = presto.cross_validate(jax.random.key(2), x, y, num_lambdas=5)
  >>> print(cv.fold_brier.shape, bool(cv.best_lambda == cv.lambdas[cv.best_index]))
  (5, 5) True
  """
  _checks.check_int(num_folds, "num_folds", 2)
  _checks.check_int(num_iterations, "num_iterations", 1)
  _checks.check_int(num_lambdas, "num_lambdas", 1)
  if not 0 < lambda_min_ratio <= 1:
    raise ValueError(f"`lambda_min_ratio` must be in (0, 1], got {lambda_min_ratio!r}.")
  x, y, num_classes = _check_xy(x, y, num_classes)
  if num_folds > x.shape[0]:
    raise ValueError(f"`num_folds` must be <= n = {x.shape[0]}, got {num_folds}.")
  tol = _default_tol(x.dtype) if tol is None else tol
  return _cv_jit(
    key, x, y, tol, num_folds, num_lambdas, float(lambda_min_ratio), num_classes, penalize_first, standardize,
    num_iterations,
  )  # fmt: skip


@jax.jit(static_argnums=tuple(range(4, 11)))
def _cv_jit(
  key, x, y, tol, num_folds, num_lambdas, lambda_min_ratio, num_classes, penalize_first, standardize, num_iterations
):
  n = x.shape[0]
  problem = make_problem(
    x, y, lam=_HUGE_LAMBDA, penalize_first=penalize_first, num_classes=num_classes, standardize=standardize, tol=tol
  )
  lambdas = lambda_path(_lambda_max(problem, num_iterations), num_lambdas, lambda_min_ratio)
  folds = fold_ids(key, n, num_folds)
  # Lane f < num_folds trains without fold f; the last lane is the full data.
  train_weights = jnp.concatenate(
    [(folds[None, :] != jnp.arange(num_folds)[:, None]), jnp.ones((1, n), bool)], axis=0
  ).astype(x.dtype)

  def lane(w):
    prob = make_problem(
      x, y, lam=0.0, penalize_first=penalize_first, num_classes=num_classes, weights=w, standardize=standardize,
      tol=tol,
    )  # fmt: skip
    return _path(prob, lambdas, num_iterations)

  paths = jax.vmap(lane)(train_weights)
  held_out = 1.0 - train_weights[:num_folds]

  def fold_scores(f):
    model_f = jax.tree.map(lambda a: a[f], paths)
    probs = jax.vmap(predict_proba, in_axes=(0, None))(model_f, x)  # (L, n, K)
    return jax.vmap(brier_score, in_axes=(0, None, None))(probs, y, held_out[f])

  fold_brier = jax.vmap(fold_scores)(jnp.arange(num_folds))
  mean_brier = jnp.mean(fold_brier, axis=0)
  best = jnp.argmin(mean_brier)  # first minimum = largest λ (the path decreases)
  full = jax.tree.map(lambda a: a[num_folds], paths)
  return PrestoCV(
    lambdas=lambdas,
    fold_brier=fold_brier,
    mean_brier=mean_brier,
    best_index=best,
    best_lambda=lambdas[best],
    path=full,
    model=jax.tree.map(lambda a: a[best], full),
  )
