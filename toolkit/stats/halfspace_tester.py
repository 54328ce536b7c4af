r"""Tester-learner for halfspaces: projected SGD on a smooth non-convex surrogate, plus global and band tests.

Gollakota, Klivans, Stavropoulos, Vasilyan, "An Efficient Tester-Learner for Halfspaces", ICLR 2024,
arXiv 2302.14853. In the testable-learning model (Rubinfeld & Vasilyan) a tester-learner either rejects the training
set or outputs a halfspace whose error is certified, and it must accept (with probability ≥ 1 − δ) data whose
marginal is the target, here N(0, I_d). The paper's guarantees: error opt + ε under Massart noise and O(opt) + ε
under adversarial noise, in polynomial time. Its learner is the non-convex SGD of Diakonikolas, Kontonis, Tzamos,
Zarifis (DKTZ20a/b); its tests combine the covariate moment matching of GKK23 with new *label-dependent* tests
localised around the candidate halfspaces the learner produced.

What this module implements (the structure is the paper's; the details marked "ours" are our choices, since only
the paper's abstract was checked against its text):

1. **Learner** (``init``/``step``/``learn``): projected SGD on the unit sphere for
   L_σ(w) = E[S_σ(−y⟨w, x⟩/‖w‖)], S_σ(t) = 1/(1 + e^{−t/σ}) (the smooth surrogate of DKTZ20b). Ours: a random
   unit start, any optax optimiser followed by renormalisation, and the candidate list = ``num_candidates``
   evenly spaced iterates ending with the last one.
2. **Tests** (``run_tests``) on a held-out split (ours: the learner sees the first ``train_fraction`` of the points,
   the tests and the final choice see the rest, so the candidates are independent of the tested points):
   (a) global moments of x of degree ≤ ``degree`` against N(0, I);
   (b) for every candidate w and band width σ in ``band_widths``, the band mass Pr[|⟨w, x⟩| ≤ σ] against
   2Φ(σ) − 1;
   (c) for the points in each band, the moments of degree ≤ ``band_degree`` of the projection of x on w^⊥
   (in an orthonormal basis of w^⊥) against N(0, I_{d−1}): mean 0 and covariance I for degree 2.
3. **Decision**: accept iff every test passes; output the candidate of smallest empirical error on the held-out
   split.

Tolerances (ours; the paper's constants are theoretical). Each statistic is an empirical average whose standard
deviation s under the target is known in closed form (for a moment x^α of N(0, I): Var = E x^{2α} − (E x^α)²,
products of double factorials; for a band mass p: √(p(1 − p))). A statistic over m points passes when
|deviation| ≤ s (z/√m + ``moment_slack``) (band mass: ≤ z s/√m + ``mass_slack`` · p), with z the two-sided
Bonferroni quantile for ``delta`` over all the statistics (``num_statistics``). The tolerances thus shrink as
1/√n, so Gaussian data pass with probability ≈ ≥ 1 − δ at every n (completeness), while a fixed departure from the
Gaussian is caught once n is large enough; the slacks give the paper's constant-accuracy tests for large n.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy.special import comb, ndtri

from toolkit import _checks
from toolkit.stats.halfspace_data import gaussian_band_mass

_MAX_DEGREE = 4


# ----------------------------------------------------------------------------------------------------- learner


def surrogate_loss(w: jax.Array, x: jax.Array, y: jax.Array, sigma) -> jax.Array:
  """L_σ(w) = mean over points of S_σ(−y⟨w, x⟩/‖w‖), S_σ(t) = sigmoid(t/σ) (DKTZ20b's smooth surrogate).

  Args:
    w: ``(dim,)`` normal vector (any non-zero norm; the loss is scale invariant).
    x: ``(num_samples, dim)`` points.
    y: ``(num_samples,)`` labels in {−1, +1}.
    sigma: smoothing scale σ > 0.

  Returns:
    Scalar loss in (0, 1).
  """
  if jnp.ndim(x) != 2 or jnp.shape(w) != jnp.shape(x)[1:]:
    raise ValueError(f"`x` must be (num_samples, dim) and `w` (dim,), got {jnp.shape(x)} and {jnp.shape(w)}.")
  # A (n, 1) y would broadcast against the (n,) margins into an (n, n) matrix of pairs, silently.
  if jnp.shape(y) != jnp.shape(x)[:1]:
    raise ValueError(f"`y` must have shape ({jnp.shape(x)[0]},) to match `x`, got shape {jnp.shape(y)}.")
  _check_nonzero(w, "w")
  _checks.check_positive(sigma, "sigma")
  margin = y * (x @ w) / jnp.linalg.norm(w)
  return jnp.mean(jax.nn.sigmoid(-margin / sigma))


class PSGDState(NamedTuple):
  """State of projected SGD: the unit vector ``w``, the optimiser state and the step count."""

  w: jax.Array
  opt_state: optax.OptState
  count: jax.Array


class PSGDInfo(NamedTuple):
  """Per-step information: the minibatch surrogate loss before the step."""

  loss: jax.Array


def init(w0: jax.Array, optimizer: optax.GradientTransformation) -> PSGDState:
  """Starts projected SGD at ``w0`` (normalised to the unit sphere)."""
  if jnp.ndim(w0) != 1:
    raise ValueError(f"`w0` must have shape (dim,), got shape {jnp.shape(w0)}.")
  if not isinstance(w0, jax.core.Tracer) and not np.any(np.asarray(w0)):
    raise ValueError("`w0` must be a non-zero vector (it is normalised onto the unit sphere), got all zeros.")
  w = w0 / jnp.linalg.norm(w0)
  return PSGDState(w, optimizer.init(w), jnp.zeros((), jnp.int32))


def step(
  key: jax.Array,
  state: PSGDState,
  x: jax.Array,
  y: jax.Array,
  *,
  sigma: float,
  optimizer: optax.GradientTransformation,
  batch_size: int,
) -> tuple[PSGDState, PSGDInfo]:
  """One projected SGD step: a minibatch gradient of L_σ, the optimiser's update, then back onto the sphere."""
  _check_data(x, y)
  if x.shape[1] != jnp.shape(state.w)[0]:
    raise ValueError(f"`x` must have {jnp.shape(state.w)[0]} columns, the dimension of `state.w`, got {x.shape[1]}.")
  _check_int("batch_size", batch_size, 1)
  _checks.check_positive(sigma, "sigma")
  idx = jax.random.randint(key, (batch_size,), 0, x.shape[0])
  loss, grad = jax.value_and_grad(surrogate_loss)(state.w, x[idx], y[idx], sigma)
  updates, opt_state = optimizer.update(grad, state.opt_state, state.w)
  w = optax.apply_updates(state.w, updates)
  return PSGDState(w / jnp.linalg.norm(w), opt_state, state.count + 1), PSGDInfo(loss)


class LearnerOutput(NamedTuple):
  """Result of ``learn``: the last iterate ``w``, the ``candidates`` (num_candidates, dim) and the losses."""

  w: jax.Array
  candidates: jax.Array
  losses: jax.Array


def _check_data(x, y) -> None:
  if jnp.ndim(x) != 2 or x.shape[0] < 2:
    raise ValueError(f"`x` must have shape (num_samples >= 2, dim), got shape {jnp.shape(x)}.")
  if jnp.shape(y) != (x.shape[0],):
    raise ValueError(f"`y` must have shape ({x.shape[0]},) to match `x`, got shape {jnp.shape(y)}.")


def _check_int(name: str, value, minimum: int) -> None:
  if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
    raise ValueError(f"`{name}` must be a Python int >= {minimum}, got {value!r}.")


def _check_nonzero(w, name: str) -> None:
  # A zero normal vector has no direction: dividing by its norm gives NaN.
  if not _checks.is_traced(w) and not np.any(np.asarray(w)):
    raise ValueError(f"`{name}` must be a non-zero vector, got all zeros.")


def _check_band_widths(band_widths) -> None:
  if not band_widths or any(not float(b) > 0 for b in band_widths):
    raise ValueError(f"`band_widths` must be a non-empty tuple of positive floats, got {band_widths!r}.")


def learn(
  key: jax.Array,
  x: jax.Array,
  y: jax.Array,
  *,
  sigma: float = 0.1,
  optimizer: optax.GradientTransformation | None = None,
  batch_size: int = 256,
  num_steps: int = 3000,
  num_candidates: int = 8,
  w0: jax.Array | None = None,
) -> LearnerOutput:
  """Projected SGD on L_σ (``init`` then a ``lax.scan`` of ``step``); returns evenly spaced iterates as candidates.

  Args:
    key: PRNG key (the random start when ``w0`` is None, then the minibatches).
    x: ``(num_samples, dim)`` points.
    y: ``(num_samples,)`` labels in {−1, +1}.
    sigma: smoothing scale σ of the surrogate.
    optimizer: an optax transformation (default ``optax.sgd(0.05)``).
    batch_size: minibatch size.
    num_steps: number of steps.
    num_candidates: iterates kept, at steps num_steps·(i+1)/num_candidates.
    w0: optional ``(dim,)`` start.

  Returns:
    ``LearnerOutput``.

  >>> import jax, jax.numpy as jnp
  >>> x = jax.random.normal(jax.random.key(0), (4000, 3))
  >>> y = jnp.sign(x @ jnp.array([0.6, 0.8, 0.0]))
  >>> out = learn(jax.random.key(1), x, y, num_steps=500, num_candidates=2)
  >>> print(out.candidates.shape, [round(float(v), 1) + 0.0 for v in out.w])
  (2, 3) [0.6, 0.8, 0.0]
  """
  _check_data(x, y)
  _check_int("batch_size", batch_size, 1)
  _check_int("num_candidates", num_candidates, 1)
  _check_int("num_steps", num_steps, num_candidates)
  optimizer = optax.sgd(0.05) if optimizer is None else optimizer
  k_init, k_steps = jax.random.split(key)
  if w0 is None:
    w0 = jax.random.normal(k_init, (x.shape[1],), x.dtype)
  elif jnp.shape(w0) != (x.shape[1],):
    raise ValueError(f"`w0` must have shape ({x.shape[1]},), got shape {jnp.shape(w0)}.")

  def body(state, k):
    state, info = step(k, state, x, y, sigma=sigma, optimizer=optimizer, batch_size=batch_size)
    return state, (state.w, info.loss)

  state, (ws, losses) = jax.lax.scan(body, init(w0, optimizer), jax.random.split(k_steps, num_steps))
  idx = np.asarray([num_steps * (i + 1) // num_candidates - 1 for i in range(num_candidates)])
  return LearnerOutput(state.w, ws[idx], losses)


# ------------------------------------------------------------------------------------------------------- tests


def _moment_tables(dim: int, order: int) -> tuple[np.ndarray, np.ndarray]:
  """Gaussian mean E x^α and standard deviation √Var x^α of every entry of the order-k moment tensor.

  The tensor is flattened as in ``_empirical_moments``; an entry's multi-index counts c_m give
  E x^α = Π (c_m − 1)!! (0 if some c_m is odd) and E x^{2α} = Π (2c_m − 1)!!.
  """
  dfact = [1.0] * (2 * order + 1)  # (j − 1)!! for j = 0..2·order: 1, 1, 1, 3, 3, 15, ...
  for j in range(2, 2 * order + 1):
    dfact[j] = dfact[j - 2] * (j - 1)
  mean, second = [], []
  for idx in itertools.product(range(dim), repeat=order):
    counts = np.bincount(idx, minlength=dim)
    counts = counts[counts > 0]
    mean.append(0.0 if np.any(counts % 2) else float(np.prod([dfact[c] for c in counts])))
    second.append(float(np.prod([dfact[2 * c] for c in counts])))
  mean, second = np.asarray(mean), np.asarray(second)
  return mean, np.sqrt(second - mean**2)


def _empirical_moments(x: jax.Array, weights: jax.Array, order: int) -> jax.Array:
  """Weighted average of x^{⊗order}, flattened to (dim**order,) in ``itertools.product`` order."""
  total = jnp.maximum(weights.sum(), 1.0)
  xw = x * (weights / total)[:, None]
  if order == 1:
    return xw.sum(0)
  if order == 2:
    return (xw.T @ x).reshape(-1)
  xw_x = (xw[:, :, None] * x[:, None, :]).reshape(x.shape[0], -1)
  if order == 3:
    return (xw_x.T @ x).reshape(-1)
  return (xw_x.T @ (x[:, :, None] * x[:, None, :]).reshape(x.shape[0], -1)).reshape(-1)


def moment_statistic(x: jax.Array, weights: jax.Array | None = None, *, degree: int = 2, slack: float = 0.0):
  """Largest standardised deviation of the moments of degree 1..``degree`` of x from those of N(0, I).

  Returns max_α (|mean_w x^α − E x^α| / sd(x^α) − slack) · √m over the entries α of the moment tensors (sd(x^α)
  is the Gaussian per-point standard deviation, m the weight total): a z-score less the slack, so the test
  "statistic ≤ z" reads |deviation| ≤ sd (z/√m + slack).

  Args:
    x: ``(num_samples, dim)`` points (dim ≥ 1).
    weights: optional ``(num_samples,)`` 0/1 mask (e.g. membership of a band); m = its sum.
    degree: highest moment degree, 1..4.
    slack: the constant allowance in units of the per-point standard deviation.

  Returns:
    Scalar statistic; +inf when no point has positive weight.

  >>> import jax
  >>> x = jax.random.normal(jax.random.key(0), (20000, 3))
  >>> print(bool(moment_statistic(x, degree=4) < 4.0), bool(moment_statistic(2 * x, degree=2) > 100))
  True True
  """
  if jnp.ndim(x) != 2:
    raise ValueError(f"`x` must have shape (num_samples, dim), got shape {jnp.shape(x)}.")
  _check_int("degree", degree, 1)
  if degree > _MAX_DEGREE:
    raise ValueError(f"`degree` must be <= {_MAX_DEGREE}, got {degree}.")
  weights = jnp.ones(x.shape[0], x.dtype) if weights is None else weights.astype(x.dtype)
  m = weights.sum()
  worst = jnp.zeros((), x.dtype)
  for order in range(1, degree + 1):
    mean, sd = _moment_tables(x.shape[1], order)
    dev = jnp.abs(_empirical_moments(x, weights, order) - mean) / sd
    worst = jnp.maximum(worst, dev.max())
  return jnp.where(m > 0, (worst - slack) * jnp.sqrt(m), jnp.inf)


def num_moment_statistics(dim: int, degree: int) -> int:
  """Number of distinct moments x^α with 1 ≤ |α| ≤ degree in ``dim`` variables: C(dim + degree, degree) − 1."""
  _checks.check_int(dim, "dim", minimum=0)  # 0 variables (w^⊥ of a 1-D x) have no moments
  _checks.check_int(degree, "degree")
  return int(comb(dim + degree, degree, exact=True)) - 1


def num_statistics(dim: int, *, degree: int, band_degree: int, num_candidates: int, num_widths: int) -> int:
  """Number of statistics the tester checks (the Bonferroni count of its threshold)."""
  counts = {"dim": dim, "degree": degree, "band_degree": band_degree}
  counts.update(num_candidates=num_candidates, num_widths=num_widths)
  for name, value in counts.items():
    _checks.check_int(value, name)
  per_band = 1 + num_moment_statistics(dim - 1, band_degree)
  return num_moment_statistics(dim, degree) + num_candidates * num_widths * per_band


def bonferroni_threshold(delta: float, count: int) -> float:
  """Two-sided normal quantile z with count · Pr[|N(0,1)| > z] = δ."""
  if not 0.0 < delta < 1.0:
    raise ValueError(f"`delta` must be in (0, 1), got {delta!r}.")
  _checks.check_int(count, "count")
  return float(ndtri(1.0 - delta / (2.0 * count)))


def orthogonal_basis(w: jax.Array) -> jax.Array:
  """``(dim, dim − 1)`` orthonormal basis of w^⊥: the last columns of the Householder reflection sending w to ±e₁."""
  if jnp.ndim(w) != 1 or jnp.shape(w)[0] < 1:
    raise ValueError(f"`w` must have shape (dim,) with dim >= 1, got shape {jnp.shape(w)}.")
  _check_nonzero(w, "w")
  u = w / jnp.linalg.norm(w)
  sign = jnp.where(u[0] >= 0, 1.0, -1.0)
  v = u.at[0].add(sign)
  h = jnp.eye(u.shape[0], dtype=u.dtype) - 2.0 * jnp.outer(v, v) / jnp.dot(v, v)
  return h[:, 1:]


class BandStatistics(NamedTuple):
  """Band tests of one candidate at several widths: ``mass`` (empirical), ``mass_statistic`` and
  ``moment_statistic`` (z-scores less slack, to compare with the threshold), ``count`` of points in each band."""

  mass: jax.Array
  mass_statistic: jax.Array
  moment_statistic: jax.Array
  count: jax.Array


def band_statistics(
  w: jax.Array,
  x: jax.Array,
  band_widths: tuple[float, ...],
  *,
  band_degree: int = 2,
  mass_slack: float = 0.0,
  moment_slack: float = 0.0,
) -> BandStatistics:
  """Band mass and in-band moments of the projection on w^⊥, for each width σ in ``band_widths``.

  Under N(0, I) the band {|⟨w, x⟩| ≤ σ} has mass 2Φ(σ) − 1, and in it the coordinates of x in an orthonormal
  basis of w^⊥ are exactly N(0, I_{d−1}) (independent of ⟨w, x⟩).

  Args:
    w: ``(dim,)`` candidate (normalised here).
    x: ``(num_samples, dim)`` points, dim ≥ 2.
    band_widths: widths σ (static tuple).
    band_degree: degree of the in-band moments (2: mean and covariance).
    mass_slack: relative allowance on the band mass.
    moment_slack: allowance on the in-band moments, per standard deviation.

  Returns:
    ``BandStatistics`` with fields of shape ``(len(band_widths),)``.
  """
  if jnp.ndim(x) != 2 or x.shape[1] < 2:
    raise ValueError(f"`x` must have shape (num_samples, dim >= 2), got shape {jnp.shape(x)}.")
  if jnp.shape(w) != x.shape[1:]:
    raise ValueError(f"`w` must have shape ({x.shape[1]},), matching `x`, got shape {jnp.shape(w)}.")
  _check_band_widths(band_widths)
  _check_nonzero(w, "w")
  w = w / jnp.linalg.norm(w)
  proj = x @ w
  perp = x @ orthogonal_basis(w)
  n = x.shape[0]
  masses, mass_stats, moment_stats, counts = [], [], [], []
  for width in band_widths:
    inside = (jnp.abs(proj) <= width).astype(x.dtype)
    p = gaussian_band_mass(width)
    mass = inside.mean()
    sd = jnp.sqrt(p * (1.0 - p))
    masses.append(mass)
    mass_stats.append((jnp.abs(mass - p) - mass_slack * p) / sd * math.sqrt(n))
    moment_stats.append(moment_statistic(perp, inside, degree=band_degree, slack=moment_slack))
    counts.append(inside.sum())
  return BandStatistics(*(jnp.stack(v) for v in (masses, mass_stats, moment_stats, counts)))


class HalfspaceTests(NamedTuple):
  """Result of ``run_tests``.

  Attributes:
    accepted: all tests passed.
    global_passed: the global moment test passed (the moment-matching tester alone, labels ignored).
    band_passed: ``(num_candidates,)`` every band test of the candidate passed.
    global_statistic: z-score of the global moments.
    bands: ``BandStatistics`` with fields ``(num_candidates, num_widths)``.
    threshold: the Bonferroni z the statistics are compared with.
  """

  accepted: jax.Array
  global_passed: jax.Array
  band_passed: jax.Array
  global_statistic: jax.Array
  bands: BandStatistics
  threshold: float


def run_tests(
  x: jax.Array,
  candidates: jax.Array,
  *,
  band_widths: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4),
  degree: int = 2,
  band_degree: int = 2,
  delta: float = 0.05,
  mass_slack: float = 0.0,
  moment_slack: float = 0.0,
) -> HalfspaceTests:
  """The tester: global moments of x, then band mass and in-band orthogonal moments around every candidate.

  Args:
    x: ``(num_samples, dim)`` points the tests see (independent of how ``candidates`` were found).
    candidates: ``(num_candidates, dim)`` normal vectors.
    band_widths: band half-widths σ.
    degree: degree of the global moment test (1..4).
    band_degree: degree of the in-band moment test (1..4).
    delta: target rejection probability under N(0, I) (Bonferroni over all statistics).
    mass_slack: relative allowance on band masses.
    moment_slack: allowance on moments, in per-point standard deviations.

  Returns:
    ``HalfspaceTests``.

  >>> import jax, jax.numpy as jnp
  >>> x = jax.random.normal(jax.random.key(0), (20000, 3))
  >>> print(bool(run_tests(x, jnp.eye(3)).accepted), bool(run_tests(x.at[:, 0].mul(0.5), jnp.eye(3)).accepted))
  True False
  """
  if jnp.ndim(x) != 2 or x.shape[1] < 2:
    raise ValueError(f"`x` must have shape (num_samples, dim >= 2), got shape {jnp.shape(x)}.")
  if jnp.ndim(candidates) != 2 or candidates.shape[1] != x.shape[1]:
    raise ValueError(f"`candidates` must have shape (num_candidates, {x.shape[1]}), got {jnp.shape(candidates)}.")
  _check_band_widths(band_widths)
  for name, value in (("band_degree", band_degree), ("degree", degree)):
    _check_int(name, value, 1)
    if value > _MAX_DEGREE:
      raise ValueError(f"`{name}` must be <= {_MAX_DEGREE}, got {value}.")
  band_widths = tuple(float(b) for b in band_widths)
  count = num_statistics(
    x.shape[1], degree=degree, band_degree=band_degree, num_candidates=candidates.shape[0], num_widths=len(band_widths)
  )
  z = bonferroni_threshold(delta, count)
  global_stat = moment_statistic(x, degree=degree, slack=moment_slack)
  bands = jax.vmap(
    lambda w: band_statistics(
      w, x, band_widths, band_degree=band_degree, mass_slack=mass_slack, moment_slack=moment_slack
    )
  )(candidates)
  band_passed = jnp.all((bands.mass_statistic <= z) & (bands.moment_statistic <= z), axis=1)
  global_passed = global_stat <= z
  return HalfspaceTests(global_passed & jnp.all(band_passed), global_passed, band_passed, global_stat, bands, z)


# ---------------------------------------------------------------------------------------------- tester-learner


class HalfspaceTesterOutput(NamedTuple):
  """Result of ``halfspace_tester_learner``.

  Attributes:
    w: ``(dim,)`` the output halfspace (the candidate of least held-out error); meaningful when ``accepted``.
    accepted: the tester accepted.
    tests: the ``HalfspaceTests``.
    candidates: ``(num_candidates, dim)``.
    candidate_errors: ``(num_candidates,)`` held-out 0-1 errors.
    losses: ``(num_steps,)`` minibatch surrogate losses of the learner.
  """

  w: jax.Array
  accepted: jax.Array
  tests: HalfspaceTests
  candidates: jax.Array
  candidate_errors: jax.Array
  losses: jax.Array


def halfspace_tester_learner(
  key: jax.Array,
  x: jax.Array,
  y: jax.Array,
  *,
  train_fraction: float = 0.5,
  sigma: float = 0.1,
  optimizer: optax.GradientTransformation | None = None,
  batch_size: int = 256,
  num_steps: int = 3000,
  num_candidates: int = 8,
  band_widths: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4),
  degree: int = 2,
  band_degree: int = 2,
  delta: float = 0.05,
  mass_slack: float = 0.0,
  moment_slack: float = 0.0,
) -> HalfspaceTesterOutput:
  """Learns on the first ``train_fraction`` of the points, tests and picks the output on the rest.

  Arguments as in ``learn`` and ``run_tests``. Returns a ``HalfspaceTesterOutput``.

  >>> import jax, jax.numpy as jnp
  >>> x = jax.random.normal(jax.random.key(0), (8000, 3))
  >>> y = jnp.sign(x[:, 0])
  >>> run = jax.jit(lambda k, x, y: halfspace_tester_learner(k, x, y, num_steps=400, num_candidates=2))
  >>> out = run(jax.random.key(1), x, y)
  >>> print(bool(out.accepted), [round(float(v), 1) + 0.0 for v in out.w])
  True [1.0, 0.0, 0.0]
  """
  _check_data(x, y)
  if not 0.0 < train_fraction < 1.0:
    raise ValueError(f"`train_fraction` must be in (0, 1), got {train_fraction!r}.")
  num_train = round(train_fraction * x.shape[0])
  if not 2 <= num_train <= x.shape[0] - 2:
    raise ValueError(f"`train_fraction`={train_fraction} leaves fewer than 2 points on one side of the split.")
  learned = learn(
    key,
    x[:num_train],
    y[:num_train],
    sigma=sigma,
    optimizer=optimizer,
    batch_size=batch_size,
    num_steps=num_steps,
    num_candidates=num_candidates,
  )
  x_test, y_test = x[num_train:], y[num_train:]
  tests = run_tests(
    x_test,
    learned.candidates,
    band_widths=band_widths,
    degree=degree,
    band_degree=band_degree,
    delta=delta,
    mass_slack=mass_slack,
    moment_slack=moment_slack,
  )
  errors = jax.vmap(lambda w: jnp.mean(jnp.where(x_test @ w >= 0, 1.0, -1.0) != y_test))(learned.candidates)
  w = learned.candidates[jnp.argmin(errors)]
  return HalfspaceTesterOutput(w, tests.accepted, tests, learned.candidates, errors, learned.losses)
