"""State-space models as small pytrees of pure functions, and the Kalman filter / RTS smoother oracle.

A hidden Markov model X_0 ~ χ_θ, X_{t+1} | X_t ~ m_θ(X_t, ·), Y_t | X_t ~ g_θ(X_t, ·) is a ``StateSpaceModel``:
its parameters ``params`` (any pytree, traced, differentiable) and three functions returning numpyro distributions
over a state vector (event shape ``(state_dim,)``) or an observation:

  initial(params) -> χ_θ,   transition(params, x_prev, t) -> m_θ(x_prev, ·),   observation(params, x, t) -> g_θ(x, ·)

Here ``t`` is the index of the new state (the transition from ``t - 1`` to ``t``). ``transition`` and ``observation``
must broadcast over leading batch axes of ``x_prev`` / ``x`` (write ``x @ A.T`` and ``x[..., 0]``, not ``A @ x`` and
``x[0]``): the O(N²) backward kernel evaluates all pairs as one batched distribution, which is ~25× faster on CPU
than a ``vmap`` over pairs of a multivariate normal. The functions are static fields
(hashable module-level functions), so a model is a valid ``jit`` argument and recompiles only when the functions
change. The helpers below vectorise the three densities over particles.

Models: ``linear_gaussian`` (with ``kalman_smoother`` as its exact oracle), ``stochastic_volatility`` and
``growth_model`` (Kitagawa's nonlinear benchmark).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
from flax import struct

from toolkit import _checks


@struct.dataclass
class StateSpaceModel:
  """A hidden Markov model: parameters plus functions returning numpyro distributions.

  Attributes:
    params: pytree of parameters θ (traced; gradients flow through them).
    initial: ``params -> Distribution`` over x_0, event shape ``(state_dim,)``.
    transition: ``(params, x_prev, t) -> Distribution`` over x_t given x_{t-1} = x_prev.
    observation: ``(params, x, t) -> Distribution`` over y_t given x_t = x.
    state_dim: dimension of the state.
    transition_log_bound: optional ``(params, t) -> scalar`` upper bound of ``log m_θ(x_prev, x)`` over both
      arguments; needed only by the accept-reject backward kernel.
    pairwise_transition_log_prob: optional ``(params, x_prev (M, d), x (N, d), t) -> (N, M)`` fast form of
      ``log m_θ(x_prev[l], x[i])`` for all pairs (the default evaluates the batched distribution).
  """

  params: Any
  initial: Callable[..., dist.Distribution] = struct.field(pytree_node=False)
  transition: Callable[..., dist.Distribution] = struct.field(pytree_node=False)
  observation: Callable[..., dist.Distribution] = struct.field(pytree_node=False)
  state_dim: int = struct.field(pytree_node=False)
  transition_log_bound: Callable[..., jax.Array] | None = struct.field(pytree_node=False, default=None)
  pairwise_transition_log_prob: Callable[..., jax.Array] | None = struct.field(pytree_node=False, default=None)


def _check_model(model: Any) -> None:
  if not isinstance(model, StateSpaceModel):
    raise TypeError(f"`model` must be a toolkit.smc.ssm.StateSpaceModel, got {type(model).__name__}.")


def _check_states(name: str, x: Any, state_dim: int, ndim: int | None = None) -> None:
  """``x`` must end in an axis of length ``state_dim`` (and have ``ndim`` axes when given): a state of another length
  broadcasts against the model's into a finite, meaningless density."""
  shape = jnp.shape(x)
  if shape[-1:] != (state_dim,) or (ndim is not None and len(shape) != ndim):
    expected = f"(n, {state_dim})" if ndim == 2 else f"(..., {state_dim})"
    raise ValueError(f"`{name}` must have shape {expected} (state_dim = {state_dim}), got {shape}.")


def init_sample(key: jax.Array, model: StateSpaceModel, n: int) -> jax.Array:
  """``n`` draws from χ_θ, shape (n, state_dim)."""
  _check_model(model)
  _checks.check_int(n, "n")
  return model.initial(model.params).sample(key, (n,))


def init_log_prob(model: StateSpaceModel, x: jax.Array) -> jax.Array:
  """log χ_θ(x) for x (..., state_dim)."""
  _check_model(model)
  _check_states("x", x, model.state_dim)
  return model.initial(model.params).log_prob(x)


def transition_sample(key: jax.Array, model: StateSpaceModel, x_prev: jax.Array, t) -> jax.Array:
  """One draw of x_t ~ m_θ(x_prev, ·) per row of ``x_prev`` (n, state_dim)."""
  _check_model(model)
  _check_states("x_prev", x_prev, model.state_dim)
  return model.transition(model.params, x_prev, t).sample(key)


def transition_log_prob(model: StateSpaceModel, x_prev: jax.Array, x: jax.Array, t) -> jax.Array:
  """log m_θ(x_prev, x) for one pair of states (state_dim,)."""
  _check_model(model)
  _check_states("x_prev", x_prev, model.state_dim)
  _check_states("x", x, model.state_dim)
  return model.transition(model.params, x_prev, t).log_prob(x)


def transition_log_prob_matrix(model: StateSpaceModel, x_prev: jax.Array, x: jax.Array, t) -> jax.Array:
  """``L[i, l] = log m_θ(x_prev[l], x[i])`` for all pairs: (n_new, n_prev). The O(N²) backward-kernel logits."""
  _check_model(model)
  _check_states("x_prev", x_prev, model.state_dim, ndim=2)
  _check_states("x", x, model.state_dim, ndim=2)
  if model.pairwise_transition_log_prob is not None:
    return model.pairwise_transition_log_prob(model.params, x_prev, x, t)
  return model.transition(model.params, x_prev, t).log_prob(x[:, None, :])


def observation_log_prob(model: StateSpaceModel, x: jax.Array, y: jax.Array, t) -> jax.Array:
  """log g_θ(x_i, y) for each row of ``x`` (n, state_dim): shape (n,)."""
  _check_model(model)
  _check_states("x", x, model.state_dim)
  g = model.observation(model.params, x, t)
  # One observation broadcasts against the law's (batch + event) shape without growing it; a y of another length
  # would broadcast into a finite, meaningless density (or a cryptic broadcasting error).
  shape = tuple(g.batch_shape) + tuple(g.event_shape)
  try:
    fits = np.broadcast_shapes(jnp.shape(y), shape) == shape
  except ValueError:
    fits = False
  if not fits:
    raise ValueError(
      f"`y` must be one observation, of shape {tuple(g.event_shape)} for this model, got shape {jnp.shape(y)}."
    )
  return g.log_prob(y)


def simulate(key: jax.Array, model: StateSpaceModel, num_steps: int) -> tuple[jax.Array, jax.Array]:
  """A trajectory ``xs`` (num_steps, state_dim) and observations ``ys`` (num_steps, ...) from the model."""
  if not isinstance(num_steps, int) or num_steps < 1:
    raise ValueError(f"`num_steps` must be a positive Python int, got {num_steps!r}.")
  key_x0, key_y0, key_scan = jax.random.split(key, 3)
  x0 = model.initial(model.params).sample(key_x0)
  y0 = model.observation(model.params, x0, 0).sample(key_y0)

  def step(x_prev, inputs):
    k, t = inputs
    kx, ky = jax.random.split(k)
    x = model.transition(model.params, x_prev, t).sample(kx)
    return x, (x, model.observation(model.params, x, t).sample(ky))

  ts = jnp.arange(1, num_steps)
  _, (xs, ys) = jax.lax.scan(step, x0, (jax.random.split(key_scan, num_steps - 1), ts))
  xs = jnp.concatenate([x0[None], xs])
  ys = jnp.concatenate([jnp.asarray(y0)[None], ys])
  return xs, ys


# ----------------------------------------------------------------------------------------------------------------
# Linear-Gaussian state-space model and its exact Kalman / RTS oracle.


class LinearGaussianParams(NamedTuple):
  """x_0 ~ N(m0, P0), x_t = A x_{t-1} + N(0, Q), y_t = C x_t + N(0, R)."""

  A: jax.Array
  Q: jax.Array
  C: jax.Array
  R: jax.Array
  m0: jax.Array
  P0: jax.Array


def _gaussian(mean, cov):
  # A 1×1 covariance (a static shape) gets an elementwise Normal: the same density, without the batched
  # triangular solve that makes MultivariateNormal ~100× slower per pair on CPU.
  if cov.shape == (1, 1):
    return dist.Normal(mean, jnp.sqrt(cov[0, 0])).to_event(1)
  return dist.MultivariateNormal(mean, covariance_matrix=cov)


def _lg_initial(p: LinearGaussianParams):
  return _gaussian(p.m0, p.P0)


def _lg_transition(p: LinearGaussianParams, x_prev, t):
  del t
  return _gaussian(x_prev @ p.A.T, p.Q)


def _lg_observation(p: LinearGaussianParams, x, t):
  del t
  return _gaussian(x @ p.C.T, p.R)


def _gaussian_log_bound(cov: jax.Array) -> jax.Array:
  """sup_x log N(x; m, cov) = -½ log det(2π cov)."""
  return -0.5 * jnp.linalg.slogdet(2.0 * jnp.pi * cov)[1]


def _lg_transition_log_bound(p: LinearGaussianParams, t):
  del t
  return _gaussian_log_bound(p.Q)


def _lg_pairwise_transition_log_prob(p: LinearGaussianParams, x_prev, x, t):
  """log N(x_i; A x_prev_l, Q) for all pairs by whitening once per point: |a − b|² = |a|² + |b|² − 2 a·b.

  XLA's CPU triangular solve over N² right-hand sides costs ~150× this (measured at N = 1000, d = 1).
  """
  del t
  chol = jnp.linalg.cholesky(p.Q)
  white = lambda v: jax.scipy.linalg.solve_triangular(chol, v.T, lower=True).T
  z_new, z_mean = white(x), white(x_prev @ p.A.T)
  sq = jnp.sum(z_new**2, -1)[:, None] + jnp.sum(z_mean**2, -1)[None, :] - 2.0 * z_new @ z_mean.T
  return -0.5 * jnp.maximum(sq, 0.0) + _gaussian_log_bound(p.Q)


def _as_matrix(name: str, value, rows: int | None, cols: int | None) -> jax.Array:
  arr = jnp.asarray(value)
  if jnp.issubdtype(arr.dtype, jnp.complexfloating):
    # The cast to a real dtype below would drop the imaginary part without a word.
    raise TypeError(f"`{name}` must be real, got dtype {arr.dtype}.")
  if not jnp.issubdtype(arr.dtype, jnp.floating):
    arr = arr.astype(jnp.result_type(float))
  if arr.ndim == 0:
    arr = arr.reshape(1, 1)
  if arr.ndim != 2 or (rows is not None and arr.shape[0] != rows) or (cols is not None and arr.shape[1] != cols):
    raise ValueError(
      f"`{name}` must be a ({rows}, {cols}) matrix (a scalar for a 1-D model), got shape {jnp.shape(value)}."
    )
  return arr


def _check_covariance(name: str, cov: jax.Array) -> None:
  """A concrete covariance must be symmetric positive semi-definite (a non-PSD Q gave a finite log-likelihood)."""
  if isinstance(cov, jax.core.Tracer):
    return
  c = np.asarray(cov, np.float64)
  scale = max(float(np.abs(c).max()), 1e-300)
  if not np.all(np.isfinite(c)) or np.abs(c - c.T).max() > 1e-5 * scale:
    raise ValueError(f"`{name}` must be a finite symmetric matrix (a covariance).")
  smallest = float(np.linalg.eigvalsh(c).min())
  if smallest < -1e-6 * scale:
    raise ValueError(f"`{name}` must be positive semi-definite (a covariance), got an eigenvalue of {smallest:.3g}.")


def linear_gaussian(A, Q, C, R, m0, P0) -> StateSpaceModel:
  """The linear-Gaussian SSM x_t = A x_{t-1} + N(0, Q), y_t = C x_t + N(0, R), x_0 ~ N(m0, P0).

  Scalars are accepted for a one-dimensional model. Shapes: A, Q, P0 (d, d); C (p, d); R (p, p); m0 (d,).
  """
  A = _as_matrix("A", A, None, None)
  d = A.shape[0]
  A = _as_matrix("A", A, d, d)
  Q = _as_matrix("Q", Q, d, d)
  C = _as_matrix("C", C, None, d)
  R = _as_matrix("R", R, C.shape[0], C.shape[0])
  P0 = _as_matrix("P0", P0, d, d)
  for name, cov in (("Q", Q), ("R", R), ("P0", P0)):
    _check_covariance(name, cov)
  m0 = jnp.atleast_1d(jnp.asarray(m0, dtype=A.dtype))
  if m0.shape != (d,):
    raise ValueError(f"`m0` must have shape ({d},), got {m0.shape}.")
  return StateSpaceModel(
    params=LinearGaussianParams(A, Q, C, R, m0, P0),
    initial=_lg_initial,
    transition=_lg_transition,
    observation=_lg_observation,
    state_dim=d,
    transition_log_bound=_lg_transition_log_bound,
    pairwise_transition_log_prob=_lg_pairwise_transition_log_prob,
  )


class KalmanOutput(NamedTuple):
  """Exact filtering and smoothing of a linear-Gaussian SSM.

  Attributes:
    log_likelihood: log p(y_{0:n}).
    filtered_means, filtered_covs: (T, d), (T, d, d): moments of x_t | y_{0:t}.
    predicted_means, predicted_covs: moments of x_t | y_{0:t-1} (the prior at t = 0).
    smoothed_means, smoothed_covs: (T, d), (T, d, d): moments of x_t | y_{0:n}.
    smoothed_cross_covs: (T - 1, d, d): Cov(x_t, x_{t+1} | y_{0:n}) = J_t P_{t+1|n}.
  """

  log_likelihood: jax.Array
  filtered_means: jax.Array
  filtered_covs: jax.Array
  predicted_means: jax.Array
  predicted_covs: jax.Array
  smoothed_means: jax.Array
  smoothed_covs: jax.Array
  smoothed_cross_covs: jax.Array


def _check_linear_gaussian(model) -> LinearGaussianParams:
  if not isinstance(model, StateSpaceModel) or not isinstance(model.params, LinearGaussianParams):
    raise TypeError("`model` must be a linear-Gaussian StateSpaceModel (from toolkit.smc.ssm.linear_gaussian).")
  return model.params


def _observations_2d(ys: jax.Array, obs_dim: int) -> jax.Array:
  ys = jnp.asarray(ys)
  if ys.ndim == 1 and obs_dim == 1:
    ys = ys[:, None]
  if ys.ndim != 2 or ys.shape[1] != obs_dim:
    raise ValueError(f"`ys` must have shape (T, {obs_dim}), got {ys.shape}.")
  return ys


def kalman_filter(model: StateSpaceModel, ys: jax.Array):
  """Kalman filter (Joseph-form update, stable in float32). Returns (log-likelihood, filtered, predicted moments)."""
  p = _check_linear_gaussian(model)
  ys = _observations_2d(ys, p.C.shape[0])
  eye = jnp.eye(p.A.shape[0], dtype=p.A.dtype)

  def update(m_pred, P_pred, y):
    S = p.C @ P_pred @ p.C.T + p.R
    S = 0.5 * (S + S.T)
    chol = jnp.linalg.cholesky(S)
    gain = jax.scipy.linalg.cho_solve((chol, True), p.C @ P_pred).T
    resid = y - p.C @ m_pred
    loglik = dist.MultivariateNormal(p.C @ m_pred, scale_tril=chol).log_prob(y)
    m = m_pred + gain @ resid
    IKC = eye - gain @ p.C
    P = IKC @ P_pred @ IKC.T + gain @ p.R @ gain.T
    return m, 0.5 * (P + P.T), loglik

  def step(carry, y):
    m, P = carry
    m_pred = p.A @ m
    P_pred = p.A @ P @ p.A.T + p.Q
    m_f, P_f, ll = update(m_pred, P_pred, y)
    return (m_f, P_f), (m_f, P_f, m_pred, P_pred, ll)

  m0f, P0f, ll0 = update(p.m0, p.P0, ys[0])
  _, (ms, Ps, mps, Pps, lls) = jax.lax.scan(step, (m0f, P0f), ys[1:])
  cat = lambda first, rest: jnp.concatenate([first[None], rest])
  return (ll0 + jnp.sum(lls), cat(m0f, ms), cat(P0f, Ps), cat(p.m0, mps), cat(p.P0, Pps))


def kalman_smoother(model: StateSpaceModel, ys: jax.Array) -> KalmanOutput:
  """Kalman filter and Rauch–Tung–Striebel smoother, with the lag-one smoothed covariances.

  RTS: J_t = P_{t|t} Aᵀ P_{t+1|t}⁻¹, m_{t|n} = m_{t|t} + J_t (m_{t+1|n} − m_{t+1|t}),
  P_{t|n} = P_{t|t} + J_t (P_{t+1|n} − P_{t+1|t}) J_tᵀ, and Cov(x_t, x_{t+1} | y) = J_t P_{t+1|n}.
  """
  p = _check_linear_gaussian(model)
  loglik, ms, Ps, mps, Pps = kalman_filter(model, ys)

  def back(carry, inputs):
    m_next_s, P_next_s = carry
    m_f, P_f, m_next_p, P_next_p = inputs
    gain = jnp.linalg.solve(P_next_p, p.A @ P_f).T  # J = P_f Aᵀ P_pred⁻¹ (P_pred symmetric)
    m_s = m_f + gain @ (m_next_s - m_next_p)
    P_s = P_f + gain @ (P_next_s - P_next_p) @ gain.T
    cross = gain @ P_next_s
    return (m_s, 0.5 * (P_s + P_s.T)), (m_s, P_s, cross)

  _, (m_sm, P_sm, cross) = jax.lax.scan(back, (ms[-1], Ps[-1]), (ms[:-1], Ps[:-1], mps[1:], Pps[1:]), reverse=True)
  m_sm = jnp.concatenate([m_sm, ms[-1:]])
  P_sm = jnp.concatenate([P_sm, Ps[-1:]])
  return KalmanOutput(loglik, ms, Ps, mps, Pps, m_sm, P_sm, cross)


# ----------------------------------------------------------------------------------------------------------------
# Stochastic volatility.


class StochasticVolatilityParams(NamedTuple):
  """x_0 ~ N(μ, σ²/(1−φ²)), x_t = μ + φ (x_{t−1} − μ) + σ ε_t, y_t ~ N(0, exp(x_t))."""

  mu: jax.Array
  phi: jax.Array
  sigma: jax.Array


def _sv_initial(p: StochasticVolatilityParams):
  scale = p.sigma / jnp.sqrt(1.0 - p.phi**2)
  return dist.Normal(jnp.reshape(p.mu, (1,)), jnp.reshape(scale, (1,))).to_event(1)


def _sv_transition(p: StochasticVolatilityParams, x_prev, t):
  del t
  return dist.Normal(p.mu + p.phi * (x_prev - p.mu), p.sigma).to_event(1)


def _sv_observation(p: StochasticVolatilityParams, x, t):
  del t
  return dist.Normal(0.0, jnp.exp(0.5 * x[..., 0]))


def _sv_transition_log_bound(p: StochasticVolatilityParams, t):
  del t
  return -0.5 * jnp.log(2.0 * jnp.pi * p.sigma**2)


def _check_concrete_params(**params) -> None:
  # Traced parameters (a learned θ under grad or jit) cannot be checked here.
  for name, (value, expected, ok) in params.items():
    if isinstance(value, jax.core.Tracer):
      continue
    v = np.asarray(value, dtype=float)
    if v.ndim != 0 or not np.isfinite(v) or not (ok(float(v)) if ok else float(v) > 0):
      raise ValueError(f"`{name}` must be a finite scalar {expected}, got {value!r}.")


def stochastic_volatility(mu=-1.0, phi=0.9, sigma=0.3) -> StateSpaceModel:
  """The basic stochastic-volatility model (log-variance an AR(1)); |phi| < 1, sigma > 0. Scalar observations."""
  _check_concrete_params(phi=(phi, "in (-1, 1) (a stationary AR(1))", lambda v: abs(v) < 1), sigma=(sigma, "> 0", None))
  f = lambda v: jnp.asarray(v, dtype=jnp.result_type(float))
  return StateSpaceModel(
    params=StochasticVolatilityParams(f(mu), f(phi), f(sigma)),
    initial=_sv_initial,
    transition=_sv_transition,
    observation=_sv_observation,
    state_dim=1,
    transition_log_bound=_sv_transition_log_bound,
  )


# ----------------------------------------------------------------------------------------------------------------
# Kitagawa's nonlinear growth model.


class GrowthParams(NamedTuple):
  """x_t = x/2 + 25 x/(1 + x²) + 8 cos(1.2 t) + N(0, q), y_t = x_t²/20 + N(0, r), x_0 ~ N(0, p0)."""

  q: jax.Array
  r: jax.Array
  p0: jax.Array


def _growth_initial(p: GrowthParams):
  return dist.Normal(jnp.zeros((1,), p.p0.dtype), jnp.sqrt(p.p0) * jnp.ones((1,), p.p0.dtype)).to_event(1)


def _growth_transition(p: GrowthParams, x_prev, t):
  mean = 0.5 * x_prev + 25.0 * x_prev / (1.0 + x_prev**2) + 8.0 * jnp.cos(1.2 * t)
  return dist.Normal(mean, jnp.sqrt(p.q)).to_event(1)


def _growth_observation(p: GrowthParams, x, t):
  del t
  return dist.Normal(x[..., 0] ** 2 / 20.0, jnp.sqrt(p.r))


def _growth_transition_log_bound(p: GrowthParams, t):
  del t
  return -0.5 * jnp.log(2.0 * jnp.pi * p.q)


def growth_model(q=10.0, r=1.0, p0=5.0) -> StateSpaceModel:
  """Kitagawa's (1996) univariate nonlinear growth model, a standard bimodal-filtering benchmark."""
  _check_concrete_params(q=(q, "> 0 (a variance)", None), r=(r, "> 0 (a variance)", None), p0=(p0, "> 0", None))
  f = lambda v: jnp.asarray(v, dtype=jnp.result_type(float))
  return StateSpaceModel(
    params=GrowthParams(f(q), f(r), f(p0)),
    initial=_growth_initial,
    transition=_growth_transition,
    observation=_growth_observation,
    state_dim=1,
    transition_log_bound=_growth_transition_log_bound,
  )


def kalman_mle(
  model_fn: Callable[[Any], StateSpaceModel],
  ys: jax.Array,
  theta0: Any,
  *,
  num_iterations: int = 80,
) -> tuple[Any, jax.Array]:
  """The exact maximum-likelihood θ of a linear-Gaussian model family: L-BFGS (optax) on the Kalman likelihood.

  ``model_fn(theta)`` must build a ``linear_gaussian`` model. Returns (θ̂, log p_θ̂(y)); the oracle that
  particle-based learning is compared against.
  """
  nll = lambda th: -kalman_filter(model_fn(th), ys)[0]
  opt = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(nll)

  @jax.jit
  def step(theta, state):
    value, grad = value_and_grad(theta, state=state)
    updates, state = opt.update(grad, state, theta, value=value, grad=grad, value_fn=nll)
    return optax.apply_updates(theta, updates), state

  if isinstance(num_iterations, bool) or not isinstance(num_iterations, int | np.integer) or num_iterations < 0:
    raise ValueError(f"`num_iterations` must be an int >= 0, got {num_iterations!r}.")
  theta, state = theta0, opt.init(theta0)
  for _ in range(num_iterations):
    theta, state = step(theta, state)
  return theta, -nll(theta)
