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

Master formula (the paper's weighted SDEs, derived from the Feynman-Kac formula for the PDE that ``π_τ`` solves;
``smc.md`` §2.2 re-derives it). For any noise level ``a ≥ 0`` simulate

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

SMC (:func:`sample`): Euler–Maruyama on a uniform grid of ``t`` from ``t_max`` down to ``t_min``, the increment
``h · G`` at the pre-step state (as the authors), and systematic resampling after every increment (the authors'
choice, ``resample_threshold=1``) or when the ESS falls below ``resample_threshold · N``. The product of the mean
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

The module also holds the closed-form pieces used by the tests and the experiment: Gaussian mixtures noised by
the forward process (:func:`noise_gmm`), their products and integer powers, and the Gaussian geometric mean.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from toolkit.smc import resampling

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
      raise TypeError(f"`schedule` must be a VPSchedule or VESchedule (or have .{name}), got "
                      f"{type(schedule).__name__}.")


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


def log_weight_rate(scores: jax.Array, betas: jax.Array, schedule: Schedule, x: jax.Array,
                    t: jax.Array) -> FKCTerms:
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
  scores = jnp.asarray(scores)
  if scores.ndim != 3 or scores.shape[1:] != jnp.shape(x):
    raise ValueError(f"`scores` must have shape (K, N, d) with (N, d) = {jnp.shape(x)} (x's shape), "
                     f"got {scores.shape}.")
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
  return product_of_powers((score_fn,), jnp.reshape(jnp.asarray(beta), (1,)), schedule)


def product_of_experts(score_fn1: ScoreFn, score_fn2: ScoreFn, schedule: Schedule) -> TermsFn:
  """Product ``q_t^1 q_t^2`` (arXiv 2503.02819, product weighted SDE): ``∇L = s_1 + s_2``,
  ``G = ∇·f + g² <s_1, s_2>``."""
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
  return -schedule.drift(x, t) + 0.5 * (1.0 + noise) * schedule.diffusion_sq(t) * score


# ----------------------------------------------------------------------------------------------------------------
# The sampler.


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
  """

  particles: jax.Array
  log_weights: jax.Array
  log_normalizer: jax.Array
  ess: jax.Array
  resampled: jax.Array


def _concrete_float(value: Any, name: str) -> float | None:
  if isinstance(value, jax.core.Tracer):
    if jnp.ndim(value) != 0:
      raise ValueError(f"`{name}` must be a scalar, got shape {jnp.shape(value)}.")
    return None
  try:
    return float(value)
  except (TypeError, ValueError):
    raise TypeError(f"`{name}` must be a real scalar, got {value!r}.") from None


def sample(key: jax.Array, particles: jax.Array, terms_fn: TermsFn, schedule: Schedule, *, num_steps: int,
           t_min: float = 1e-3, t_max: float = 1.0, noise: float = 1.0, resample_threshold: float = 1.0,
           scheme: str | resampling.Resampler = "systematic", reweight: bool = True,
           initial_log_weights: jax.Array | None = None, initial_log_normalizer: Any = 0.0) -> FKCOutput:
  """Feynman-Kac corrector SMC: the weighted reverse SDE with resampling (arXiv 2503.02819).

  Each of the ``num_steps`` steps, at ``t_k = t_max - k h``, ``h = (t_max - t_min) / num_steps``:

  1. ``log w += h · G(x_k, t_k)`` (skipped with ``reweight=False``);
  2. resample (``toolkit.smc.resampling.adaptive_resample``) if ESS < ``resample_threshold · N``: 1 resamples
     every step (the authors' setting), 0.5 is the usual adaptive rule, 0 never resamples (importance sampling);
  3. Euler–Maruyama: ``x_{k+1} = x_k + h(-f + (1 + a)/2 g² ∇L) + √(a h) g ξ`` with ``a = noise``.

  With ``reweight=False`` this is the plain (unweighted, uncorrected) sampler of the same SDE, which never
  resamples: e.g. the annealed score ``β s`` or the CFG score ``(1-w) s_u + w s_c`` used directly, the "naive"
  baseline of the paper.

  Pure: a function of ``key`` and ``particles``; ``num_steps``, ``scheme`` and ``reweight`` are static (shapes and
  control flow), everything else may be traced. Works under ``jit`` and ``vmap`` (over keys, particles, or
  traced parameters that ``terms_fn`` closes over).

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
    resample_threshold: resample when ESS < threshold · N, in [0, 1].
    scheme: resampling scheme name or function ``(key, weights, n) -> indices``.
    reweight: integrate the weights (False: the uncorrected sampler).
    initial_log_weights: ``(N,)`` importance log-weights of the start particles, ``L_{t_max}(x) - log p_start(x)``
      (None: zeros, i.e. the start distribution is taken to be ``π_{t_max}`` normalised).
    initial_log_normalizer: added to the log Z estimate (``log Z`` of ``π_{t_max}`` when the start particles are
      exact draws from it, as from :func:`gaussian_start`; 0 with exact ``initial_log_weights``).

  Returns:
    :class:`FKCOutput`.
  """
  _check_schedule(schedule)
  if not callable(terms_fn):
    raise TypeError(f"`terms_fn` must be a callable (x, t) -> FKCTerms, got {type(terms_fn).__name__}.")
  particles = jnp.asarray(particles)
  if particles.ndim != 2:
    raise ValueError(f"`particles` must have shape (N, d), got {particles.shape}.")
  if not jnp.issubdtype(particles.dtype, jnp.floating):
    raise TypeError(f"`particles` must be a floating-point array, got dtype {particles.dtype}.")
  if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
    raise ValueError(f"`num_steps` must be a positive Python int (static), got {num_steps!r}.")
  lo, hi = _concrete_float(t_min, "t_min"), _concrete_float(t_max, "t_max")
  if lo is not None and hi is not None and not 0.0 <= lo < hi:
    raise ValueError(f"need 0 <= `t_min` < `t_max`, got t_min={lo}, t_max={hi}.")
  a = _concrete_float(noise, "noise")
  if a is not None and not a >= 0.0:
    raise ValueError(f"`noise` (the noise level a) must be >= 0, got {a}.")
  if not isinstance(resample_threshold, (int, float)) or not 0.0 <= resample_threshold <= 1.0:
    raise ValueError(f"`resample_threshold` must be a Python float in [0, 1] (a fraction of N), got "
                     f"{resample_threshold!r}.")
  resampler = resampling.SCHEMES[scheme] if isinstance(scheme, str) else resampling.check_resampler(scheme)
  n, dtype = particles.shape[0], particles.dtype
  lw0 = jnp.zeros((n,), dtype) if initial_log_weights is None else jnp.asarray(initial_log_weights, dtype)
  if lw0.shape != (n,):
    raise ValueError(f"`initial_log_weights` must have shape (N,) = ({n},), got {lw0.shape}.")
  probe = jax.eval_shape(terms_fn, particles, jnp.zeros((), dtype))
  if not isinstance(probe, FKCTerms) or probe.score.shape != particles.shape or probe.log_weight_rate.shape != (n,):
    raise ValueError(f"`terms_fn` must return FKCTerms(score (N, d), log_weight_rate (N,)) for particles of shape "
                     f"{particles.shape}, got {probe}.")

  t_min, t_max = jnp.asarray(t_min, dtype), jnp.asarray(t_max, dtype)
  h = (t_max - t_min) / num_steps
  noise = jnp.asarray(noise, dtype)

  def step(carry, inputs):
    x, lw, log_z = carry
    k, step_key = inputs
    t = t_max - k * h
    terms = terms_fn(x, t)
    if reweight:
      lw = lw + h * terms.log_weight_rate.astype(dtype)
    resample_key, move_key = jax.random.split(step_key)
    if reweight and resample_threshold > 0.0:
      res = resampling.adaptive_resample(resample_key, lw, ess_threshold=resample_threshold, resampler=resampler)
      # The drift is a function of the pre-step point: gather it with the particles instead of re-evaluating.
      x, score = x[res.ancestors], terms.score[res.ancestors]
    else:  # never resampling (or nothing to resample by): skip the resampler, which a select would still run
      res = resampling.AdaptiveResampling(jnp.arange(n), lw, jnp.array(False), jnp.zeros((), dtype),
                                          resampling.ess(lw))
      score = terms.score
    drift = weighted_sde_drift(score, schedule, x, t, noise)
    diffusion = jnp.sqrt(noise * h * schedule.diffusion_sq(t))
    x = x + h * drift + diffusion * jax.random.normal(move_key, x.shape, dtype)
    return (x, res.log_weights, log_z + res.log_normalizer_increment), (res.ess, res.resampled)

  keys = jax.random.split(key, num_steps)
  init = (particles, lw0, jnp.asarray(initial_log_normalizer, dtype))
  (x, lw, log_z), (ess, resampled) = jax.lax.scan(step, init, (jnp.arange(num_steps, dtype=dtype), keys))
  log_z = log_z + jax.nn.logsumexp(lw) - jnp.log(n)
  return FKCOutput(particles=x, log_weights=lw, log_normalizer=log_z, ess=ess, resampled=resampled)


class GaussianStart(NamedTuple):
  """Start particles and the log-normaliser of the start target (see :func:`gaussian_start`)."""

  particles: jax.Array
  log_normalizer: jax.Array


def gaussian_start(key: jax.Array, num_particles: int, dim: int, total_beta: Any = 1.0, scale: Any = 1.0,
                   dtype=None) -> GaussianStart:
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


@jax.jit
def weighted_moments(particles: jax.Array, log_weights: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Self-normalised mean ``(d,)`` and covariance ``(d, d)`` of weighted particles."""
  w = jnp.exp(resampling.normalize_log_weights(log_weights))
  mean = w @ particles
  centred = particles - mean
  return mean, (w[:, None] * centred).T @ centred


# ----------------------------------------------------------------------------------------------------------------
# Gaussian mixtures: noised marginals, scores, and the exact products, powers and geometric means of the oracles.


class GaussianMixture(NamedTuple):
  """An unnormalised mixture ``Σ_k exp(log_weights_k) N(x; means_k, covs_k)``; its mass is ``Σ_k exp(log_weights_k)``.

  Attributes:
    log_weights: ``(K,)``.
    means: ``(K, d)``.
    covs: ``(K, d, d)``.
  """

  log_weights: jax.Array
  means: jax.Array
  covs: jax.Array


def gaussian_mixture(weights: Any, means: Any, covs: Any) -> GaussianMixture:
  """Builds a :class:`GaussianMixture` from weights (K,), means (K, d) and covariances (K, d, d), (K, d) or (K,)."""
  means = jnp.asarray(means, dtype=jnp.result_type(float))
  if means.ndim != 2:
    raise ValueError(f"`means` must have shape (K, d), got {means.shape}.")
  k, d = means.shape
  weights = jnp.asarray(weights, means.dtype)
  if weights.shape != (k,):
    raise ValueError(f"`weights` must have shape (K,) = ({k},), got {weights.shape}.")
  covs = jnp.asarray(covs, means.dtype)
  if covs.shape == (k,):
    covs = covs[:, None, None] * jnp.eye(d, dtype=means.dtype)
  elif covs.shape == (k, d):
    covs = jax.vmap(jnp.diag)(covs)
  elif covs.shape != (k, d, d):
    raise ValueError(f"`covs` must have shape (K, d, d), (K, d) or (K,) with K = {k}, d = {d}, got {covs.shape}.")
  return GaussianMixture(jnp.log(weights), means, covs)


def _gaussian_log_density(x, mean, cov):
  """``log N(x; mean, cov)`` for one point (used where a single pair is needed, e.g. product weights)."""
  d = mean.shape[-1]
  chol = jnp.linalg.cholesky(cov)
  z = jax.scipy.linalg.solve_triangular(chol, x - mean, lower=True)
  return -0.5 * (jnp.sum(z**2) + d * jnp.log(2 * jnp.pi)) - jnp.sum(jnp.log(jnp.diag(chol)))


def _component_terms(mixture: GaussianMixture, x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Log joint ``log w_k + log N(x; m_k, C_k)`` (M, K) and ``C_k⁻¹(m_k - x)`` (M, K, d) for x (M, d).

  One Cholesky factor per component, shared by all points: factorising per point made the sampler's score
  evaluation ~100× slower.
  """
  d = mixture.means.shape[-1]
  chol = jnp.linalg.cholesky(mixture.covs)  # (K, d, d)
  prec = jax.vmap(lambda c: jax.scipy.linalg.cho_solve((c, True), jnp.eye(d, dtype=c.dtype)))(chol)
  diff = mixture.means[None, :, :] - x[:, None, :]  # (M, K, d)
  prec_diff = jnp.einsum("kij,mkj->mki", prec, diff)
  half_log_det = jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
  log_joint = (mixture.log_weights - half_log_det - 0.5 * d * jnp.log(2 * jnp.pi)
               - 0.5 * jnp.sum(diff * prec_diff, axis=-1))
  return log_joint, prec_diff


@jax.jit
def gmm_log_density(mixture: GaussianMixture, x: jax.Array) -> jax.Array:
  """``log Σ_k w_k N(x; m_k, C_k)`` for ``x`` of shape ``(..., d)``."""
  x = jnp.asarray(x)
  log_joint, _ = _component_terms(mixture, x.reshape(-1, x.shape[-1]))
  return jax.nn.logsumexp(log_joint, axis=-1).reshape(x.shape[:-1])


@jax.jit
def gmm_score(mixture: GaussianMixture, x: jax.Array) -> jax.Array:
  """``∇ log q(x) = Σ_k r_k(x) C_k⁻¹(m_k - x)``, ``r = softmax_k(log w_k + log N(x; m_k, C_k))``, for x (..., d)."""
  x = jnp.asarray(x)
  log_joint, prec_diff = _component_terms(mixture, x.reshape(-1, x.shape[-1]))
  resp = jax.nn.softmax(log_joint, axis=-1)
  return jnp.einsum("mk,mki->mi", resp, prec_diff).reshape(x.shape)


def gmm_log_mass(mixture: GaussianMixture) -> jax.Array:
  """``log ∫ q = logsumexp(log_weights)``: the exact log-normaliser of an unnormalised mixture."""
  return jax.nn.logsumexp(mixture.log_weights)


@jax.jit
def gmm_moments(mixture: GaussianMixture) -> tuple[jax.Array, jax.Array]:
  """Mean ``(d,)`` and covariance ``(d, d)`` of the normalised mixture."""
  p = jax.nn.softmax(mixture.log_weights)
  mean = p @ mixture.means
  centred = mixture.means - mean
  return mean, jnp.einsum("k,kij->ij", p, mixture.covs) + (p[:, None] * centred).T @ centred


def gmm_sample(key: jax.Array, mixture: GaussianMixture, num_samples: int) -> jax.Array:
  """``(num_samples, d)`` i.i.d. draws from the normalised mixture."""
  k_comp, k_noise = jax.random.split(key)
  comp = jax.random.categorical(k_comp, mixture.log_weights, shape=(num_samples,))
  chol = jnp.linalg.cholesky(mixture.covs)[comp]
  z = jax.random.normal(k_noise, mixture.means[comp].shape, mixture.means.dtype)
  return mixture.means[comp] + jnp.einsum("nij,nj->ni", chol, z)


def noise_gmm(mixture: GaussianMixture, schedule: Schedule, t: jax.Array) -> GaussianMixture:
  """The forward process's marginal ``q_t`` of data ``q_0 = mixture``: means ``α_t m_k``, covs ``α_t² C_k + σ_t² I``.

  Exact: noised mixtures solve the forward Fokker-Planck equation, which the score formula of
  :func:`log_weight_rate` relies on.
  """
  alpha, sigma = schedule.alpha(t), schedule.sigma(t)
  d = mixture.means.shape[-1]
  return GaussianMixture(mixture.log_weights, alpha * mixture.means,
                         alpha**2 * mixture.covs + sigma**2 * jnp.eye(d, dtype=mixture.means.dtype))


def noised_gmm_score_fn(mixture: GaussianMixture, schedule: Schedule) -> ScoreFn:
  """The exact score ``s(x, t) = ∇ log q_t(x)`` of a Gaussian-mixture data distribution, ``x`` of shape (N, d)."""
  return lambda x, t: gmm_score(noise_gmm(mixture, schedule, t), x)


def noised_gmm_log_density_fn(mixture: GaussianMixture, schedule: Schedule) -> LogDensityFn:
  """``log q_t(x)`` of the noised mixture, for one point ``x`` (d,) (for :func:`from_log_density`)."""
  return lambda x, t: gmm_log_density(noise_gmm(mixture, schedule, t), x)


@jax.jit
def gmm_product(mixture1: GaussianMixture, mixture2: GaussianMixture) -> GaussianMixture:
  """The exact product ``q^1 q^2`` as an unnormalised mixture of ``K1 K2`` components.

  ``N(x; a, A) N(x; b, B) = N(a; b, A + B) N(x; c, C)``, ``C = (A⁻¹ + B⁻¹)⁻¹``, ``c = C(A⁻¹a + B⁻¹b)``; the mass of
  the result is ``∫ q^1 q^2``.
  """

  def pair(a, cov_a, b, cov_b):
    prec_a, prec_b = jnp.linalg.inv(cov_a), jnp.linalg.inv(cov_b)
    cov = jnp.linalg.inv(prec_a + prec_b)
    cov = 0.5 * (cov + cov.T)
    return _gaussian_log_density(a, b, cov_a + cov_b), cov @ (prec_a @ a + prec_b @ b), cov

  pairs = jax.vmap(jax.vmap(pair, (None, None, 0, 0)), (0, 0, None, None))
  log_scale, means, covs = pairs(mixture1.means, mixture1.covs, mixture2.means, mixture2.covs)
  log_w = mixture1.log_weights[:, None] + mixture2.log_weights[None, :] + log_scale
  d = mixture1.means.shape[-1]
  return GaussianMixture(log_w.reshape(-1), means.reshape(-1, d), covs.reshape(-1, d, d))


@functools.partial(jax.jit, static_argnames="beta")
def gmm_power(mixture: GaussianMixture, beta: int) -> GaussianMixture:
  """The exact ``q^β`` for a positive integer β (static), a mixture of ``K^β`` components."""
  if not isinstance(beta, int) or isinstance(beta, bool) or beta < 1:
    raise ValueError(f"`beta` must be a positive Python int for the closed-form power, got {beta!r}.")
  out = mixture
  for _ in range(beta - 1):
    out = gmm_product(out, mixture)
  return out


class GaussianGeometricMean(NamedTuple):
  """``N(x; m_u, C_u)^{1-w} N(x; m_c, C_c)^w = exp(log_normalizer) N(x; mean, cov)``."""

  log_normalizer: jax.Array
  mean: jax.Array
  cov: jax.Array


@jax.jit
def gaussian_geometric_mean(mean_u: jax.Array, cov_u: jax.Array, mean_c: jax.Array, cov_c: jax.Array,
                            w: Any) -> GaussianGeometricMean:
  """Exact geometric mean of two Gaussians (the CFG target for Gaussian models; ``smc.md`` §3.4).

  Precision ``P = (1-w)C_u⁻¹ + w C_c⁻¹`` (must be positive definite), mean ``m = P⁻¹((1-w)C_u⁻¹m_u + w C_c⁻¹m_c)``,
  ``log Z = -½[(1-w)(log|2πC_u| + m_uᵀC_u⁻¹m_u) + w(log|2πC_c| + m_cᵀC_c⁻¹m_c)] + ½[log|2πP⁻¹| + mᵀPm]``.
  """
  prec_u, prec_c = jnp.linalg.inv(cov_u), jnp.linalg.inv(cov_c)
  prec = (1.0 - w) * prec_u + w * prec_c
  cov = jnp.linalg.inv(prec)
  mean = cov @ ((1.0 - w) * prec_u @ mean_u + w * prec_c @ mean_c)

  def log_det_2pi(c):
    return jnp.linalg.slogdet(2 * jnp.pi * c)[1]

  log_z = -0.5 * ((1.0 - w) * (log_det_2pi(cov_u) + mean_u @ prec_u @ mean_u)
                  + w * (log_det_2pi(cov_c) + mean_c @ prec_c @ mean_c)) + 0.5 * (log_det_2pi(cov) + mean @ prec @ mean)
  return GaussianGeometricMean(log_normalizer=log_z, mean=mean, cov=cov)
