r"""Low-rank matrix completion by robust alternating minimisation, with exact or approximate half-steps.

Gu, Song, Yin, Zhang. "Low Rank Matrix Completion via Robust Alternating Minimization in Nearly Linear Time",
ICLR 2024, arXiv 2302.11068.

Problem: recover a rank-k matrix M ∈ R^{m×n} from the entries in Ω ⊂ [m]×[n], given as index lists
``(rows, cols, values)``. Alternating minimisation (Jain, Netrapalli, Sanghavi, STOC 2013, "JNS13", whose
Algorithm 2 the paper builds on) keeps X = U Vᵀ and alternates two half-steps, each a least-squares problem on
the observed entries only:

  V ← argmin_V Σ_{(i,j)∈Ω} (u_iᵀ v_j - M_ij)²,   U ← argmin_U Σ_{(i,j)∈Ω} (u_iᵀ v_j - M_ij)².

Each separates into independent k-dimensional regressions, one per column j (design: the rows u_i, i ∈ Ω_j) or
one per row i: the paper's "weighted multiple-response regression" (its Sec. 1 and 4). JNS13 require them solved
exactly, at cost O(|Ω|k² + nk³) per half-step (Gram matrices, then n Cholesky factorisations). The paper's point
(abstract; Sec. 1) is that the alternating framework is *robust to approximate half-steps*: its subspace-approaching
induction and its perturbation theory for incoherence carry through when each regression is solved only to a
small error, so a fast high-accuracy iterative solver gives total time Õ(|Ω|k) instead of Õ(|Ω|k²), with the
sample complexity of JNS13.

What this module implements, and what is our choice (the paper's full text was not available to us when writing
it: the items below marked *ours* follow JNS13's structure as we recall it, not the paper's text):

* :func:`init` — the clipped top-k SVD initialisation of JNS13 (Algorithm 2, steps 2–3): the top-k left singular
  subspace of P_Ω(M) (the 1/p scale of the paper does not change it), by randomised subspace iteration on the
  index lists (O(|Ω|k) per iteration; *ours*, instead of a dense SVD), then entries of magnitude
  > 2μ√(k/m) set to zero (*elementwise*, as we recall JNS13; μ = ``incoherence``) and an orthonormalisation (QR).
* :func:`step` — one outer iteration: a V half-step, QR of V, a U half-step, QR of U (QR after every half-step
  as in the paper's framework; it does not change X). Both half-steps are done by a ``solver``
  (:data:`HalfStepSolver`): :func:`solve_exact` (Gram matrices by segment sums, then batched Cholesky with
  ``jax.scipy.linalg``), or :func:`solve_cg` — a few preconditioned conjugate-gradient steps per regression, on
  the observed entries only (each a pass of gathers and segment sums over Ω: O(|Ω|k)). *Ours*: the paper
  preconditions each regression with a sketch (QR of a subsampled design) and runs a high-accuracy solver to a
  fixed error ε₀; we use the diagonal (Jacobi) preconditioner, one segment sum (incoherence makes each column's
  Gram matrix close to a multiple of I), and a fixed number of CG steps *warm-started* from the previous
  factors (re-expressed after the QR: V₀ = V R_Uᵀ), so the solve error shrinks with the outer error.
* :func:`complete` — :func:`init` followed by a ``lax.scan`` of :func:`step`.
* Not implemented (*ours*): the sample splitting of Ω into 2T+1 disjoint parts that the proofs need and practice
  drops; duplicate entries simply count twice.

Costs per half-step (n regressions of size k over |Ω| entries): exact O(|Ω|k² + nk³); CG O(|Ω|k·iters + nk).

The synthetic problems (random incoherent low-rank matrices, uniform masks) and the error metrics are in
``toolkit.linalg.completion_data``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import jax.scipy as jsp
import numpy as np

from toolkit import _checks

# Floats per chunk of the folded segment sums: (entries per chunk) × k for the O(|Ω|k) passes, × k² for the
# Gram matrices of solve_exact (measured on a 2-core CPU: larger chunks were up to 10× slower, from memory traffic).
_CHUNK_FLOATS = 1 << 16
_GRAM_CHUNK_FLOATS = 1 << 20


class Entries(NamedTuple):
  """The observed entries seen from one side: regression ``target[e]`` has the design row ``design[e]``.

  For the V half-step the targets are the columns and the design rows are rows of U; for the U half-step the
  reverse. ``target`` is sorted ascending (so segment sums can say so).

  Attributes:
    target: ``(|Ω|,)`` int32, sorted: the regression (column for V, row for U) each entry belongs to.
    design: ``(|Ω|,)`` int32: the row of the fixed factor that is its regressor.
    value: ``(|Ω|,)`` the observed value M_ij.
  """

  target: jax.Array
  design: jax.Array
  value: jax.Array


class Observations(NamedTuple):
  """Ω seen from both sides (:func:`prepare`): ``by_row`` for the U half-step, ``by_col`` for the V half-step."""

  by_row: Entries
  by_col: Entries


class AltMinState(NamedTuple):
  """The iterate X = u vᵀ of alternating minimisation.

  Attributes:
    u: ``(m, k)`` orthonormal left factor.
    v: ``(n, k)`` right factor (carries the scale: X = u vᵀ).
  """

  u: jax.Array
  v: jax.Array


class AltMinStepInfo(NamedTuple):
  """What :func:`step` reports.

  Attributes:
    residual: relative residual on Ω after the step, ‖P_Ω(u vᵀ - M)‖_F / ‖P_Ω(M)‖_F.
  """

  residual: jax.Array


class CompletionResult(NamedTuple):
  """Output of :func:`complete`.

  Attributes:
    u: ``(m, k)`` orthonormal left factor.
    v: ``(n, k)`` right factor; ``u @ v.T`` is the completed matrix.
    residuals: ``(num_iterations,)`` relative residual on Ω after each outer iteration.
    init_u: ``(m, k)`` the clipped top-k SVD initialisation.
  """

  u: jax.Array
  v: jax.Array
  residuals: jax.Array
  init_u: jax.Array


class HalfStepSolver(Protocol):
  """Solves the batch of regressions of one half-step.

  ``solver(key, design, entries, init) -> solution`` with ``design`` the ``(p, k)`` fixed factor, ``entries`` the
  :class:`Entries` of that side and ``init`` the ``(q, k)`` warm start (q regressions); returns ``(q, k)``, row t
  ≈ argmin_x Σ_{e: target[e] = t} (design[design[e]]ᵀ x - value[e])². A target with no entry must give zeros.
  """

  def __call__(self, key: jax.Array, design: jax.Array, entries: Entries, init: jax.Array) -> jax.Array: ...


# ----------------------------------------------------------------------------------------------------------------
# Input checks and the two sorted views of Ω.


def _check_shape(shape: Any) -> tuple[int, int]:
  if (
    not isinstance(shape, (tuple, list))
    or len(shape) != 2
    or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1 for s in shape)
  ):
    raise ValueError(f"`shape` must be a pair of Python ints (m, n) >= 1, got {shape!r}.")
  return int(shape[0]), int(shape[1])


def _check_rank(rank: Any, m: int, n: int) -> int:
  if not isinstance(rank, (int, np.integer)) or isinstance(rank, bool) or not 1 <= rank <= min(m, n):
    raise ValueError(f"`rank` must be a Python int with 1 <= rank <= min(shape) = {min(m, n)}, got {rank!r}.")
  return int(rank)


def _check_index(idx: Any, name: str, size: int) -> jax.Array:
  idx = jnp.asarray(idx)
  if idx.ndim != 1:
    raise ValueError(f"`{name}` must be a 1-D array of indices, got shape {idx.shape}.")
  if not jnp.issubdtype(idx.dtype, jnp.integer):
    raise TypeError(f"`{name}` must hold integers, got dtype {idx.dtype}.")
  _checks.check_ids(idx, size, name)
  return idx.astype(jnp.int32)


def _check_observations(observations: Any, m: int, n: int, where: str) -> None:
  """``observations`` must come from :func:`prepare` for an (m, n) matrix; ``where`` names what fixes (m, n)."""
  if not isinstance(observations, Observations):
    raise TypeError(f"`observations` must be an Observations (from prepare), got {type(observations).__name__}.")
  # Prepared for a different (m, n): out-of-range indices would be dropped or clamped silently downstream.
  for entries, axis, size in ((observations.by_row, "rows", m), (observations.by_col, "columns", n)):
    if not _checks.is_traced(entries.target) and entries.target.size:
      top = int(np.asarray(entries.target).max())
      if top >= size:
        raise ValueError(
          f"`observations` index {axis} up to {top}, outside {where} = {(m, n)}: prepared for another shape."
        )


def _check_half_step(design: Any, entries: Any, init: Any = None, num_targets: int | None = None) -> int:
  """The arguments of a :data:`HalfStepSolver`; returns the number of regressions."""
  if jnp.ndim(design) != 2:
    raise ValueError(f"`design` must be a (p, k) factor, got shape {jnp.shape(design)}.")
  if not isinstance(entries, Entries) or not (
    jnp.ndim(entries.target) == 1 and jnp.shape(entries.design) == jnp.shape(entries.value) == jnp.shape(entries.target)
  ):
    raise ValueError("`entries` must be an Entries of three 1-D arrays of one length (from prepare).")
  if init is None:
    num_targets = _checks.check_int(num_targets, "num_targets", 1)
  elif jnp.ndim(init) != 2 or init.shape[0] < 1 or init.shape[1] != design.shape[1]:
    raise ValueError(f"`init` must be (q >= 1, k) with k = {design.shape[1]} like `design`, got {jnp.shape(init)}.")
  else:
    num_targets = init.shape[0]
  # An out-of-range design row would be clamped by the gather, an out-of-range target dropped by the scatter.
  _checks.check_ids(entries.design, design.shape[0], "entries.design", "the rows of `design`")
  _checks.check_ids(entries.target, num_targets, "entries.target", "the regressions")
  return num_targets


def prepare(rows: jax.Array, cols: jax.Array, values: jax.Array, shape: tuple[int, int]) -> Observations:
  """Checks the observed entries and sorts them by row and by column (done once; both half-steps reuse it).

  Args:
    rows: ``(|Ω|,)`` integer row indices in [0, m).
    cols: ``(|Ω|,)`` integer column indices in [0, n).
    values: ``(|Ω|,)`` floating observed values M[rows, cols].
    shape: ``(m, n)``, Python ints.

  Returns:
    :class:`Observations`. Indices are range-checked when they are concrete; under ``jit`` they cannot be, and
    an out-of-range entry is silently dropped by the segment sums.
  """
  m, n = _check_shape(shape)
  values = jnp.asarray(values)
  if values.ndim != 1:
    raise ValueError(f"`values` must be a 1-D array, got shape {values.shape}.")
  if not jnp.issubdtype(values.dtype, jnp.floating):
    raise TypeError(f"`values` must be a floating-point array, got dtype {values.dtype}.")
  rows = _check_index(rows, "rows", m)
  cols = _check_index(cols, "cols", n)
  if not rows.shape == cols.shape == values.shape:
    raise ValueError(
      f"`rows`, `cols` and `values` must have the same length, got {rows.shape[0]}, {cols.shape[0]} and "
      f"{values.shape[0]}."
    )
  if values.shape[0] < 1:
    raise ValueError("need at least one observed entry, got none.")
  if not isinstance(values, jax.core.Tracer) and not np.isfinite(np.asarray(values)).all():
    # A NaN entry would spread through both half-steps' least squares into every factor.
    raise ValueError(f"`values` must be finite, got {int((~np.isfinite(np.asarray(values))).sum())} non-finite.")
  by_row = jnp.argsort(rows * n + cols)
  by_col = jnp.argsort(cols * m + rows)
  return Observations(
    by_row=Entries(rows[by_row], cols[by_row], values[by_row]),
    by_col=Entries(cols[by_col], rows[by_col], values[by_col]),
  )


# ----------------------------------------------------------------------------------------------------------------
# Segment sums over the index lists, folded over chunks of entries.
#
# A segment sum over all of Ω at once materialises (|Ω|, k) temporaries (the gathered design rows, their
# products), so its time is dominated by memory traffic; folding it over chunks of entries (a lax.scan whose
# carry is the (targets, ...) accumulator, updated in place by a scatter-add: a segment sum per chunk) keeps every
# temporary small and cache-resident. The work is the same, O(|Ω|k) per pass.


def _chunk(entries: Entries, size: int, num_targets: int) -> Entries:
  """``entries`` padded and reshaped to ``(num_chunks, size)``; padding entries point past the last target, so
  the scatter-adds (``mode="drop"``) ignore them."""
  num = entries.target.shape[0]
  size = int(max(1, min(num, size)))
  num_chunks = -(-num // size)
  pad = num_chunks * size - num
  return Entries(
    jnp.pad(entries.target, (0, pad), constant_values=num_targets).reshape(num_chunks, size),
    jnp.pad(entries.design, (0, pad)).reshape(num_chunks, size),
    jnp.pad(entries.value, (0, pad)).reshape(num_chunks, size),
  )


def _fold(chunks: Entries, init: Any, contribution: Callable[[Entries], Any]) -> Any:
  """Σ over chunks of ``contribution(chunk)``, each leaf a per-entry array scatter-added into ``init[target]``."""

  def body(acc, chunk):
    parts = contribution(chunk)
    acc = jax.tree.map(lambda s, x: s.at[chunk.target].add(x, mode="drop", indices_are_sorted=True), acc, parts)
    return acc, None

  return jax.lax.scan(body, init, chunks)[0]


def _sparse_matmul(entries: Entries, x: jax.Array, num_targets: int) -> jax.Array:
  """``(num_targets, l)``: A x with A[target, design] = value (A = P_Ω(M) or its transpose)."""
  chunks = _chunk(entries, _CHUNK_FLOATS // x.shape[1], num_targets)
  return _fold(chunks, jnp.zeros((num_targets, x.shape[1]), x.dtype), lambda c: c.value[:, None] * x[c.design])


def relative_residual(state: AltMinState, observations: Observations) -> jax.Array:
  """‖P_Ω(u vᵀ - M)‖_F / ‖P_Ω(M)‖_F, in O(|Ω|k)."""
  _check_state(state)
  _check_observations(observations, state.u.shape[0], state.v.shape[0], "the shape of `state`")
  e = observations.by_row
  m = state.u.shape[0]
  chunks = _chunk(e, _CHUNK_FLOATS // state.u.shape[1], m)

  def residual2(c):
    fit = jnp.sum(state.u[c.target.clip(0, m - 1)] * state.v[c.design], axis=-1)
    return (fit - c.value) ** 2

  per_row = _fold(chunks, jnp.zeros((m,), e.value.dtype), residual2)
  return jnp.sqrt(jnp.sum(per_row)) / jnp.linalg.norm(e.value)


# ----------------------------------------------------------------------------------------------------------------
# The half-step solvers.


def normal_equations(design: jax.Array, entries: Entries, num_targets: int) -> tuple[jax.Array, jax.Array]:
  """The per-target Gram matrices and right-hand sides of one half-step, by segment sums.

  G_t = Σ_{e: target[e]=t} a_e a_eᵀ and b_t = Σ_{e: target[e]=t} value_e a_e with a_e = design[design[e]]:
  O(|Ω|k²) work, folded over chunks of entries (memory O(num_targets·k²) plus one chunk).

  Returns:
    ``(num_targets, k, k)`` Gram matrices and ``(num_targets, k)`` right-hand sides.
  """
  num_targets = _check_half_step(design, entries, num_targets=num_targets)
  k = design.shape[1]
  chunks = _chunk(entries, _GRAM_CHUNK_FLOATS // (k * k), num_targets)

  def outer(c):
    a = design[c.design]
    return a[:, :, None] * a[:, None, :], c.value[:, None] * a

  init = (jnp.zeros((num_targets, k, k), design.dtype), jnp.zeros((num_targets, k), design.dtype))
  return _fold(chunks, init, outer)


def solve_exact(key: jax.Array, design: jax.Array, entries: Entries, init: jax.Array) -> jax.Array:
  """The exact half-step of JNS13: each regression solved by its normal equations (Cholesky).

  Cost O(|Ω|k² + qk³) for q regressions (the Gram matrices, then ``jax.scipy.linalg.cho_factor``/``cho_solve``).
  A relative jitter of machine epsilon times the Gram matrix's mean diagonal keeps a regression with fewer than k
  entries (a singular system) finite; a regression with no entry gives zeros.

  Args:
    key: unused (the solver is deterministic).
    design: ``(p, k)`` the fixed factor.
    entries: the :class:`Entries` of this side.
    init: ``(q, k)``: only its shape is used.

  Returns:
    ``(q, k)`` least-squares solutions.

  >>> design = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
  >>> entries = Entries(jnp.array([0, 0, 0]), jnp.array([0, 1, 2]), jnp.array([1.0, 2.0, 3.0]))
  >>> print(solve_exact(None, design, entries, jnp.zeros((1, 2))).round(4))
  [[1. 2.]]
  """
  del key
  _check_half_step(design, entries, init)
  q, k = init.shape
  gram, rhs = normal_equations(design, entries, q)
  scale = jnp.trace(gram, axis1=-2, axis2=-1) / k
  eps = jnp.finfo(gram.dtype).eps
  jitter = eps * scale + jnp.finfo(gram.dtype).tiny
  gram = gram + jitter[:, None, None] * jnp.eye(k, dtype=gram.dtype)

  def solve_one(g, b):
    return jsp.linalg.cho_solve(jsp.linalg.cho_factor(g, lower=True), b)

  return jax.vmap(solve_one)(gram, rhs)


def solve_cg(
  key: jax.Array,
  design: jax.Array,
  entries: Entries,
  init: jax.Array,
  *,
  num_iterations: int = 3,
  warm_start: bool = True,
) -> jax.Array:
  """The approximate half-step: ``num_iterations`` Jacobi-preconditioned CG steps on every regression at once.

  Regression t solves G_t x = b_t (its normal equations, never formed): each CG step applies all G_t with one
  pass over Ω (gathers of design rows and a segment sum, folded over chunks: O(|Ω|k)), with per-target step sizes, so
  it is exactly preconditioned CG run on each k-dimensional system separately (``jax.scipy.sparse.linalg.cg``
  vmapped over targets gives the same iterates; it cannot run on the index lists, as the targets have different
  numbers of entries). The preconditioner is diag(G_t) (computed in the pass that forms the first residual).
  The paper (arXiv 2302.11068, Sec. 1 and 4) uses a sketching preconditioner and a high-accuracy solver; the
  Jacobi preconditioner and the warm start are our choices (see the module docstring).

  Args:
    key: unused (the solver is deterministic).
    design: ``(p, k)`` the fixed factor.
    entries: the :class:`Entries` of this side.
    init: ``(q, k)`` warm start (the previous solution, re-expressed in the new basis).
    num_iterations: CG steps per half-step (static).
    warm_start: start from ``init`` (else from zero, a control: the solve error then does not shrink).

  Returns:
    ``(q, k)`` approximate least-squares solutions.

  >>> design = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
  >>> entries = Entries(jnp.array([0, 0, 0]), jnp.array([0, 1, 2]), jnp.array([1.0, 2.0, 3.0]))
  >>> print(solve_cg(None, design, entries, jnp.zeros((1, 2)), num_iterations=2).round(4))
  [[1. 2.]]
  """
  del key
  _checks.check_int(num_iterations, "num_iterations", 0)
  _check_half_step(design, entries, init)
  q, k = init.shape
  chunks = _chunk(entries, _CHUNK_FLOATS // k, q)

  def gram_times(x):
    def part(c):
      a = design[c.design]
      return a * jnp.sum(a * x[c.target.clip(0, q - 1)], axis=-1, keepdims=True)

    return _fold(chunks, jnp.zeros_like(x), part)

  def safe_div(num, den):
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)

  # One pass for the preconditioner diag(G_t) and the residual b_t - G_t x_0 of the start.
  x = init if warm_start else jnp.zeros_like(init)

  def diag_and_residual(c):
    a = design[c.design]
    fit = jnp.sum(a * x[c.target.clip(0, q - 1)], axis=-1)
    return a * a, a * (c.value - fit)[:, None]

  diag, r = _fold(chunks, (jnp.zeros_like(init), jnp.zeros_like(init)), diag_and_residual)
  observed = jnp.sum(diag, axis=-1, keepdims=True) > 0
  x = jnp.where(observed, x, 0.0)
  inv_diag = safe_div(1.0, diag)
  z = inv_diag * r
  p = z
  rz = jnp.sum(r * z, axis=-1)

  def body(_, carry):
    x, r, p, rz = carry
    gp = gram_times(p)
    alpha = safe_div(rz, jnp.sum(p * gp, axis=-1))[:, None]
    x = x + alpha * p
    r = r - alpha * gp
    z = inv_diag * r
    rz_new = jnp.sum(r * z, axis=-1)
    p = z + safe_div(rz_new, rz)[:, None] * p
    return x, r, p, rz_new

  x, *_ = jax.lax.fori_loop(0, num_iterations, body, (x, r, p, rz))
  return x


@dataclasses.dataclass(frozen=True)
class CGSolver:
  """:func:`solve_cg` with its options bound: a :data:`HalfStepSolver` (hashable, so ``jit`` caches on it).

  Attributes:
    num_iterations: CG steps per half-step.
    warm_start: start from the previous factors (else from zero).
  """

  num_iterations: int = 3
  warm_start: bool = True

  def __post_init__(self):
    _checks.check_int(self.num_iterations, "num_iterations", 0)

  def __call__(self, key: jax.Array, design: jax.Array, entries: Entries, init: jax.Array) -> jax.Array:
    return solve_cg(key, design, entries, init, num_iterations=self.num_iterations, warm_start=self.warm_start)


def _resolve_solver(solver: Any, num_cg_iterations: int, warm_start: bool) -> HalfStepSolver:
  # The two names are shorthands for the module's solvers; any HalfStepSolver callable plugs in as well.
  if callable(solver):
    return solver
  if solver == "exact":
    return solve_exact
  if solver == "approx":
    return CGSolver(num_cg_iterations, warm_start)
  raise ValueError(f"`solver` must be 'approx', 'exact' or a HalfStepSolver callable, got {solver!r}.")


# ----------------------------------------------------------------------------------------------------------------
# Initialisation, one step, the whole run.


def _check_state(state: Any) -> None:
  if not isinstance(state, AltMinState):
    raise TypeError(f"`state` must be an AltMinState, got {type(state).__name__}.")
  if jnp.ndim(state.u) != 2 or jnp.ndim(state.v) != 2 or jnp.shape(state.u)[1] != jnp.shape(state.v)[1]:
    raise ValueError(
      f"`state` must hold factors u (m, k) and v (n, k) of one rank k, got {jnp.shape(state.u)} and "
      f"{jnp.shape(state.v)}."
    )


def _qr(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  return jnp.linalg.qr(x, mode="reduced")


def top_singular_subspace(
  key: jax.Array,
  observations: Observations,
  shape: tuple[int, int],
  rank: int,
  *,
  num_power_iterations: int = 4,
  oversampling: int = 10,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Top-``rank`` SVD of the sparse matrix P_Ω(M) by randomised subspace iteration on the index lists.

  Halko, Martinsson, Tropp (2011), Algorithm 4.4: Y = A G (G Gaussian, rank + oversampling columns), then
  ``num_power_iterations`` rounds of Q = qr(Aᵀ Q), Q = qr(A Q), then the SVD of the small Qᵀ A. Every product
  with A costs O(|Ω|·(rank + oversampling)).

  Returns:
    ``(u, s, vt)``: ``(m, rank)``, ``(rank,)``, ``(rank, n)``, with u diag(s) vt ≈ the best rank-``rank``
    approximation of P_Ω(M).
  """
  m, n = _check_shape(shape)
  rank = _check_rank(rank, m, n)
  _checks.check_int(num_power_iterations, "num_power_iterations", 0)
  _checks.check_int(oversampling, "oversampling", 0)
  _check_observations(observations, m, n, "`shape`")
  width = min(rank + oversampling, m, n)
  dtype = observations.by_row.value.dtype
  g = jax.random.normal(key, (n, width), dtype)
  q, _ = _qr(_sparse_matmul(observations.by_row, g, m))

  def power(_, q):
    q, _ = _qr(_sparse_matmul(observations.by_col, q, n))
    return _qr(_sparse_matmul(observations.by_row, q, m))[0]

  q = jax.lax.fori_loop(0, num_power_iterations, power, q)
  bt = _sparse_matmul(observations.by_col, q, n)  # (n, width) = Aᵀ Q = (Qᵀ A)ᵀ
  w, s, zt = jnp.linalg.svd(bt.T, full_matrices=False)
  return q @ w[:, :rank], s[:rank], zt[:rank]


def init(
  key: jax.Array,
  observations: Observations,
  shape: tuple[int, int],
  *,
  rank: int,
  incoherence: float | None = 3.0,
  num_power_iterations: int = 4,
) -> AltMinState:
  """The clipped top-k SVD initialisation (JNS13 Algorithm 2, steps 2–3, as used by arXiv 2302.11068).

  U₀ = the top-k left singular vectors of P_Ω(M) (:func:`top_singular_subspace`); entries with
  |U₀[i, a]| > 2μ√(k/m) are set to zero; U₀ ← qr(U₀). The first right factor is the projection
  V₀ = P_Ω(M)ᵀ U₀ / p with p = |Ω|/(mn), so that U₀V₀ᵀ is the rescaled rank-k projection of the observations
  (the first half-step's warm start).

  Args:
    key: PRNG key (the random start of the subspace iteration).
    observations: from :func:`prepare`.
    shape: ``(m, n)``.
    rank: k.
    incoherence: μ of the clipping threshold 2μ√(k/m); ``None`` disables clipping (the plain SVD start). The
      default 3 suits random factors (their μ = √(m/k)·maxᵢ‖Uᵢ‖ is about 1.5–3).
    num_power_iterations: subspace-iteration rounds.

  Returns:
    :class:`AltMinState`.
  """
  m, n = _check_shape(shape)
  rank = _check_rank(rank, m, n)
  _check_observations(observations, m, n, "`shape`")
  if incoherence is not None and not (isinstance(incoherence, (int, float)) and incoherence > 0):
    raise ValueError(f"`incoherence` must be None or a number > 0, got {incoherence!r}.")
  u, _, _ = top_singular_subspace(key, observations, (m, n), rank, num_power_iterations=num_power_iterations)
  if incoherence is not None:
    threshold = 2.0 * incoherence * np.sqrt(rank / m)
    u = jnp.where(jnp.abs(u) > threshold, 0.0, u)
  u, _ = _qr(u)
  p = observations.by_row.value.shape[0] / (m * n)
  v = _sparse_matmul(observations.by_col, u, n) / p
  return AltMinState(u=u, v=v)


def step(
  key: jax.Array, state: AltMinState, observations: Observations, *, solver: HalfStepSolver
) -> tuple[AltMinState, AltMinStepInfo]:
  """One outer iteration: the V half-step, QR of V, the U half-step, QR of U (arXiv 2302.11068, Sec. 4).

  With U orthonormal and X = U Vᵀ: V̂ = solver(U, Ω by column, warm start V); V̂ = Q_V R_V; Ŵ = solver(Q_V, Ω by
  row, warm start U R_Vᵀ) (so that the warm start is the current X); Ŵ = Q_U R_U; the new state is
  (Q_U, Q_V R_Uᵀ), which represents X = Ŵ Q_Vᵀ.

  Args:
    key: PRNG key (split between the two half-steps and passed to ``solver``).
    state: the current :class:`AltMinState`.
    observations: from :func:`prepare`.
    solver: a :data:`HalfStepSolver` (:func:`solve_exact`, :class:`CGSolver`).

  Returns:
    The new state and its :class:`AltMinStepInfo`.
  """
  _check_state(state)
  _check_observations(observations, state.u.shape[0], state.v.shape[0], "the shape of `state`")
  if not callable(solver):
    raise TypeError(f"`solver` must be a HalfStepSolver callable, got {solver!r}.")
  k_v, k_u = jax.random.split(key)
  v_hat = solver(k_v, state.u, observations.by_col, state.v)
  q_v, r_v = _qr(v_hat)
  w = solver(k_u, q_v, observations.by_row, state.u @ r_v.T)
  q_u, r_u = _qr(w)
  new = AltMinState(u=q_u, v=q_v @ r_u.T)
  return new, AltMinStepInfo(residual=relative_residual(new, observations))


def complete(
  key: jax.Array,
  rows: jax.Array,
  cols: jax.Array,
  values: jax.Array,
  shape: tuple[int, int],
  *,
  rank: int,
  num_iterations: int,
  solver: str | HalfStepSolver = "approx",
  num_cg_iterations: int = 3,
  warm_start: bool = True,
  incoherence: float | None = 3.0,
  num_power_iterations: int = 4,
) -> CompletionResult:
  """Completes a rank-``rank`` matrix from its entries in Ω by alternating minimisation (arXiv 2302.11068).

  :func:`prepare`, :func:`init` (clipped top-k SVD), then ``num_iterations`` :func:`step` s in a ``lax.scan``.

  Args:
    key: PRNG key.
    rows: ``(|Ω|,)`` row indices.
    cols: ``(|Ω|,)`` column indices.
    values: ``(|Ω|,)`` observed values (float32 or float64; the factors have this dtype).
    shape: ``(m, n)``, Python ints.
    rank: k, a Python int <= min(m, n).
    num_iterations: outer iterations (static).
    solver: ``"approx"`` (``num_cg_iterations`` warm-started Jacobi-preconditioned CG steps per half-step,
      :func:`solve_cg`), ``"exact"`` (:func:`solve_exact`), or any :data:`HalfStepSolver`.
    num_cg_iterations: CG steps of ``"approx"``.
    warm_start: warm-start the CG steps of ``"approx"`` (``False`` is the control that loses).
    incoherence: μ of the clipping of :func:`init` (``None``: no clipping).
    num_power_iterations: subspace-iteration rounds of :func:`init`.

  Returns:
    :class:`CompletionResult` with ``u @ v.T`` the completed matrix.

  >>> m_true = jnp.outer(jnp.arange(1.0, 7.0), jnp.array([1.0, -1.0, 2.0, 0.5, 1.5]))  # rank 1, 6 x 5
  >>> rows, cols = jnp.nonzero(jnp.arange(30).reshape(6, 5) % 3 != 0)  # 20 of the 30 entries
  >>> out = complete(jax.random.key(0), rows, cols, m_true[rows, cols], (6, 5), rank=1, num_iterations=25)
  >>> print(float(jnp.abs(out.u @ out.v.T - m_true).max()) < 1e-4, out.residuals.shape)
  True (25,)
  """
  m, n = _check_shape(shape)
  rank = _check_rank(rank, m, n)
  num_iterations = _checks.check_int(num_iterations, "num_iterations", 0)
  solver = _resolve_solver(solver, num_cg_iterations, warm_start)
  observations = prepare(rows, cols, values, (m, n))
  return _complete(
    key,
    observations,
    shape=(m, n),
    rank=rank,
    num_iterations=num_iterations,
    solver=solver,
    incoherence=incoherence,
    num_power_iterations=num_power_iterations,
  )


@functools.partial(
  jax.jit, static_argnames=("shape", "rank", "num_iterations", "solver", "incoherence", "num_power_iterations")
)
def _complete(key, observations, *, shape, rank, num_iterations, solver, incoherence, num_power_iterations):
  k_init, k_steps = jax.random.split(key)
  state = init(
    k_init, observations, shape, rank=rank, incoherence=incoherence, num_power_iterations=num_power_iterations
  )

  def body(state, k):
    state, info = step(k, state, observations, solver=solver)
    return state, info.residual

  final, residuals = jax.lax.scan(body, state, jax.random.split(k_steps, num_iterations))
  return CompletionResult(u=final.u, v=final.v, residuals=residuals, init_u=state.u)
