r"""Light Schrödinger Bridge (LightSB): a Gaussian-mixture Schrödinger bridge solver in closed form.

Korotin, Gushchin, Burnaev. "Light Schrödinger Bridge", ICLR 2024, arXiv 2310.01174 (code: ngushchin/LightSB).

Conventions (the paper's): the Schrödinger bridge between p0 and p1 with the Wiener prior ``dX = √ε dW`` is the
entropic OT problem with cost ``½‖x - y‖²`` and coefficient ε. ott-jax's ``SqEuclidean`` has no ½: the same
problem in ott needs ``epsilon = 2ε``.

The optimal plan is ``π*(y|x) = exp(<x, y>/ε) v*(y) / c*(x)`` (paper, Sec. 3) with the *adjusted
Schrödinger potential* v*. LightSB parameterises it as a Gaussian mixture, θ = {α_k, r_k, S_k}, k = 1..K
(paper, Sec. 3):

  v_θ(y) = Σ_k α_k N(y | r_k, ε S_k),
  c_θ(x) = Σ_k α_k exp((xᵀ S_k x + 2 r_kᵀ x) / (2ε)),
  π_θ(y|x) = Σ_k w_k(x) N(y | r_k + S_k x, ε S_k),   w_k(x) ∝ α_k exp((xᵀ S_k x + 2 r_kᵀ x) / (2ε)),

and learns θ by minimising ``L(θ) = E_{p0} log c_θ(x0) - E_{p1} log v_θ(x1)``, which equals
``KL(π* ‖ π_θ)`` up to a constant (paper, Sec. 3 and Algorithm 1). The bridge's drift is in closed form too
(paper, Sec. 3), so the SDE can be simulated, and its marginals sampled through a Brownian bridge.

Parameterisation of S_k (``LightSBParams``): ``S_k = L_k L_kᵀ`` with ``L_k = tril(s_lower_k, -1) +
diag(exp(log_s_k / 2))``. With ``s_lower = None`` the S_k are diagonal, ``S_k = diag(exp(log_s_k))`` (the
paper's default); otherwise full. The authors store ``ε log α`` as the trainable weight (``log_alpha_raw``);
:func:`fit` does the same internally, so the paper's learning rates carry over.

The exact oracles it is tested against live apart from the method: the closed-form Gaussian bridge and the
Gaussian-mixture benchmark of Gushchin et al. 2023 in ``toolkit.ot.benchmarks``, its metrics (cBW-UVP, ...) in
``toolkit.ot.metrics``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy as jsp
import numpy as np
import optax

from toolkit.ot._checks import check_count, check_epsilon, check_points, is_tracer
from toolkit.stats import gmm

Sampler = Callable[[jax.Array, int], jax.Array]  # (key, n) -> (n, d) samples

# Adam's learning rate of :func:`fit` when no optimiser is given.
DEFAULT_LEARNING_RATE = 1e-2


# ----------------------------------------------------------------------------------------------------------------
# Parameters and input checks.


class LightSBParams(NamedTuple):
  """Parameters θ = {α_k, r_k, S_k} of the Gaussian-mixture adjusted potential (arXiv 2310.01174, Sec. 3).

  Attributes:
    log_alpha: ``(K,)`` log mixture weights log α_k (unnormalised: the loss and the plan do not depend on a
      common shift).
    r: ``(K, d)`` component means r_k of v_θ.
    log_s: ``(K, d)`` log of the squared diagonal of the Cholesky factor L_k of S_k; for diagonal S_k these
      are ``log diag(S_k)``.
    s_lower: ``(K, d, d)`` strictly lower triangle of L_k (the rest is ignored), or ``None`` for diagonal S_k.
  """

  log_alpha: jax.Array
  r: jax.Array
  log_s: jax.Array
  s_lower: jax.Array | None = None

  @property
  def num_components(self) -> int:
    return self.r.shape[0]

  @property
  def dim(self) -> int:
    return self.r.shape[1]

  @property
  def diagonal(self) -> bool:
    return self.s_lower is None


def _check_params(params: Any) -> None:
  if not isinstance(params, LightSBParams):
    raise TypeError(f"`params` must be a LightSBParams, got {type(params).__name__}.")
  if jnp.ndim(params.r) != 2:
    raise ValueError(f"params.r must have shape (K, d), got {jnp.shape(params.r)}.")
  k, d = jnp.shape(params.r)
  if jnp.shape(params.log_alpha) != (k,):
    raise ValueError(f"params.log_alpha must have shape (K,) = ({k},), got {jnp.shape(params.log_alpha)}.")
  if jnp.shape(params.log_s) != (k, d):
    raise ValueError(f"params.log_s must have shape (K, d) = ({k}, {d}), got {jnp.shape(params.log_s)}.")
  if params.s_lower is not None and jnp.shape(params.s_lower) != (k, d, d):
    raise ValueError(
      f"params.s_lower must be None or have shape (K, d, d) = ({k}, {d}, {d}), got {jnp.shape(params.s_lower)}."
    )


def _check_time(t: Any, *, include_one: bool) -> None:
  """A scalar time in [0, 1] (or [0, 1) unless ``include_one``); its value is checked when concrete."""
  if jnp.ndim(t) != 0:
    raise ValueError(f"`t` must be a scalar time, got shape {jnp.shape(t)}.")
  if is_tracer(t):
    return
  try:
    value = float(np.asarray(t))
  except (TypeError, ValueError):
    raise TypeError(f"`t` must be a scalar time, got {t!r}.") from None
  if not (0.0 <= value <= 1.0 and (include_one or value < 1.0)):
    interval = "[0, 1]" if include_one else "[0, 1)"
    raise ValueError(f"`t` must lie in {interval} (a bridge time), got {value}.")


# ----------------------------------------------------------------------------------------------------------------
# S_k and the mixture's pieces.


def scale_tril(params: LightSBParams) -> jax.Array:
  """``(K, d, d)`` Cholesky factors L_k of S_k (``S_k = L_k L_kᵀ``)."""
  _check_params(params)
  diag = jnp.exp(0.5 * params.log_s)
  eye = jnp.eye(params.dim, dtype=diag.dtype)
  lower = 0.0 if params.s_lower is None else jnp.tril(params.s_lower, -1)
  return lower + diag[:, :, None] * eye


def s_matrices(params: LightSBParams) -> jax.Array:
  """``(K, d, d)`` the matrices S_k of v_θ (``ε S_k`` is the covariance of the k-th component of v_θ)."""
  _check_params(params)
  if params.diagonal:
    return jnp.exp(params.log_s)[:, :, None] * jnp.eye(params.dim, dtype=params.log_s.dtype)
  chol = scale_tril(params)
  return chol @ jnp.swapaxes(chol, -1, -2)


def _quad_s(params: LightSBParams, x: jax.Array) -> jax.Array:
  """``(..., K)``: xᵀ S_k x."""
  if params.diagonal:
    return jnp.einsum("...d,kd->...k", x * x, jnp.exp(params.log_s))
  lt_x = jnp.einsum("kij,...i->...kj", scale_tril(params), x)  # L_kᵀ x
  return jnp.sum(lt_x * lt_x, axis=-1)


def _s_times(params: LightSBParams, x: jax.Array) -> jax.Array:
  """``(..., K, d)``: S_k x."""
  if params.diagonal:
    return jnp.exp(params.log_s) * x[..., None, :]
  chol = scale_tril(params)
  lt_x = jnp.einsum("kij,...i->...kj", chol, x)
  return jnp.einsum("kij,...kj->...ki", chol, lt_x)


def _mahalanobis(params: LightSBParams, y: jax.Array) -> jax.Array:
  """``(..., K)``: (y - r_k)ᵀ S_k⁻¹ (y - r_k)."""
  diff = y[..., None, :] - params.r  # (..., K, d)
  if params.diagonal:
    return jnp.sum(diff * diff * jnp.exp(-params.log_s), axis=-1)
  k, d = params.r.shape
  batch_shape = diff.shape[:-2]
  rhs = jnp.moveaxis(diff.reshape((-1, k, d)), 0, -1)  # (K, d, N)
  sol = jsp.linalg.solve_triangular(scale_tril(params), rhs, lower=True)
  return jnp.moveaxis(jnp.sum(sol * sol, axis=-2), -1, 0).reshape(batch_shape + (k,))


def _log_c_terms(params: LightSBParams, x: jax.Array, epsilon) -> jax.Array:
  """``(..., K)``: log α_k + (xᵀ S_k x + 2 r_kᵀ x) / (2ε)."""
  return params.log_alpha + (_quad_s(params, x) + 2.0 * x @ params.r.T) / (2.0 * epsilon)


# ----------------------------------------------------------------------------------------------------------------
# The potentials, the plan and the loss.


def init_params(
  key: jax.Array,
  x1_samples: jax.Array | Sampler,
  num_components: int,
  *,
  epsilon: float,
  diagonal: bool = True,
  s_init: float = 0.1,
) -> LightSBParams:
  """Initial θ as in the authors' code: α_k = 1/K, r_k = K target samples (INIT_BY_SAMPLES), S_k = s_init·I.

  Args:
    key: PRNG key (picks the target samples).
    x1_samples: ``(n, d)`` target samples, or a sampler ``(key, n) -> (n, d)``.
    num_components: K.
    epsilon: ε (checked; the initial θ itself does not depend on it).
    diagonal: diagonal S_k (the paper's default) or full ones.
    s_init: the initial S_k = s_init·I (authors: 0.1 by default; 1.0 on the EOT benchmark).

  Returns:
    ``LightSBParams`` with ``s_lower = None`` when ``diagonal`` else zeros.
  """
  check_count(num_components, "num_components")
  check_epsilon(epsilon)
  if not s_init > 0:
    raise ValueError(f"`s_init` must be > 0, got {s_init!r}.")
  if callable(x1_samples):
    r = jnp.asarray(x1_samples(key, num_components))
    if r.ndim != 2 or r.shape[0] != num_components:
      raise ValueError(f"the sampler `x1_samples` must return (n, d) samples, got shape {r.shape}.")
  else:
    x1_samples = jnp.asarray(x1_samples)
    if x1_samples.ndim != 2 or x1_samples.shape[0] < 1:
      raise ValueError(f"`x1_samples` must have shape (n, d) with n >= 1, got {x1_samples.shape}.")
    n = x1_samples.shape[0]
    idx = jax.random.choice(key, n, (num_components,), replace=num_components > n)
    r = x1_samples[idx]
  dtype = r.dtype if jnp.issubdtype(r.dtype, jnp.floating) else jnp.float32
  r = r.astype(dtype)
  k, d = r.shape
  log_alpha = jnp.full((k,), -math.log(k), dtype)
  log_s = jnp.full((k, d), math.log(s_init), dtype)
  s_lower = None if diagonal else jnp.zeros((k, d, d), dtype)
  return LightSBParams(log_alpha, r, log_s, s_lower)


def log_c(params: LightSBParams, x: jax.Array, epsilon) -> jax.Array:
  """log c_θ(x) = logsumexp_k [log α_k + (xᵀ S_k x + 2 r_kᵀ x)/(2ε)] (arXiv 2310.01174, Sec. 3).

  Args:
    params: θ.
    x: ``(..., d)`` source points.
    epsilon: ε.

  Returns:
    ``(...,)``.
  """
  _check_params(params)
  check_epsilon(epsilon)
  x = check_points(x, params.dim, "x")
  return jsp.special.logsumexp(_log_c_terms(params, x, epsilon), axis=-1)


def log_v(params: LightSBParams, y: jax.Array, epsilon) -> jax.Array:
  """log v_θ(y) = log Σ_k α_k N(y | r_k, ε S_k) (arXiv 2310.01174, Sec. 3).

  Args:
    params: θ.
    y: ``(..., d)`` target points.
    epsilon: ε.

  Returns:
    ``(...,)``.
  """
  _check_params(params)
  check_epsilon(epsilon)
  y = check_points(y, params.dim, "y")
  d = params.dim
  log_norm = -0.5 * d * jnp.log(2.0 * jnp.pi * epsilon) - 0.5 * jnp.sum(params.log_s, axis=-1)  # (K,)
  log_comp = log_norm - 0.5 * _mahalanobis(params, y) / epsilon
  return jsp.special.logsumexp(params.log_alpha + log_comp, axis=-1)


def loss(params: LightSBParams, x0: jax.Array, x1: jax.Array, epsilon) -> jax.Array:
  """L̂(θ) = mean log c_θ(x0) - mean log v_θ(x1) (arXiv 2310.01174, Algorithm 1).

  Equals ``KL(π* ‖ π_θ)`` up to a θ-free constant in expectation. Invariant to ``log_alpha + const``.

  Args:
    params: θ.
    x0: ``(n, d)`` source samples.
    x1: ``(m, d)`` target samples (independent of x0).
    epsilon: ε.
  """
  return jnp.mean(log_c(params, x0, epsilon)) - jnp.mean(log_v(params, x1, epsilon))


def plan_log_weights(params: LightSBParams, x: jax.Array, epsilon) -> jax.Array:
  """``(..., K)`` normalised log w_k(x) of the conditional plan π_θ(·|x) (arXiv 2310.01174, Sec. 3)."""
  _check_params(params)
  check_epsilon(epsilon)
  x = check_points(x, params.dim, "x")
  return jax.nn.log_softmax(_log_c_terms(params, x, epsilon), axis=-1)


def plan_component_means(params: LightSBParams, x: jax.Array) -> jax.Array:
  """``(..., K, d)`` means r_k + S_k x of the components of π_θ(·|x)."""
  _check_params(params)
  x = check_points(x, params.dim, "x")
  return params.r + _s_times(params, x)


def plan_component_covs(params: LightSBParams, epsilon) -> jax.Array:
  """``(K, d, d)`` covariances ε S_k of the components of π_θ(·|x) (they do not depend on x)."""
  check_epsilon(epsilon)
  return epsilon * s_matrices(params)


def plan_mean(params: LightSBParams, x: jax.Array, epsilon) -> jax.Array:
  """``(..., d)`` E_{π_θ}[y | x] = Σ_k w_k(x) (r_k + S_k x)."""
  w = jnp.exp(plan_log_weights(params, x, epsilon))
  return jnp.einsum("...k,...kd->...d", w, plan_component_means(params, x))


def plan_cov(params: LightSBParams, x: jax.Array, epsilon) -> jax.Array:
  """``(..., d, d)`` Cov_{π_θ}[y | x] = Σ_k w_k (ε S_k + m_k m_kᵀ) - m mᵀ (the mixture's covariance)."""
  return gmm.mixture_moments(
    plan_log_weights(params, x, epsilon),
    plan_component_means(params, x),
    plan_component_covs(params, epsilon),
  )[1]


def sample_plan(
  key: jax.Array, params: LightSBParams, x: jax.Array, epsilon, num_samples: int | None = None
) -> jax.Array:
  """Samples y ~ π_θ(·|x) = Σ_k w_k(x) N(r_k + S_k x, ε S_k) (arXiv 2310.01174, Sec. 3).

  Args:
    key: PRNG key.
    params: θ.
    x: ``(..., d)`` source points.
    epsilon: ε.
    num_samples: ``None``: one y per x, shape ``(..., d)``; an int n: ``(..., n, d)`` samples per x.

  Returns:
    The samples.
  """
  _check_params(params)
  check_epsilon(epsilon)
  x = check_points(x, params.dim, "x")
  if num_samples is not None:
    if not isinstance(num_samples, int) or num_samples < 1:
      raise ValueError(f"`num_samples` must be None or an int >= 1, got {num_samples!r}.")
    x = jnp.broadcast_to(x[..., None, :], x.shape[:-1] + (num_samples, x.shape[-1]))
  k_comp, k_noise = jax.random.split(key)
  logits = _log_c_terms(params, x, epsilon)
  comp = jax.random.categorical(k_comp, logits, axis=-1)  # (...,)
  noise = jax.random.normal(k_noise, x.shape, x.dtype)
  if params.diagonal:
    mean = params.r[comp] + jnp.exp(params.log_s)[comp] * x
    return mean + jnp.sqrt(epsilon) * jnp.exp(0.5 * params.log_s)[comp] * noise
  chol = scale_tril(params)[comp]  # (..., d, d)
  lt_x = jnp.einsum("...ij,...i->...j", chol, x)
  mean = params.r[comp] + jnp.einsum("...ij,...j->...i", chol, lt_x)
  return mean + jnp.sqrt(epsilon) * jnp.einsum("...ij,...j->...i", chol, noise)


# ----------------------------------------------------------------------------------------------------------------
# The drift, the SDE and the Brownian-bridge shortcut.


class _Eigen(NamedTuple):
  """S_k = U_k diag(lam_k) U_kᵀ, and rho_k = U_kᵀ r_k (U = None: diagonal S_k, U_k = I)."""

  log_alpha: jax.Array
  lam: jax.Array
  u: jax.Array | None
  rho: jax.Array


def _eigen(params: LightSBParams) -> _Eigen:
  if params.diagonal:
    return _Eigen(params.log_alpha, jnp.exp(params.log_s), None, params.r)
  lam, u = jnp.linalg.eigh(s_matrices(params))
  return _Eigen(params.log_alpha, lam, u, jnp.einsum("kij,ki->kj", u, params.r))


def _rotate(eig: _Eigen, x: jax.Array) -> jax.Array:
  """``(K, d)``: U_kᵀ x for one point x of shape (d,)."""
  if eig.u is None:
    return jnp.broadcast_to(x, eig.rho.shape)
  return jnp.einsum("kij,i->kj", eig.u, x)


def _phi(eig: _Eigen, x: jax.Array, t, epsilon) -> jax.Array:
  """h(x, t) - ‖x‖²/(2ε(1-t)) up to an x-free constant: the drift is ε ∇φ, finite for t in [0, 1].

  With q = tλ + (1 - t), z = Uᵀx and ρ = Uᵀr (per component, elementwise in the eigenbasis of S_k):
    φ(x, t) = logsumexp_k [log α_k - ½ Σ log q + Σ (z²(λ - 1) + 2zρ - tρ²) / (2ε q)].
  """
  q = t * eig.lam + (1.0 - t)
  z = _rotate(eig, x)
  quad = (z * z * (eig.lam - 1.0) + 2.0 * z * eig.rho - t * eig.rho * eig.rho) / q
  terms = eig.log_alpha - 0.5 * jnp.sum(jnp.log(q), -1) + jnp.sum(quad, -1) / (2.0 * epsilon)
  return jsp.special.logsumexp(terms)


def _log_h(eig: _Eigen, x: jax.Array, t, epsilon) -> jax.Array:
  """The paper's h(x, t) for one point (arXiv 2310.01174, Sec. 3), up to an x-free constant."""
  a = t / (epsilon * (1.0 - t))
  inv_eps_lam = 1.0 / (epsilon * eig.lam)
  a_diag = a + inv_eps_lam  # eigenvalues of A_k(t) = t/(ε(1-t)) I + (ε S_k)⁻¹
  c = _rotate(eig, x) / (epsilon * (1.0 - t)) + eig.rho * inv_eps_lam  # U_kᵀ c_k(x, t)
  terms = (
    eig.log_alpha
    - 0.5 * jnp.sum(jnp.log(eig.lam), -1)
    - 0.5 * jnp.sum(jnp.log(a_diag), -1)
    - 0.5 * jnp.sum(eig.rho * eig.rho / eig.lam, -1) / epsilon
    + 0.5 * jnp.sum(c * c / a_diag, -1)
  )
  return jsp.special.logsumexp(terms)


def log_h(params: LightSBParams, x: jax.Array, t, epsilon) -> jax.Array:
  """The paper's h_θ(x, t), with g_θ(x, t) = -x/(1-t) + ε ∇_x h_θ(x, t), for t in [0, 1).

  h(x, t) = logsumexp_k [log α_k - ½ log det S_k - ½ log det A_k(t) - r_kᵀ S_k⁻¹ r_k/(2ε)
  + ½ c_kᵀ A_k(t)⁻¹ c_k], A_k(t) = t/(ε(1-t)) I + (ε S_k)⁻¹, c_k = x/(ε(1-t)) + (ε S_k)⁻¹ r_k
  (arXiv 2310.01174, Sec. 3; the authors' ``get_drift``; up to an x-free constant). It grows like ‖x‖²/(2ε(1-t))
  as t → 1; the drift itself is computed from a cancellation-free form (see :func:`drift`).

  Args:
    params: θ.
    x: ``(d,)`` one point.
    t: time in [0, 1).
    epsilon: ε.
  """
  _check_params(params)
  check_epsilon(epsilon)
  x = check_points(x, params.dim, "x")
  if x.ndim != 1:
    raise ValueError(f"`x` must be one point of shape (d,), got {x.shape}; vmap over points.")
  # At t = 1, A_k(t) has an infinite t/(ε(1 - t)): h is inf or NaN (the drift stays finite, see `drift`).
  _check_time(t, include_one=False)
  return _log_h(_eigen(params), x, t, epsilon)


def _drift_eig(eig: _Eigen, x: jax.Array, t, epsilon) -> jax.Array:
  grad = jax.grad(_phi, argnums=1)
  flat = x.reshape((-1, x.shape[-1]))
  out = jax.vmap(lambda xi: epsilon * grad(eig, xi, t, epsilon))(flat)
  return out.reshape(x.shape)


def drift(params: LightSBParams, x: jax.Array, t, epsilon) -> jax.Array:
  """The drift g_θ(x, t) of the LightSB bridge ``dX = g_θ(X, t) dt + √ε dW`` (arXiv 2310.01174, Sec. 3).

  g_θ(x, t) = -x/(1-t) + ε ∇_x h_θ(x, t) (:func:`log_h`). The two terms cancel at leading order as t → 1; here
  the drift is ε ∇_x φ(x, t) with φ = h - ‖x‖²/(2ε(1-t)) written without the cancellation (per component, in the
  eigenbasis of S_k, q = tλ + 1 - t):

    φ(x, t) = logsumexp_k [log α_k - ½ Σ log q + Σ (z²(λ - 1) + 2zρ - tρ²) / (2ε q)],   z = U_kᵀ x, ρ = U_kᵀ r_k,

  so it is finite on [0, 1] (at t = 1 it is x + ε ∇ log v_θ(x)); ∇φ by ``jax.grad``. At t = 0 it equals
  E_{π_θ}[y|x] - x. Full S_k are diagonalised once (``eigh``).

  Args:
    params: θ.
    x: ``(..., d)`` points.
    t: scalar time in [0, 1].
    epsilon: ε.

  Returns:
    ``(..., d)``.
  """
  _check_params(params)
  check_epsilon(epsilon)
  x = check_points(x, params.dim, "x")
  # t > 1 made q = tλ + 1 - t negative (a NaN drift); an array t broadcast against the components.
  _check_time(t, include_one=True)
  return _drift_eig(_eigen(params), x, t, epsilon)


class LightSBPath(NamedTuple):
  """Output of :func:`sample_sde`.

  Attributes:
    final: ``(..., d)`` X_1.
    trajectory: ``(num_steps + 1, ..., d)`` X at ``times`` (X_0 first), or ``None`` unless requested.
    times: ``(num_steps + 1,)`` the grid 0, dt, ..., 1.
  """

  final: jax.Array
  trajectory: jax.Array | None
  times: jax.Array


def sample_sde(
  key: jax.Array,
  params: LightSBParams,
  x0: jax.Array,
  epsilon,
  num_steps: int = 100,
  return_trajectory: bool = False,
) -> LightSBPath:
  """Euler–Maruyama for ``dX = g_θ(X, t) dt + √ε dW`` from X_0 = x0 (arXiv 2310.01174, Sec. 3).

  ``X_{n+1} = X_n + g_θ(X_n, n dt) dt + √(ε dt) ξ_n``, n = 0..N-1: the drift is evaluated at t = 0, dt, ...,
  1 - dt (never at t = 1, where the paper's form of it is singular), as in the authors' code.

  Args:
    key: PRNG key.
    params: θ.
    x0: ``(..., d)`` starting points.
    epsilon: ε.
    num_steps: N (static).
    return_trajectory: also return every X_n (static).
  """
  _check_params(params)
  check_epsilon(epsilon)
  x0 = check_points(x0, params.dim, "x0")
  if not isinstance(num_steps, int) or num_steps < 1:
    raise ValueError(f"`num_steps` must be an int >= 1, got {num_steps!r}.")
  eig = _eigen(params)
  dt = 1.0 / num_steps
  times = jnp.linspace(0.0, 1.0, num_steps + 1, dtype=x0.dtype)

  def step(x, inputs):
    t, k = inputs
    noise = jax.random.normal(k, x.shape, x.dtype)
    x = x + _drift_eig(eig, x, t, epsilon) * dt + jnp.sqrt(epsilon * dt) * noise
    return x, (x if return_trajectory else None)

  keys = jax.random.split(key, num_steps)
  final, path = jax.lax.scan(step, x0, (times[:-1], keys))
  trajectory = jnp.concatenate([x0[None], path], axis=0) if return_trajectory else None
  return LightSBPath(final, trajectory, times)


def sample_bridge(key: jax.Array, params: LightSBParams, x0: jax.Array, t, epsilon) -> jax.Array:
  """X_t of the LightSB bridge by the Brownian-bridge shortcut (arXiv 2310.01174, Sec. 3).

  y ~ π_θ(·|x0), then ``X_t = t y + (1 - t) x0 + √(t(1 - t) ε) ξ``.

  Args:
    key: PRNG key.
    params: θ.
    x0: ``(..., d)`` starting points.
    t: time in [0, 1], a scalar or an array broadcastable to ``x0.shape[:-1]``.
    epsilon: ε.

  A concrete ``t`` outside [0, 1] is refused (the bridge's variance t(1 - t)ε would be negative: NaN samples).
  """
  if not isinstance(t, jax.core.Tracer):
    t_values = np.asarray(t)  # numpy: jnp reductions of a closed-over constant are traced under jit
    if t_values.size and not np.all((t_values >= 0) & (t_values <= 1)):
      raise ValueError(f"`t` must lie in [0, 1] (a bridge time), got values in [{t_values.min()}, {t_values.max()}].")
  k_plan, k_noise = jax.random.split(key)
  y = sample_plan(k_plan, params, x0, epsilon)
  t = jnp.asarray(t, x0.dtype)[..., None]
  noise = jax.random.normal(k_noise, y.shape, y.dtype)
  return t * y + (1.0 - t) * x0 + jnp.sqrt(t * (1.0 - t) * epsilon) * noise


# ----------------------------------------------------------------------------------------------------------------
# Training.


class LightSBFit(NamedTuple):
  """Output of :func:`fit`: the learned θ and the minibatch loss L̂(θ) of every step, ``(num_steps,)``."""

  params: LightSBParams
  losses: jax.Array


def _as_sampler(data: jax.Array | Sampler, name: str) -> tuple[Sampler, int]:
  if callable(data):
    shape = jax.eval_shape(lambda k: data(k, 2), jax.random.key(0)).shape
    if len(shape) != 2 or shape[0] != 2:
      raise ValueError(f"the sampler `{name}` must return (n, d) samples, got shape {shape} for n = 2.")
    return data, shape[1]
  data = jnp.asarray(data)
  if data.ndim != 2 or data.shape[0] < 1:
    raise ValueError(
      f"`{name}` must have shape (n, d) with n >= 1, or be a sampler (key, n) -> (n, d); got shape {data.shape}."
    )
  if not jnp.issubdtype(data.dtype, jnp.floating):
    raise TypeError(f"`{name}` must be a floating-point array, got dtype {data.dtype}.")

  def sample(key, n):
    return data[jax.random.randint(key, (n,), 0, data.shape[0])]

  return sample, data.shape[1]


def _check_optimizer(optimizer: Any) -> optax.GradientTransformation:
  if optimizer is None:
    return optax.adam(DEFAULT_LEARNING_RATE)
  if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
    raise TypeError(f"`optimizer` must be an optax GradientTransformation, got {type(optimizer).__name__}.")
  return optimizer


def fit(
  key: jax.Array,
  x0: jax.Array | Sampler,
  x1: jax.Array | Sampler,
  *,
  epsilon: float,
  num_components: int,
  diagonal: bool = True,
  optimizer: optax.GradientTransformation | None = None,
  batch_size: int = 128,
  num_steps: int = 10_000,
  s_init: float = 0.1,
  params: LightSBParams | None = None,
) -> LightSBFit:
  """Trains LightSB on independent minibatches of p0 and p1 (arXiv 2310.01174, Algorithm 1).

  Each step draws ``batch_size`` points of each side (with replacement from arrays, or fresh from samplers) and
  takes an optimiser step on L̂(θ) = mean log c_θ(x0) - mean log v_θ(x1). As in the authors' code, the weights
  are trained as ``ε log α`` (so their Adam learning rates carry over: 1e-3 / 3e-3 / 6e-2 at ε = 0.1 / 1 / 10 on
  the EOT benchmark), r is initialised from target samples and S_k = s_init·I. The whole loop is one jitted
  ``lax.scan``.

  Args:
    key: PRNG key.
    x0: ``(n, d)`` source samples, or a jax-traceable sampler ``(key, n) -> (n, d)``.
    x1: ``(m, d)`` target samples, or a sampler.
    epsilon: ε (a Python number).
    num_components: K.
    diagonal: diagonal (paper default) or full S_k.
    optimizer: any optax transformation (e.g. ``optax.adam(3e-3)``, or Adam on an optax schedule); ``None``:
      ``optax.adam(DEFAULT_LEARNING_RATE)``.
    batch_size: minibatch size of each side.
    num_steps: number of optimiser steps.
    s_init: initial S_k = s_init·I (ignored when ``params`` is given).
    params: initial θ (default: :func:`init_params`).

  Returns:
    ``LightSBFit(params, losses)``.

  >>> x0 = jax.random.normal(jax.random.key(0), (256, 2))
  >>> out = fit(jax.random.key(1), x0, x0 + 1.0, epsilon=0.1, num_components=4, num_steps=20, batch_size=64,
  ...           optimizer=optax.adam(3e-3))
  >>> print(out.losses.shape, out.params.r.shape, bool(jnp.isfinite(out.losses).all()))
  (20,) (4, 2) True
  """
  check_epsilon(epsilon)
  check_count(num_components, "num_components")
  check_count(batch_size, "batch_size")
  check_count(num_steps, "num_steps")
  sample0, d0 = _as_sampler(x0, "x0")
  sample1, d1 = _as_sampler(x1, "x1")
  if d0 != d1:
    raise ValueError(f"`x0` and `x1` must have the same dimension, got {d0} and {d1}.")
  init_key, train_key = jax.random.split(key)
  if params is None:
    params = init_params(init_key, sample1, num_components, epsilon=epsilon, diagonal=diagonal, s_init=s_init)
  _check_params(params)
  if params.dim != d0 or params.num_components != num_components or params.diagonal != diagonal:
    raise ValueError(
      f"`params` (K = {params.num_components}, d = {params.dim}, diagonal = {params.diagonal}) do "
      f"not match num_components = {num_components}, d = {d0}, diagonal = {diagonal}."
    )
  optimizer = _check_optimizer(optimizer)

  # Trainable variables: θ with log α replaced by ε log α (the authors' log_alpha_raw).
  def to_params(raw):
    return raw._replace(log_alpha=raw.log_alpha / epsilon)

  def objective(raw, xb0, xb1):
    return loss(to_params(raw), xb0, xb1, epsilon)

  @jax.jit
  def run(key, raw):
    def step(carry, k):
      raw, opt_state = carry
      k0, k1 = jax.random.split(k)
      value, grads = jax.value_and_grad(objective)(raw, sample0(k0, batch_size), sample1(k1, batch_size))
      updates, opt_state = optimizer.update(grads, opt_state, raw)
      return (optax.apply_updates(raw, updates), opt_state), value

    (raw, _), losses = jax.lax.scan(step, (raw, optimizer.init(raw)), jax.random.split(key, num_steps))
    return raw, losses

  raw, losses = run(train_key, params._replace(log_alpha=epsilon * params.log_alpha))
  return LightSBFit(to_params(raw), losses)
