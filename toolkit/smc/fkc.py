r"""Feynman-Kac correctors (FKC): weighted reverse SDEs and SMC for annealed, product and guided diffusions.

Skreta, Akhound-Sadegh, Ohanesian, Bondesan, Aspuru-Guzik, Doucet, Brekelmans, Tong, Neklyudov. "Feynman-Kac
Correctors in Diffusion: Annealing, Guidance, and Product of Experts", ICML 2025, arXiv 2503.02819 (code:
martaskrt/fkc-diffusion).

Conventions. A pretrained diffusion model is a score ``s(x, t) ≈ ∇ log q_t(x)`` of the marginals of a forward
noising SDE ``dX_t = f_t(X) dt + g_t dW``, ``t ∈ [0, 1]`` (:class:`VPSchedule`, :class:`VESchedule`). Generation
runs in ``τ = 1 - t``. We want to sample a path of unnormalised targets ``π_τ ∝ exp(L_τ)`` built from several
models' marginals, ``L = Σ_i β_i log q_t^i``:

* annealing ``q_t^β`` (one model, ``β = (β,)``),
* product of experts ``q_t^1 q_t^2`` (``β = (1, 1)``),
* geometric average / classifier-free guidance ``q_t^{u, 1-w} q_t^{c, w}`` (``β = (1 - w, w)``).

Master formula (the paper's weighted SDEs, derived from the Feynman-Kac formula for the PDE that ``π_τ`` solves,
arXiv 2503.02819 §3). For any noise level ``a ≥ 0`` simulate

  dX_τ = [-f_t(X) + (1 + a)/2 · g_t² ∇L_τ(X)] dτ + √a · g_t dW,
  d log w_τ = G_τ(X) dτ,   G = ∂_τ L - ∇·f - <f, ∇L> + (g²/2)(ΔL + |∇L|²).

Then ``E[w_τ φ(X_τ)] = ∫ π_τ φ / Z_0`` when ``X_0 ~ π_0 / Z_0``, ``w_0 = 1``; in particular ``E[w_1] = Z_1 / Z_0``.
The weight does not depend on ``a``: ``a = 1`` is the paper's "target-score SDE", ``a = 1/β`` its "tempered-noise
SDE" for annealing, ``a = 0`` the probability-flow ODE plus weights. When ``L = Σ β_i log q^i`` and every ``q^i``
solves the same forward Fokker-Planck equation, ``∂_t log q = -∇·f - <f, s> + (g²/2)(∇·s + |s|²)`` removes the
time derivative and the Laplacians and leaves a formula in the scores alone (:func:`log_weight_rate`):

  G = (B - 1) ∇·f + (g²/2) (|Σ_i β_i s_i|² - Σ_i β_i |s_i|²),   B = Σ_i β_i,

whose three cases are the paper's annealing weight ``(β - 1)∇·f + (g²/2) β(β - 1)|s|²``, product weight
``∇·f + g² <s_1, s_2>`` and guidance weight ``(g²/2) w(w - 1)|s_c - s_u|²``. :func:`master_log_weight_rate` computes
the master formula by automatic differentiation for any ``L`` (time-varying β, reward tilts), and is the tests'
oracle for the score formula.

SMC, one step at a time as in blackjax (:func:`init`, :func:`step`; :func:`sample` is a ``lax.scan`` over
:func:`step`): Euler–Maruyama on a uniform grid of ``t`` from ``t_max`` down to ``t_min``, the increment ``h · G``
at the pre-step state (as the authors), and resampling (a ``resampler`` function, systematic by default) after every
increment (the authors' choice, ``ess_threshold=1``) or when the ESS falls below ``ess_threshold · N``. The product of
the mean
weights at the resampling times and at the end estimates the normalising constant. The authors' heuristics that
bias the result (score clipping, clamped or centred increments, a delayed start of resampling) are left out.

Measured caveats (VP, b0 = 0.1, b1 = 20, 2-D Gaussian and mixture targets; see the tests and the experiment):

* The noise level does not change the weights, but it changes their variance. With less noise than the target
  score SDE (``a < 1``, e.g. the tempered-noise SDE at β > 1) the dynamics relax, at rate ``b(t)``, to a
  distribution narrower than the target and the weights become heavy-tailed: annealing ``N(m, C)`` to β = 2
  with ``a = ½`` gave a covariance 20% low at N = 8192 and 10% low at N = 131072 (consistent, but slowly);
  ``a = 0`` collapses onto a few particles once it resamples, as duplicates never separate.
* Euler–Maruyama is stiff near ``t = 1`` (``b = 20``), the more so for larger ``a``: with ``a = 2`` log Z was
  biased by +0.4 at 500 steps and +0.13 at 1000 (O(h); the authors use 1000).
* Weights alone (no resampling) degenerate: ESS of order 10 out of 65536 particles on the same Gaussian.

Gaussian mixtures noised by the forward process (:func:`noise_gmm`, :func:`noised_gmm_score_fn`) give exact
scores for the tests and the experiment; the mixtures themselves, their products, powers and the Gaussian geometric
mean are in :mod:`toolkit.stats.gmm`.

>>> import jax
>>> from toolkit.smc import fkc
>>> from toolkit.stats import gmm
>>> vp = fkc.VPSchedule()
>>> data = gmm.gaussian_mixture([0.5, 0.5], [[-2.0, 0.0], [2.0, 0.0]], [0.5, 0.05])
>>> terms = fkc.annealing(fkc.noised_gmm_score_fn(data, vp), 2.0, vp)  # target q², 91% on the sharp mode
>>> start = fkc.gaussian_start(jax.random.key(0), 1024, 2, 2.0)
>>> out = fkc.sample(jax.random.key(1), start.particles, terms, vp, num_steps=200)
>>> from toolkit.stats import metrics
>>> mean, _ = metrics.weighted_moments(out.particles, out.log_weights)
>>> print(bool(mean[0] > 1.2))  # exact E[x₁] = 1.64; the unweighted annealed score gives about 0.2
True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from toolkit.smc import resampling
from toolkit.stats import gmm

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]  # (x (N, d), t) -> (N, d)
LogDensityFn = Callable[[jax.Array, jax.Array], jax.Array]  # (x (d,), t) -> scalar


# ----------------------------------------------------------------------------------------------------------------
# Forward noising processes.


class VPSchedule(NamedTuple):
  """Variance-preserving forward SDE ``dX = -½ b(t) X dt + √b(t) dW``, ``b(t) = b0 + t (b1 - b0)``.

  Marginals: ``X_t | X_0 ~ N(α_t X_0, σ_t² I)`` with ``log α_t = -½(b0 t + ½ t² (b1 - b0))`` and
  ``σ_t² = 1 - α_t²`` (Song et al. 2021; the FKC code's defaults b0 = 0.1, b1 = 20).
  """

  beta_min: float = 0.1
  beta_max: float = 20.0

  def b(self, t):
    return self.beta_min + t * (self.beta_max - self.beta_min)

  def log_alpha(self, t):
    return -0.5 * (self.beta_min * t + 0.5 * t**2 * (self.beta_max - self.beta_min))

  def alpha(self, t):
    return jnp.exp(self.log_alpha(t))

  def sigma(self, t):
    # -expm1 keeps σ accurate at small t, where 1 - α² cancels.
    return jnp.sqrt(-jnp.expm1(2.0 * self.log_alpha(t)))

  def drift(self, x, t):
    return -0.5 * self.b(t) * x

  def drift_divergence(self, x, t):
    """``∇·f_t(x)`` for each point of ``x`` (..., d): ``-½ b(t) d``."""
    return jnp.full(jnp.shape(x)[:-1], -0.5 * self.b(t) * jnp.shape(x)[-1], dtype=jnp.result_type(x))

  def diffusion_sq(self, t):
    return self.b(t)


class VESchedule(NamedTuple):
  """Variance-exploding forward SDE ``dX = g(t) dW``, ``σ(t) = σ_min (σ_max/σ_min)^t``, ``g² = dσ²/dt``.

  The "geometric" schedule of the FKC GMM annealing code. Marginals ``q_t = p * N(0, σ_t² I)`` for a data
  distribution ``p`` taken at σ = 0 (so ``q_0`` is ``p`` blurred by ``σ_min``).
  """

  sigma_min: float = 0.01
  sigma_max: float = 10.0

  def alpha(self, t):
    return jnp.ones_like(jnp.asarray(t, dtype=float))

  def sigma(self, t):
    return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

  def drift(self, x, t):
    del t
    return jnp.zeros_like(x)

  def drift_divergence(self, x, t):
    del t
    return jnp.zeros(jnp.shape(x)[:-1], dtype=jnp.result_type(x))

  def diffusion_sq(self, t):
    return 2.0 * self.sigma(t) ** 2 * jnp.log(self.sigma_max / self.sigma_min)


Schedule = VPSchedule | VESchedule


def _check_schedule(schedule: Any) -> None:
  for name in ("drift", "drift_divergence", "diffusion_sq", "alpha", "sigma"):
    if not callable(getattr(schedule, name, None)):
      raise TypeError(
        f"`schedule` must be a VPSchedule or VESchedule (or have .{name}), got {type(schedule).__name__}."
      )
  # A zero σ_min made VESchedule's log(σ_max/σ_min) infinite (NaN particles); check the concrete numbers.
  if isinstance(schedule, VESchedule):
    lo, hi = _concrete_float(schedule.sigma_min, "sigma_min"), _concrete_float(schedule.sigma_max, "sigma_max")
    if lo is not None and hi is not None and not 0.0 < lo < hi:
      raise ValueError(f"VESchedule needs 0 < `sigma_min` < `sigma_max`, got sigma_min={lo}, sigma_max={hi}.")
  if isinstance(schedule, VPSchedule):
    lo, hi = _concrete_float(schedule.beta_min, "beta_min"), _concrete_float(schedule.beta_max, "beta_max")
    if lo is not None and hi is not None and not (0.0 <= lo and 0.0 < hi):
      raise ValueError(f"VPSchedule needs `beta_min` >= 0 and `beta_max` > 0, got beta_min={lo}, beta_max={hi}.")


# ----------------------------------------------------------------------------------------------------------------
# The weighted SDE: drift and log-weight rate.


class FKCTerms(NamedTuple):
  """What one Euler–Maruyama step of the weighted SDE needs at a batch of points.

  Attributes:
    score: ``(N, d)`` ``∇L_τ(x)``, the score of the target path (``Σ_i β_i s_i`` for products of powers).
    log_weight_rate: ``(N,)`` ``G_τ(x)``, the rate of the log-weight (the master formula).
  """

  score: jax.Array
  log_weight_rate: jax.Array


TermsFn = Callable[[jax.Array, jax.Array], FKCTerms]  # (x (N, d), t) -> FKCTerms


def _betas(betas: Any, k: int | None = None) -> jax.Array:
  betas = jnp.asarray(betas)
  if betas.ndim != 1:
    raise ValueError(f"`betas` must be a 1-D array with one exponent per model, got shape {betas.shape}.")
  if k is not None and betas.shape[0] != k:
    raise ValueError(f"`betas` must have one exponent per score ({k}), got {betas.shape[0]}.")
  if not jnp.issubdtype(betas.dtype, jnp.floating):
    betas = betas.astype(float)
  return betas


def log_weight_rate(scores: jax.Array, betas: jax.Array, schedule: Schedule, x: jax.Array, t: jax.Array) -> FKCTerms:
  """Target score and log-weight rate of ``π_t ∝ Π_i (q_t^i)^{β_i}`` from the models' scores alone.

  The master formula (module docstring; the annealed, product and geometric-average weighted SDEs of arXiv
  2503.02819) with ``L = Σ β_i log q^i``, where the Fokker-Planck equation of each ``q^i`` eliminates
  ``∂_τ L`` and ``ΔL``:

    ``∇L = Σ_i β_i s_i``,  ``G = (B - 1) ∇·f + (g²/2)(|Σ_i β_i s_i|² - Σ_i β_i |s_i|²)``,  ``B = Σ_i β_i``.

  The weight is constant in ``x`` (so SMC changes nothing) exactly when one ``β_i`` is 1 and the rest 0.

  Args:
    scores: ``(K, N, d)`` the K models' scores ``s_i(x, t)`` at the N points.
    betas: ``(K,)`` exponents (traced: guidance weights can be vmapped over).
    schedule: the forward process all K models share.
    x: ``(N, d)`` points.
    t: scalar forward time.

  Returns:
    :class:`FKCTerms` with ``score`` (N, d) and ``log_weight_rate`` (N,).
  """
  _check_schedule(schedule)
  scores = jnp.asarray(scores)
  if scores.ndim != 3 or scores.shape[1:] != jnp.shape(x):
    raise ValueError(
      f"`scores` must have shape (K, N, d) with (N, d) = {jnp.shape(x)} (x's shape), got {scores.shape}."
    )
  betas = _betas(betas, scores.shape[0]).astype(scores.dtype)
  target = jnp.einsum("k,knd->nd", betas, scores)
  norms = jnp.einsum("k,kn->n", betas, jnp.sum(scores**2, axis=-1))
  g2 = schedule.diffusion_sq(t)
  rate = (jnp.sum(betas) - 1.0) * schedule.drift_divergence(x, t) + 0.5 * g2 * (jnp.sum(target**2, -1) - norms)
  return FKCTerms(score=target, log_weight_rate=rate)


def product_of_powers(score_fns: Sequence[ScoreFn], betas: Any, schedule: Schedule) -> TermsFn:
  """The weighted SDE of ``Π_i (q_t^i)^{β_i}`` for score callables ``s_i(x (N, d), t) -> (N, d)``."""
  _check_schedule(schedule)
  score_fns = tuple(score_fns)
  if not score_fns or not all(callable(s) for s in score_fns):
    raise TypeError("`score_fns` must be a non-empty sequence of callables s(x, t) -> (N, d).")
  betas = _betas(betas, len(score_fns))

  def terms(x, t):
    scores = jnp.stack([s(x, t) for s in score_fns])
    return log_weight_rate(scores, betas, schedule, x, t)

  return terms


def annealing(score_fn: ScoreFn, beta: Any, schedule: Schedule) -> TermsFn:
  """Annealing ``q_t^β`` (arXiv 2503.02819, annealed weighted SDE): ``∇L = β s``, ``G = (β-1)∇·f + (g²/2) β(β-1)|s|²``.

  Run :func:`sample` with ``noise=1`` for the paper's target-score SDE, ``noise=1/β`` for its tempered-noise SDE.
  """
  if not callable(score_fn):
    raise TypeError(f"`score_fn` must be a callable s(x, t) -> (N, d), got {type(score_fn).__name__}.")
  if jnp.size(beta) != 1:
    raise ValueError(f"`beta` must be a scalar exponent, got shape {jnp.shape(beta)}.")
  return product_of_powers((score_fn,), jnp.reshape(jnp.asarray(beta), (1,)), schedule)


def product_of_experts(score_fn1: ScoreFn, score_fn2: ScoreFn, schedule: Schedule) -> TermsFn:
  """Product ``q_t^1 q_t^2`` (arXiv 2503.02819, product weighted SDE): ``∇L = s_1 + s_2``,
  ``G = ∇·f + g² <s_1, s_2>``."""
  for name, fn in (("score_fn1", score_fn1), ("score_fn2", score_fn2)):
    if not callable(fn):
      raise TypeError(f"`{name}` must be a callable s(x, t) -> (N, d), got {type(fn).__name__}.")
  return product_of_powers((score_fn1, score_fn2), jnp.ones((2,)), schedule)


def classifier_free_guidance(score_uncond: ScoreFn, score_cond: ScoreFn, w: Any, schedule: Schedule) -> TermsFn:
  """Geometric average ``q_t^{u, 1-w} q_t^{c, w}``, the target of classifier-free guidance (arXiv 2503.02819,
  geometric-average weighted SDE): ``∇L = (1-w) s_u + w s_c`` (the usual CFG score),
  ``G = (g²/2) w(w-1)|s_c - s_u|²``.

  ``w = 0`` is the unconditional model, ``w = 1`` the conditional one (both constant weights).
  """
  w = jnp.asarray(w)
  if w.ndim != 0:
    raise ValueError(f"`w` must be a scalar guidance weight, got shape {w.shape}.")
  return product_of_powers((score_uncond, score_cond), jnp.stack([1.0 - w, w]), schedule)


def master_log_weight_rate(log_target: LogDensityFn, schedule: Schedule, x: jax.Array, t: jax.Array) -> FKCTerms:
  """The master formula for any differentiable ``L``, by automatic differentiation, at one point.

  ``G = ∂_τ L - ∇·f - <f, ∇L> + (g²/2)(ΔL + |∇L|²)`` with ``∂_τ = -∂_t``; ``ΔL`` is the trace of
  ``jax.hessian`` and ``∇·f`` the trace of the drift's Jacobian. Cost O(d²) per point: for small d, for targets
  that are not products of powers of marginals (time-varying β, reward tilts), and as the oracle of
  :func:`log_weight_rate`.

  Args:
    log_target: ``L(x (d,), t) -> scalar``, the unnormalised log target as a function of the forward time t.
    schedule: the forward process.
    x: ``(d,)`` one point.
    t: scalar forward time.

  Returns:
    :class:`FKCTerms` with ``score`` (d,) and a scalar ``log_weight_rate``.
  """
  _check_schedule(schedule)
  if not callable(log_target):
    raise TypeError(f"`log_target` must be a callable L(x (d,), t) -> scalar, got {type(log_target).__name__}.")
  if jnp.ndim(x) != 1:
    raise ValueError(f"`x` must be one point of shape (d,) (vmap over a batch), got shape {jnp.shape(x)}.")
  if jnp.ndim(t) != 0:
    raise ValueError(f"`t` must be a scalar forward time, got shape {jnp.shape(t)}.")
  grad = jax.grad(log_target)(x, t)
  laplacian = jnp.trace(jax.hessian(log_target)(x, t))
  d_tau = -jax.grad(log_target, argnums=1)(x, t)
  f = schedule.drift(x, t)
  div_f = jnp.trace(jax.jacfwd(schedule.drift)(x, t))
  g2 = schedule.diffusion_sq(t)
  rate = d_tau - div_f - jnp.dot(f, grad) + 0.5 * g2 * (laplacian + jnp.dot(grad, grad))
  return FKCTerms(score=grad, log_weight_rate=rate)


def from_log_density(log_target: LogDensityFn, schedule: Schedule) -> TermsFn:
  """The weighted SDE of any target path ``L(x, t)`` (single point in, scalar out) through the master formula."""
  _check_schedule(schedule)
  if not callable(log_target):
    raise TypeError(f"`log_target` must be a callable L(x (d,), t) -> scalar, got {type(log_target).__name__}.")

  def terms(x, t):
    t = jnp.asarray(t, dtype=x.dtype)
    return jax.vmap(master_log_weight_rate, in_axes=(None, None, 0, None))(log_target, schedule, x, t)

  return terms


def weighted_sde_drift(score: jax.Array, schedule: Schedule, x: jax.Array, t: jax.Array, noise: Any) -> jax.Array:
  """Drift in τ of the weighted SDE with noise level ``a``: ``-f_t(x) + (1 + a)/2 · g_t² ∇L(x)``."""
  _check_schedule(schedule)
  # A score of another shape would broadcast against x into a wrong drift.
  if jnp.shape(score) != jnp.shape(x):
    raise ValueError(f"`score` must have the shape of `x` {jnp.shape(x)}, got {jnp.shape(score)}.")
  a = _concrete_float(noise, "noise")
  if a is not None and not a >= 0.0:
    raise ValueError(f"`noise` (the noise level a) must be >= 0, got {a}.")
  return -schedule.drift(x, t) + 0.5 * (1.0 + noise) * schedule.diffusion_sq(t) * score


# ----------------------------------------------------------------------------------------------------------------
# The sampler, one step at a time.


# One step that spreads the log-weights by more than this many nats leaves a single particle (e^-50 ≈ 2e-22) and
# signals a step too coarse for the weights; FKCOutput.diverged reports it.
DIVERGENCE_LOG_WEIGHT_SPREAD = 50.0


class FKCState(NamedTuple):
  """State of the sampler between steps.

  Attributes:
    particles: ``(N, d)`` current particles.
    log_weights: ``(N,)`` unnormalised log-weights (0 after a resampling).
    log_normalizer: ``log Z`` accumulated so far: the initial value plus ``logsumexp(lw) - log N`` at every
      resampling. :func:`log_normalizer_estimate` adds the current weights' term to give the estimate of ``log Z``.
  """

  particles: jax.Array
  log_weights: jax.Array
  log_normalizer: jax.Array


class FKCInfo(NamedTuple):
  """What one :func:`step` did.

  Attributes:
    ess: effective sample size after the step's weight increment (before resampling).
    resampled: whether the step resampled.
    ancestors: ``(N,)`` the ancestor of each particle (``arange(N)`` where it did not resample).
    log_normalizer_increment: ``logsumexp(lw) - log N`` where it resampled, else 0.
    log_weight_spread: ``max - min`` over the particles of the step's log-weight increment ``h · G`` (NaN if any
      is not finite): how far one step moved the weights apart (see :data:`DIVERGENCE_LOG_WEIGHT_SPREAD`).
  """

  ess: jax.Array
  resampled: jax.Array
  ancestors: jax.Array
  log_normalizer_increment: jax.Array
  log_weight_spread: jax.Array


class FKCOutput(NamedTuple):
  """Result of :func:`sample`.

  Attributes:
    particles: ``(N, d)`` particles at ``t_min``.
    log_weights: ``(N,)`` unnormalised log-weights of ``particles`` (all 0 after a resampling at the last step).
      With ``reweight=False`` they stay at ``initial_log_weights``.
    log_normalizer: estimate of ``log Z`` of the target at ``t_min``: ``initial_log_normalizer`` plus the log mean
      weight at every resampling and at the end. Exact in expectation of ``Z`` (not of ``log Z``) as the step
      size goes to 0; meaningless with ``reweight=False``.
    ess: ``(num_steps,)`` effective sample size after each step's weight increment (before resampling).
    resampled: ``(num_steps,)`` whether the step resampled.
    log_weight_spread: ``(num_steps,)`` each step's :attr:`FKCInfo.log_weight_spread`.
    diverged: the run broke down: a particle, a log-weight or ``log Z`` is not finite, or one step spread the
      log-weights by more than :data:`DIVERGENCE_LOG_WEIGHT_SPREAD` nats (the discretisation is too coarse for
      the weights: take more steps). Its ``log_normalizer`` and particles are then not to be trusted.
  """

  particles: jax.Array
  log_weights: jax.Array
  log_normalizer: jax.Array
  ess: jax.Array
  resampled: jax.Array
  log_weight_spread: jax.Array
  diverged: jax.Array


def _concrete_float(value: Any, name: str) -> float | None:
  if isinstance(value, jax.core.Tracer):
    if jnp.ndim(value) != 0:
      raise ValueError(f"`{name}` must be a scalar, got shape {jnp.shape(value)}.")
    return None
  try:
    return float(value)
  except (TypeError, ValueError):
    raise TypeError(f"`{name}` must be a real scalar, got {value!r}.") from None


def _check_particles(particles: Any) -> jax.Array:
  particles = jnp.asarray(particles)
  if particles.ndim != 2:
    raise ValueError(f"`particles` must have shape (N, d), got {particles.shape}.")
  if not jnp.issubdtype(particles.dtype, jnp.floating):
    raise TypeError(f"`particles` must be a floating-point array, got dtype {particles.dtype}.")
  if particles.shape[0] < 1:
    raise ValueError(f"`particles` must hold at least one particle (N >= 1), got shape {particles.shape}.")
  return particles


def _check_step_args(
  terms_fn: Any, schedule: Any, particles: jax.Array, noise: Any, ess_threshold: Any, resampler: Any
) -> None:
  """Trace-time checks shared by :func:`step` and :func:`sample`."""
  _check_schedule(schedule)
  if not callable(terms_fn):
    raise TypeError(f"`terms_fn` must be a callable (x, t) -> FKCTerms, got {type(terms_fn).__name__}.")
  a = _concrete_float(noise, "noise")
  if a is not None and not a >= 0.0:
    raise ValueError(f"`noise` (the noise level a) must be >= 0, got {a}.")
  if not isinstance(ess_threshold, (int, float)) or isinstance(ess_threshold, bool) or not 0.0 <= ess_threshold <= 1.0:
    raise ValueError(f"`ess_threshold` must be a Python float in [0, 1] (a fraction of N), got {ess_threshold!r}.")
  resampling.check_resampler(resampler)
  n = particles.shape[0]
  probe = jax.eval_shape(terms_fn, particles, jnp.zeros((), particles.dtype))
  if not isinstance(probe, FKCTerms) or probe.score.shape != particles.shape or probe.log_weight_rate.shape != (n,):
    raise ValueError(
      f"`terms_fn` must return FKCTerms(score (N, d), log_weight_rate (N,)) for particles of shape "
      f"{particles.shape}, got {probe}."
    )


def init(
  particles: jax.Array,
  initial_log_weights: jax.Array | None = None,
  initial_log_normalizer: Any = 0.0,
) -> FKCState:
  """The sampler's state at ``t_max``: the start particles, their log-weights and the start's ``log Z``.

  Args:
    particles: ``(N, d)`` draws from the start distribution at ``t_max`` (e.g. :func:`gaussian_start`).
    initial_log_weights: ``(N,)`` importance log-weights of the start particles, ``L_{t_max}(x) - log p_start(x)``
      (None: zeros, i.e. the start distribution is taken to be ``π_{t_max}`` normalised).
    initial_log_normalizer: ``log Z`` of ``π_{t_max}`` when the start particles are exact draws from it, as from
      :func:`gaussian_start`; 0 with exact ``initial_log_weights``.

  Returns:
    :class:`FKCState`.

  >>> import jax, jax.numpy as jnp
  >>> state = init(jnp.zeros((4, 2)), initial_log_normalizer=-1.0)
  >>> print(state.log_weights.shape, float(state.log_normalizer))
  (4,) -1.0
  """
  particles = _check_particles(particles)
  n, dtype = particles.shape[0], particles.dtype
  lw0 = jnp.zeros((n,), dtype) if initial_log_weights is None else jnp.asarray(initial_log_weights, dtype)
  if lw0.shape != (n,):
    raise ValueError(f"`initial_log_weights` must have shape (N,) = ({n},), got {lw0.shape}.")
  return FKCState(particles=particles, log_weights=lw0, log_normalizer=jnp.asarray(initial_log_normalizer, dtype))


def step(
  key: jax.Array,
  state: FKCState,
  terms_fn: TermsFn,
  schedule: Schedule,
  *,
  t: Any,
  step_size: Any,
  noise: Any = 1.0,
  ess_threshold: float = 1.0,
  resampler: resampling.Resampler = resampling.systematic,
  reweight: bool = True,
) -> tuple[FKCState, FKCInfo]:
  """One step of Feynman-Kac corrector SMC from forward time ``t`` to ``t - step_size`` (arXiv 2503.02819).

  1. ``log w += h · G(x, t)`` (skipped with ``reweight=False``), ``h = step_size``;
  2. resample by ``resampler`` (``toolkit.smc.resampling.adaptive_resample``) if ESS < ``ess_threshold · N``
     (skipped with ``reweight=False`` or ``ess_threshold=0``);
  3. Euler–Maruyama: ``x ← x + h(-f + (1 + a)/2 g² ∇L) + √(a h) g ξ`` with ``a = noise``, the drift taken at the
     pre-step points (gathered with their particles when resampling).

  The key is split into a resampling key and a move key, in this order. Not jitted: jit it, or the loop that
  calls it (:func:`sample` is a ``lax.scan`` over it).

  Args:
    key: PRNG key of this step.
    state: :class:`FKCState` at time ``t``.
    terms_fn: ``(x (N, d), t) -> FKCTerms`` (see :func:`sample`).
    schedule: the forward process of the models.
    t: current forward time (scalar, may be traced).
    step_size: ``h > 0``, the decrease of ``t`` (scalar, may be traced).
    noise: the noise level ``a ≥ 0``.
    ess_threshold: resample when ESS < ess_threshold · N, a Python float in [0, 1] (static).
    resampler: a resampling function ``(key, weights, num_samples) -> indices`` (static), e.g.
      ``resampling.systematic``.
    reweight: integrate the weights (static; False: the uncorrected sampler).

  Returns:
    ``(state at t - step_size, FKCInfo)``.

  >>> import jax, jax.numpy as jnp
  >>> from toolkit.stats import gmm
  >>> schedule = VPSchedule()
  >>> terms = annealing(noised_gmm_score_fn(gmm.gaussian_mixture([1.0], [[1.0, 0.0]], [0.5]), schedule), 2.0,
  ...                   schedule)
  >>> state = init(gaussian_start(jax.random.key(0), 256, 2, 2.0).particles)
  >>> state, info = jax.jit(lambda k, s: step(k, s, terms, schedule, t=1.0, step_size=0.01))(
  ...     jax.random.key(1), state)
  >>> print(state.particles.shape, bool(info.resampled))
  (256, 2) True
  """
  x, lw = state.particles, state.log_weights
  _check_step_args(terms_fn, schedule, x, noise, ess_threshold, resampler)
  n, dtype = x.shape[0], x.dtype
  t, h, noise = jnp.asarray(t, dtype), jnp.asarray(step_size, dtype), jnp.asarray(noise, dtype)
  terms = terms_fn(x, t)
  if reweight:
    lw = lw + h * terms.log_weight_rate.astype(dtype)
  resample_key, move_key = jax.random.split(key)
  if reweight and ess_threshold > 0.0:
    res = resampling.adaptive_resample(resample_key, lw, ess_threshold=ess_threshold, resampler=resampler)
    # The drift is a function of the pre-step point: gather it with the particles instead of re-evaluating.
    x, score = x[res.ancestors], terms.score[res.ancestors]
  else:  # never resampling (or nothing to resample by): skip the resampler, which a select would still run
    res = resampling.AdaptiveResampling(jnp.arange(n), lw, jnp.array(False), jnp.zeros((), dtype), resampling.ess(lw))
    score = terms.score
  drift = weighted_sde_drift(score, schedule, x, t, noise)
  diffusion = jnp.sqrt(noise * h * schedule.diffusion_sq(t))
  x = x + h * drift + diffusion * jax.random.normal(move_key, x.shape, dtype)
  new_state = FKCState(
    particles=x,
    log_weights=res.log_weights,
    log_normalizer=state.log_normalizer + res.log_normalizer_increment,
  )
  increment = h * terms.log_weight_rate.astype(dtype)
  spread = jnp.where(jnp.all(jnp.isfinite(increment)), jnp.max(increment) - jnp.min(increment), jnp.nan)
  return new_state, FKCInfo(
    ess=res.ess,
    resampled=res.resampled,
    ancestors=res.ancestors,
    log_normalizer_increment=res.log_normalizer_increment,
    log_weight_spread=spread.astype(dtype),
  )


def log_normalizer_estimate(state: FKCState) -> jax.Array:
  """The estimate of ``log Z`` at the state's time: ``state.log_normalizer + logsumexp(lw) - log N``."""
  # An FKCOutput has the same fields, but its log_normalizer already is the estimate: adding its weights' term
  # again would count the last weights twice.
  if not isinstance(state, FKCState):
    raise TypeError(
      f"`state` must be an FKCState (from init or step), got {type(state).__name__}"
      + (" (its log_normalizer already is the estimate)." if isinstance(state, FKCOutput) else ".")
    )
  if jnp.ndim(state.log_weights) != 1:
    raise ValueError(f"`state.log_weights` must have shape (N,), got {jnp.shape(state.log_weights)}.")
  n = state.log_weights.shape[0]
  return state.log_normalizer + jax.nn.logsumexp(state.log_weights) - jnp.log(n)


def sample(
  key: jax.Array,
  particles: jax.Array,
  terms_fn: TermsFn,
  schedule: Schedule,
  *,
  num_steps: int,
  t_min: float = 1e-3,
  t_max: float = 1.0,
  noise: float = 1.0,
  ess_threshold: float = 1.0,
  resampler: resampling.Resampler = resampling.systematic,
  reweight: bool = True,
  initial_log_weights: jax.Array | None = None,
  initial_log_normalizer: Any = 0.0,
) -> FKCOutput:
  """Feynman-Kac corrector SMC: the weighted reverse SDE with resampling (arXiv 2503.02819).

  :func:`init`, then a ``lax.scan`` of ``num_steps`` :func:`step` s on the uniform grid
  ``t_k = t_max - k h``, ``h = (t_max - t_min) / num_steps``, with the key split into one key per step
  (``jax.random.split(key, num_steps)``). Each step:

  1. ``log w += h · G(x_k, t_k)`` (skipped with ``reweight=False``);
  2. resample if ESS < ``ess_threshold · N``: 1 resamples every step (the authors' setting), 0.5 is the usual
     adaptive rule, 0 never resamples (importance sampling);
  3. Euler–Maruyama: ``x_{k+1} = x_k + h(-f + (1 + a)/2 g² ∇L) + √(a h) g ξ`` with ``a = noise``.

  Step count: too few steps blow the weights up (annealing to β = 20 with 50 steps makes every particle NaN; β = 10
  gives log Z ≈ 5e15). The output's ``diverged`` flag and ``log_weight_spread`` report it; keep the spread of a
  step ≲ 1 nat. It grows like β²/``num_steps``: annealing a unit-scale mixture to β on the VP schedule needs about
  8β² steps (β = 2: 200 steps, spread 0.8; β = 10: 800, 2.0; β = 20: 3200, 1.0).

  With ``reweight=False`` this is the plain (unweighted, uncorrected) sampler of the same SDE, which never
  resamples: e.g. the annealed score ``β s`` or the CFG score ``(1-w) s_u + w s_c`` used directly, the "naive"
  baseline of the paper.

  Pure: a function of ``key`` and ``particles``; ``num_steps``, ``ess_threshold``, ``resampler`` and ``reweight``
  are static (shapes and control flow), everything else may be traced. Works under ``jit`` and ``vmap`` (over keys,
  particles, or traced parameters that ``terms_fn`` closes over).

  Args:
    key: PRNG key.
    particles: ``(N, d)`` draws from the start distribution at ``t_max`` (e.g. :func:`gaussian_start`).
    terms_fn: ``(x (N, d), t) -> FKCTerms``, e.g. :func:`annealing`, :func:`product_of_experts`,
      :func:`classifier_free_guidance`, :func:`product_of_powers` or :func:`from_log_density`.
    schedule: the forward process of the models.
    num_steps: number of Euler–Maruyama steps (static).
    t_min: final forward time (> 0: scores blow up at 0; the authors use 1e-3 for VP).
    t_max: initial forward time.
    noise: the noise level ``a ≥ 0`` (1: target-score SDE; 1/β: tempered-noise SDE; 0: probability-flow ODE).
    ess_threshold: resample when ESS < ess_threshold · N, in [0, 1].
    resampler: resampling function ``(key, weights, num_samples) -> indices``, e.g. ``resampling.systematic``
      (the authors' choice) or ``resampling.multinomial``.
    reweight: integrate the weights (False: the uncorrected sampler).
    initial_log_weights: ``(N,)`` importance log-weights of the start particles (see :func:`init`).
    initial_log_normalizer: added to the log Z estimate (see :func:`init`).

  Returns:
    :class:`FKCOutput`.

  >>> import jax
  >>> from toolkit.stats import gmm
  >>> schedule = VPSchedule()
  >>> data = gmm.gaussian_mixture([1.0], [[1.0, 0.0]], [0.5])
  >>> terms = annealing(noised_gmm_score_fn(data, schedule), 2.0, schedule)  # q^2 of N((1, 0), I/2)
  >>> start = gaussian_start(jax.random.key(0), 512, 2, 2.0)
  >>> out = sample(jax.random.key(1), start.particles, terms, schedule, num_steps=400,
  ...              initial_log_normalizer=start.log_normalizer)
  >>> exact = gmm.log_mass(gmm.power(noise_gmm(data, schedule, 1e-3), 2))
  >>> print(out.particles.shape, bool(abs(out.log_normalizer - exact) < 0.2))
  (512, 2) True
  """
  particles = _check_particles(particles)
  if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
    raise ValueError(f"`num_steps` must be a positive Python int (static), got {num_steps!r}.")
  lo, hi = _concrete_float(t_min, "t_min"), _concrete_float(t_max, "t_max")
  if lo is not None and hi is not None and not 0.0 <= lo < hi:
    raise ValueError(f"need 0 <= `t_min` < `t_max`, got t_min={lo}, t_max={hi}.")
  _check_step_args(terms_fn, schedule, particles, noise, ess_threshold, resampler)
  state = init(particles, initial_log_weights, initial_log_normalizer)
  dtype = particles.dtype
  t_min, t_max = jnp.asarray(t_min, dtype), jnp.asarray(t_max, dtype)
  h = (t_max - t_min) / num_steps
  noise = jnp.asarray(noise, dtype)

  def body(state, inputs):
    k, step_key = inputs
    state, info = step(
      step_key,
      state,
      terms_fn,
      schedule,
      t=t_max - k * h,
      step_size=h,
      noise=noise,
      ess_threshold=ess_threshold,
      resampler=resampler,
      reweight=reweight,
    )
    finite = jnp.all(jnp.isfinite(state.particles)) & jnp.all(jnp.isfinite(state.log_weights))
    return state, (info.ess, info.resampled, info.log_weight_spread, finite)

  keys = jax.random.split(key, num_steps)
  state, (ess, resampled, spread, finite) = jax.lax.scan(body, state, (jnp.arange(num_steps, dtype=dtype), keys))
  log_normalizer = log_normalizer_estimate(state)
  # A NaN spread fails both comparisons, so it is tested on its own.
  too_far = jnp.any(~(spread <= DIVERGENCE_LOG_WEIGHT_SPREAD)) if reweight else jnp.array(False)
  diverged = ~jnp.all(finite) | ~jnp.isfinite(log_normalizer) | too_far
  return FKCOutput(
    particles=state.particles,
    log_weights=state.log_weights,
    log_normalizer=log_normalizer,
    ess=ess,
    resampled=resampled,
    log_weight_spread=spread,
    diverged=diverged,
  )


class GaussianStart(NamedTuple):
  """Start particles and the log-normaliser of the start target (see :func:`gaussian_start`)."""

  particles: jax.Array
  log_normalizer: jax.Array


def gaussian_start(
  key: jax.Array, num_particles: int, dim: int, total_beta: Any = 1.0, scale: Any = 1.0, dtype=None
) -> GaussianStart:
  """Draws from ``π_{t_max} ∝ N(0, s² I)^B`` (the models' ``q_{t_max} ≈ N(0, s² I)``), i.e. ``N(0, s²/B I)``.

  With ``B = Σ_i β_i`` the start of annealing is ``N(0, I/β)``, of a product ``N(0, I/2)``, of guidance ``N(0, I)``
  (VP: ``s = 1``; VE: ``s = σ_max``). Also returns ``log ∫ N(x; 0, s² I)^B dx = (d/2)((1 - B) log 2πs² - log B)``,
  to pass to :func:`sample` as ``initial_log_normalizer``. The Gaussian approximation of ``q_{t_max}`` is the
  only error; for exact start weights pass ``initial_log_weights`` instead.
  """
  if not isinstance(num_particles, int) or num_particles < 1 or not isinstance(dim, int) or dim < 1:
    raise ValueError(f"`num_particles` and `dim` must be positive Python ints, got {num_particles!r}, {dim!r}.")
  b = _concrete_float(total_beta, "total_beta")
  if b is not None and not b > 0:
    raise ValueError(f"`total_beta` (Σ β_i) must be > 0 for a normalisable start, got {b}.")
  dtype = dtype or jnp.result_type(float)
  total_beta, scale = jnp.asarray(total_beta, dtype), jnp.asarray(scale, dtype)
  x = scale / jnp.sqrt(total_beta) * jax.random.normal(key, (num_particles, dim), dtype)
  log_z = 0.5 * dim * ((1.0 - total_beta) * jnp.log(2 * jnp.pi * scale**2) - jnp.log(total_beta))
  return GaussianStart(particles=x, log_normalizer=log_z)


# ----------------------------------------------------------------------------------------------------------------
# Gaussian-mixture data noised by a schedule: the exact scores and log-densities of the tests and experiment.


def _check_mixture(mixture: Any) -> None:
  for name in ("log_weights", "means", "covs"):
    if not hasattr(mixture, name):
      raise TypeError(
        f"`mixture` must be a GaussianMixture (toolkit.stats.gmm.gaussian_mixture), got {type(mixture).__name__}."
      )


def noise_gmm(mixture: gmm.GaussianMixture, schedule: Schedule, t: jax.Array) -> gmm.GaussianMixture:
  """The forward process's marginal ``q_t`` of data ``q_0 = mixture``: means ``α_t m_k``, covs ``α_t² C_k + σ_t² I``.

  Exact: noised mixtures solve the forward Fokker-Planck equation, which the score formula of
  :func:`log_weight_rate` relies on.

  >>> q = noise_gmm(gmm.gaussian_mixture([1.0], [[2.0]], [1.0]), VPSchedule(), 1.0)
  >>> print(round(float(q.covs[0, 0, 0]), 4))  # α² + σ² = 1 for VP
  1.0
  """
  _check_mixture(mixture)
  _check_schedule(schedule)
  # A vector t would broadcast against the means' last axis (silently, when its length is d).
  if jnp.ndim(t) != 0:
    raise ValueError(f"`t` must be a scalar forward time, got shape {jnp.shape(t)}.")
  return gmm.noised(mixture, schedule.alpha(t), schedule.sigma(t))


def noised_gmm_score_fn(mixture: gmm.GaussianMixture, schedule: Schedule) -> ScoreFn:
  """The exact score ``s(x, t) = ∇ log q_t(x)`` of a Gaussian-mixture data distribution, ``x`` of shape (N, d)."""
  _check_mixture(mixture)
  _check_schedule(schedule)
  return lambda x, t: gmm.score(noise_gmm(mixture, schedule, t), x)


def noised_gmm_log_density_fn(mixture: gmm.GaussianMixture, schedule: Schedule) -> LogDensityFn:
  """``log q_t(x)`` of the noised mixture, for one point ``x`` (d,) (for :func:`from_log_density`)."""
  _check_mixture(mixture)
  _check_schedule(schedule)
  return lambda x, t: gmm.log_density(noise_gmm(mixture, schedule, t), x)
