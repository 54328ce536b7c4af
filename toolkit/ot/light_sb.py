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

The module also holds the exact oracles used to test it: the closed-form Gaussian-to-Gaussian bridge
(:func:`gaussian_bridge`; Janati et al. 2020, Mallasto et al. 2022, Bunne et al. 2023), and the Gaussian-mixture
benchmark of Gushchin et al. 2023 ("Building the Bridge of Schrödinger", NeurIPS D&B; :func:`mixture_benchmark`)
with its metrics (:func:`bures_wasserstein`, :func:`conditional_bw_uvp`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy as jsp
import optax

Sampler = Callable[[jax.Array, int], jax.Array]  # (key, n) -> (n, d) samples


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
  def n_components(self) -> int:
    return self.r.shape[0]

  @property
  def dim(self) -> int:
    return self.r.shape[1]

  @property
  def diagonal(self) -> bool:
    return self.s_lower is None


def _is_tracer(value: Any) -> bool:
  return isinstance(value, jax.core.Tracer)


def _check_epsilon(epsilon: Any) -> None:
  """ε must be a positive scalar; checked at trace time when it is concrete."""
  if _is_tracer(epsilon):
    if jnp.ndim(epsilon) != 0:
      raise ValueError(f"`epsilon` must be a scalar, got shape {jnp.shape(epsilon)}.")
    return
  try:
    value = float(epsilon)
  except (TypeError, ValueError):
    raise TypeError(f"`epsilon` must be a positive scalar, got {epsilon!r}.") from None
  if not value > 0 or not math.isfinite(value):
    raise ValueError(f"`epsilon` must be a finite number > 0 (the Wiener variance of the prior), got {epsilon!r}.")


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
    raise ValueError(f"params.s_lower must be None or have shape (K, d, d) = ({k}, {d}, {d}), "
                     f"got {jnp.shape(params.s_lower)}.")


def _check_points(x: Any, dim: int, name: str) -> jax.Array:
  x = jnp.asarray(x)
  if x.ndim < 1 or x.shape[-1] != dim:
    raise ValueError(f"`{name}` must have shape (..., d) with d = {dim} (the parameters' dimension), got {x.shape}.")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"`{name}` must be a floating-point array, got dtype {x.dtype}.")
  return x


def _check_n_components(n_components: Any) -> None:
  if isinstance(n_components, bool) or not isinstance(n_components, int) or n_components < 1:
    raise ValueError(f"`n_components` must be an int >= 1, got {n_components!r}.")


def _check_square(cov: jax.Array, dim: int, name: str) -> None:
  if jnp.shape(cov) != (dim, dim):
    raise ValueError(f"`{name}` must have shape (d, d) = ({dim}, {dim}), got {jnp.shape(cov)}.")


# ----------------------------------------------------------------------------------------------------------------
# S_k and the mixture's pieces.


def scale_tril(params: LightSBParams) -> jax.Array:
  """``(K, d, d)`` Cholesky factors L_k of S_k (``S_k = L_k L_kᵀ``)."""
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


def init_params(key: jax.Array, x1_samples: jax.Array | Sampler, n_components: int, *, epsilon: float,
                diagonal: bool = True, s_init: float = 0.1) -> LightSBParams:
  """Initial θ as in the authors' code: α_k = 1/K, r_k = K target samples (INIT_BY_SAMPLES), S_k = s_init·I.

  Args:
    key: PRNG key (picks the target samples).
    x1_samples: ``(n, d)`` target samples, or a sampler ``(key, n) -> (n, d)``.
    n_components: K.
    epsilon: ε (checked; the initial θ itself does not depend on it).
    diagonal: diagonal S_k (the paper's default) or full ones.
    s_init: the initial S_k = s_init·I (authors: 0.1 by default; 1.0 on the EOT benchmark).

  Returns:
    ``LightSBParams`` with ``s_lower = None`` when ``diagonal`` else zeros.
  """
  _check_n_components(n_components)
  _check_epsilon(epsilon)
  if not s_init > 0:
    raise ValueError(f"`s_init` must be > 0, got {s_init!r}.")
  if callable(x1_samples):
    r = jnp.asarray(x1_samples(key, n_components))
    if r.ndim != 2 or r.shape[0] != n_components:
      raise ValueError(f"the sampler `x1_samples` must return (n, d) samples, got shape {r.shape}.")
  else:
    x1_samples = jnp.asarray(x1_samples)
    if x1_samples.ndim != 2 or x1_samples.shape[0] < 1:
      raise ValueError(f"`x1_samples` must have shape (n, d) with n >= 1, got {x1_samples.shape}.")
    n = x1_samples.shape[0]
    idx = jax.random.choice(key, n, (n_components,), replace=n_components > n)
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
  _check_epsilon(epsilon)
  x = _check_points(x, params.dim, "x")
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
  _check_epsilon(epsilon)
  y = _check_points(y, params.dim, "y")
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
  _check_epsilon(epsilon)
  x = _check_points(x, params.dim, "x")
  return jax.nn.log_softmax(_log_c_terms(params, x, epsilon), axis=-1)


def plan_component_means(params: LightSBParams, x: jax.Array) -> jax.Array:
  """``(..., K, d)`` means r_k + S_k x of the components of π_θ(·|x)."""
  _check_params(params)
  x = _check_points(x, params.dim, "x")
  return params.r + _s_times(params, x)


def plan_component_covs(params: LightSBParams, epsilon) -> jax.Array:
  """``(K, d, d)`` covariances ε S_k of the components of π_θ(·|x) (they do not depend on x)."""
  _check_epsilon(epsilon)
  return epsilon * s_matrices(params)


def _mixture_moments(log_weights: jax.Array, means: jax.Array, covs: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mean and covariance of Σ_k w_k N(m_k, Σ_k): weights (..., K), means (..., K, d), covs (K, d, d)."""
  w = jnp.exp(log_weights)
  mean = jnp.einsum("...k,...kd->...d", w, means)
  centred = means - mean[..., None, :]
  cov = jnp.einsum("...k,kij->...ij", w, covs) + jnp.einsum("...k,...ki,...kj->...ij", w, centred, centred)
  return mean, cov


def plan_mean(params: LightSBParams, x: jax.Array, epsilon) -> jax.Array:
  """``(..., d)`` E_{π_θ}[y | x] = Σ_k w_k(x) (r_k + S_k x)."""
  w = jnp.exp(plan_log_weights(params, x, epsilon))
  return jnp.einsum("...k,...kd->...d", w, plan_component_means(params, x))


def plan_cov(params: LightSBParams, x: jax.Array, epsilon) -> jax.Array:
  """``(..., d, d)`` Cov_{π_θ}[y | x] = Σ_k w_k (ε S_k + m_k m_kᵀ) - m mᵀ (the mixture's covariance)."""
  return _mixture_moments(plan_log_weights(params, x, epsilon), plan_component_means(params, x),
                          plan_component_covs(params, epsilon))[1]


def sample_plan(key: jax.Array, params: LightSBParams, x: jax.Array, epsilon,
                num_samples: int | None = None) -> jax.Array:
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
  _check_epsilon(epsilon)
  x = _check_points(x, params.dim, "x")
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
  """The paper's h(x, t) for one point (arXiv 2310.01174, Sec. 3; ot.md §3.1), up to an x-free constant."""
  a = t / (epsilon * (1.0 - t))
  inv_eps_lam = 1.0 / (epsilon * eig.lam)
  a_diag = a + inv_eps_lam  # eigenvalues of A_k(t) = t/(ε(1-t)) I + (ε S_k)⁻¹
  c = _rotate(eig, x) / (epsilon * (1.0 - t)) + eig.rho * inv_eps_lam  # U_kᵀ c_k(x, t)
  terms = (eig.log_alpha - 0.5 * jnp.sum(jnp.log(eig.lam), -1) - 0.5 * jnp.sum(jnp.log(a_diag), -1)
           - 0.5 * jnp.sum(eig.rho * eig.rho / eig.lam, -1) / epsilon + 0.5 * jnp.sum(c * c / a_diag, -1))
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
  _check_epsilon(epsilon)
  x = _check_points(x, params.dim, "x")
  if x.ndim != 1:
    raise ValueError(f"`x` must be one point of shape (d,), got {x.shape}; vmap over points.")
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
  _check_epsilon(epsilon)
  x = _check_points(x, params.dim, "x")
  return _drift_eig(_eigen(params), x, t, epsilon)


class SDEPath(NamedTuple):
  """Output of :func:`sample_sde`.

  Attributes:
    final: ``(..., d)`` X_1.
    trajectory: ``(num_steps + 1, ..., d)`` X at ``times`` (X_0 first), or ``None`` unless requested.
    times: ``(num_steps + 1,)`` the grid 0, dt, ..., 1.
  """

  final: jax.Array
  trajectory: jax.Array | None
  times: jax.Array


def sample_sde(key: jax.Array, params: LightSBParams, x0: jax.Array, epsilon, num_steps: int = 100,
               return_trajectory: bool = False) -> SDEPath:
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
  _check_epsilon(epsilon)
  x0 = _check_points(x0, params.dim, "x0")
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
  return SDEPath(final, trajectory, times)


def sample_bridge(key: jax.Array, params: LightSBParams, x0: jax.Array, t, epsilon) -> jax.Array:
  """X_t of the LightSB bridge by the Brownian-bridge shortcut (arXiv 2310.01174, Sec. 3).

  y ~ π_θ(·|x0), then ``X_t = t y + (1 - t) x0 + √(t(1 - t) ε) ξ``.

  Args:
    key: PRNG key.
    params: θ.
    x0: ``(..., d)`` starting points.
    t: time in [0, 1], a scalar or an array broadcastable to ``x0.shape[:-1]``.
    epsilon: ε.
  """
  k_plan, k_noise = jax.random.split(key)
  y = sample_plan(k_plan, params, x0, epsilon)
  t = jnp.asarray(t, x0.dtype)[..., None]
  noise = jax.random.normal(k_noise, y.shape, y.dtype)
  return t * y + (1.0 - t) * x0 + jnp.sqrt(t * (1.0 - t) * epsilon) * noise


# ----------------------------------------------------------------------------------------------------------------
# Training.


class FitOutput(NamedTuple):
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
    raise ValueError(f"`{name}` must have shape (n, d) with n >= 1, or be a sampler (key, n) -> (n, d); "
                     f"got shape {data.shape}.")
  if not jnp.issubdtype(data.dtype, jnp.floating):
    raise TypeError(f"`{name}` must be a floating-point array, got dtype {data.dtype}.")

  def sample(key, n):
    return data[jax.random.randint(key, (n,), 0, data.shape[0])]

  return sample, data.shape[1]


def fit(key: jax.Array, x0: jax.Array | Sampler, x1: jax.Array | Sampler, *, epsilon: float, n_components: int,
        diagonal: bool = True, learning_rate: float | optax.Schedule = 1e-2, batch_size: int = 128,
        num_steps: int = 10_000, s_init: float = 0.1, params: LightSBParams | None = None) -> FitOutput:
  """Trains LightSB with Adam on independent minibatches of p0 and p1 (arXiv 2310.01174, Algorithm 1).

  Each step draws ``batch_size`` points of each side (with replacement from arrays, or fresh from samplers) and
  takes an Adam step on L̂(θ) = mean log c_θ(x0) - mean log v_θ(x1). As in the authors' code, the weights are
  trained as ``ε log α`` (so their learning rates carry over: 1e-3 / 3e-3 / 6e-2 at ε = 0.1 / 1 / 10 on the EOT
  benchmark), r is initialised from target samples and S_k = s_init·I. The whole loop is one jitted ``lax.scan``.

  Args:
    key: PRNG key.
    x0: ``(n, d)`` source samples, or a jax-traceable sampler ``(key, n) -> (n, d)``.
    x1: ``(m, d)`` target samples, or a sampler.
    epsilon: ε (a Python number).
    n_components: K.
    diagonal: diagonal (paper default) or full S_k.
    learning_rate: Adam's learning rate, a number or an optax schedule.
    batch_size: minibatch size of each side.
    num_steps: number of Adam steps.
    s_init: initial S_k = s_init·I (ignored when ``params`` is given).
    params: initial θ (default: :func:`init_params`).

  Returns:
    ``FitOutput(params, losses)``.
  """
  _check_epsilon(epsilon)
  _check_n_components(n_components)
  for name, value in (("batch_size", batch_size), ("num_steps", num_steps)):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f"`{name}` must be an int >= 1, got {value!r}.")
  sample0, d0 = _as_sampler(x0, "x0")
  sample1, d1 = _as_sampler(x1, "x1")
  if d0 != d1:
    raise ValueError(f"`x0` and `x1` must have the same dimension, got {d0} and {d1}.")
  init_key, train_key = jax.random.split(key)
  if params is None:
    params = init_params(init_key, sample1, n_components, epsilon=epsilon, diagonal=diagonal, s_init=s_init)
  _check_params(params)
  if params.dim != d0 or params.n_components != n_components or params.diagonal != diagonal:
    raise ValueError(f"`params` (K = {params.n_components}, d = {params.dim}, diagonal = {params.diagonal}) do not "
                     f"match n_components = {n_components}, d = {d0}, diagonal = {diagonal}.")
  optimizer = optax.adam(learning_rate)

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
  return FitOutput(to_params(raw), losses)


# ----------------------------------------------------------------------------------------------------------------
# The closed-form Gaussian-to-Gaussian bridge (the exact oracle).


def sqrtm_psd(matrix: jax.Array) -> jax.Array:
  """Square root of symmetric positive semi-definite matrices ``(..., d, d)`` by ``eigh``."""
  w, v = jnp.linalg.eigh(0.5 * (matrix + jnp.swapaxes(matrix, -1, -2)))
  return (v * jnp.sqrt(jnp.maximum(w, 0.0))[..., None, :]) @ jnp.swapaxes(v, -1, -2)


class GaussianBridge(NamedTuple):
  """The Schrödinger bridge / entropic OT plan between N(μ0, Σ0) and N(μ1, Σ1), cost ½‖x-y‖², coefficient ε.

  The plan is N([μ0; μ1], [[Σ0, C], [Cᵀ, Σ1]]) with C = ½(Σ0^{½} D Σ0^{-½} - εI),
  D = (4 Σ0^{½} Σ1 Σ0^{½} + ε² I)^{½} (Janati et al. 2020; Mallasto et al. 2022; Bunne et al. 2023). Built by
  :func:`gaussian_bridge`.

  Attributes:
    mean0, cov0, mean1, cov1: the marginals.
    epsilon: ε.
    cross_cov: C = Cov(x0, x1).
  """

  mean0: jax.Array
  cov0: jax.Array
  mean1: jax.Array
  cov1: jax.Array
  epsilon: jax.Array
  cross_cov: jax.Array

  @property
  def s_star(self) -> jax.Array:
    """The exact LightSB S* = Cᵀ Σ0⁻¹ (symmetric positive definite; Σ1 = S*Σ0S* + εS*)."""
    s = jnp.linalg.solve(self.cov0, self.cross_cov).T  # (Σ0⁻¹ C)ᵀ = Cᵀ Σ0⁻¹
    return 0.5 * (s + s.T)

  @property
  def r_star(self) -> jax.Array:
    """The exact LightSB r* = μ1 - S* μ0."""
    return self.mean1 - self.s_star @ self.mean0

  def conditional_mean(self, x0: jax.Array) -> jax.Array:
    """``(..., d)``: E[x1 | x0] = μ1 + Cᵀ Σ0⁻¹ (x0 - μ0)."""
    return self.mean1 + (x0 - self.mean0) @ self.s_star.T

  def conditional_cov(self) -> jax.Array:
    """``(d, d)``: Cov[x1 | x0] = Σ1 - Cᵀ Σ0⁻¹ C (= ε S*)."""
    return self.cov1 - self.s_star @ self.cross_cov

  def marginal_mean(self, t) -> jax.Array:
    """Mean of the bridge at time t: (1-t)μ0 + tμ1."""
    return (1.0 - t) * self.mean0 + t * self.mean1

  def marginal_cov(self, t) -> jax.Array:
    """Covariance of the bridge at time t: (1-t)²Σ0 + t²Σ1 + t(1-t)(C + Cᵀ) + εt(1-t)I."""
    eye = jnp.eye(self.cov0.shape[0], dtype=self.cov0.dtype)
    return ((1.0 - t) ** 2 * self.cov0 + t**2 * self.cov1 + t * (1.0 - t) * (self.cross_cov + self.cross_cov.T)
            + self.epsilon * t * (1.0 - t) * eye)

  def lightsb_params(self) -> LightSBParams:
    """The exact K = 1 LightSB parameters (α = 1, r*, full S*)."""
    chol = jnp.linalg.cholesky(self.s_star)
    return LightSBParams(jnp.zeros((1,), chol.dtype), self.r_star[None], (2.0 * jnp.log(jnp.diag(chol)))[None],
                         jnp.tril(chol, -1)[None])


def gaussian_bridge(mean0: jax.Array, cov0: jax.Array, mean1: jax.Array, cov1: jax.Array, epsilon) -> GaussianBridge:
  """The closed-form Gaussian Schrödinger bridge (ot.md §3.3; the benchmark's rotated-Gaussian solution).

  Args:
    mean0: ``(d,)`` μ0.
    cov0: ``(d, d)`` Σ0 (positive definite).
    mean1: ``(d,)`` μ1.
    cov1: ``(d, d)`` Σ1 (positive definite).
    epsilon: ε (cost ½‖x-y‖², Wiener variance ε).

  Returns:
    A :class:`GaussianBridge` (cross-covariance, conditional law, marginals, exact LightSB parameters).
  """
  _check_epsilon(epsilon)
  mean0, mean1 = jnp.asarray(mean0), jnp.asarray(mean1)
  if mean0.ndim != 1 or mean1.shape != mean0.shape:
    raise ValueError(f"`mean0` and `mean1` must have the same shape (d,), got {mean0.shape} and {mean1.shape}.")
  d = mean0.shape[0]
  cov0, cov1 = jnp.asarray(cov0), jnp.asarray(cov1)
  _check_square(cov0, d, "cov0")
  _check_square(cov1, d, "cov1")
  eye = jnp.eye(d, dtype=cov0.dtype)
  root0 = sqrtm_psd(cov0)
  inv_root0 = jnp.linalg.inv(root0)
  big_d = sqrtm_psd(4.0 * root0 @ cov1 @ root0 + epsilon**2 * eye)
  cross = 0.5 * (root0 @ big_d @ inv_root0 - epsilon * eye)
  return GaussianBridge(mean0, cov0, mean1, cov1, jnp.asarray(epsilon, cov0.dtype), cross)


# ----------------------------------------------------------------------------------------------------------------
# The Gaussian-mixture EOT benchmark (Gushchin et al. 2023) and its metrics.

# The benchmark's potential component std is 0.5·_POTENTIAL_STD[ε][d] (the benchmark repository's construction
# notebook, GaussianMixtureDraft.ipynb); input mixtures: 3 components, grid spacing 2, std 0.5.
_POTENTIAL_STD = {
  0.1: {2: 0.5, 4: 0.5, 8: 1, 16: 1, 32: 4, 64: 8, 128: 8},
  1.0: {2: 0.5, 4: 0.5, 8: 1, 16: 1, 32: 2, 64: 2, 128: 2},
  10.0: {2: 0.5, 4: 0.5, 8: 1, 16: 1, 32: 2, 64: 2, 128: 2},
}


class MixtureBenchmark(NamedTuple):
  """An EOT benchmark pair with a known plan (Gushchin et al. 2023, "Building the Bridge of Schrödinger").

  p0 = Σ_m p_m N(a_m, A_m). The plan is defined through a Gaussian-mixture potential (q_n, μ_n, Σ_n):

    π*(y|x) = Σ_n w_n(x) N(y | Σ̂_n Σ_n⁻¹ μ_n + Σ̂_n x/ε, Σ̂_n),  w_n(x) ∝ q_n N(x | μ_n, Σ_n + εI),
    Σ̂_n = (I/ε + Σ_n⁻¹)⁻¹,

  and p1 is p0 pushed through it. This is the LightSB family with full S_n = Σ̂_n/ε, r_n = Σ̂_nΣ_n⁻¹μ_n
  (:func:`benchmark_lightsb_params`).

  Attributes:
    input_log_probs: ``(M,)`` log p_m.
    input_means: ``(M, d)`` a_m.
    input_covs: ``(M, d, d)`` A_m.
    potential_log_probs: ``(N,)`` log q_n.
    potential_means: ``(N, d)`` μ_n.
    potential_covs: ``(N, d, d)`` Σ_n.
    epsilon: ε.
  """

  input_log_probs: jax.Array
  input_means: jax.Array
  input_covs: jax.Array
  potential_log_probs: jax.Array
  potential_means: jax.Array
  potential_covs: jax.Array
  epsilon: jax.Array

  @property
  def dim(self) -> int:
    return self.input_means.shape[1]


def _grid_centres(key: jax.Array, dim: int, num: int, dist: float) -> jax.Array:
  """``(num, dim)``: along every axis the centres take the values dist·{0..num-1} - dist(num-1)/2, permuted."""
  perms = jax.vmap(lambda k: jax.random.permutation(k, num))(jax.random.split(key, dim))  # (dim, num)
  return dist * perms.T.astype(jnp.result_type(float)) - dist * (num - 1) / 2.0


def mixture_benchmark(key: jax.Array, dim: int, epsilon: float, *, n_input: int = 3, input_dist: float = 2.0,
                      input_std: float = 0.5, n_potential: int = 5, potential_dist: float = 1.0,
                      potential_std: float | None = None) -> MixtureBenchmark:
  """Draws a Gaussian-mixture benchmark pair by the construction of Gushchin et al. 2023.

  As in the benchmark's construction notebook: mixture weights uniform(0, 1) then normalised; the centres sit on
  a grid (along each axis a random permutation of ``dist·(0..n-1)``, centred); isotropic covariances std²·I.
  Input: 3 components, spacing 2, std 0.5. Potential: 5 components, spacing 1, std 0.5·s(ε, d) with the
  benchmark's table s (0.5 for d ≤ 4, 1 for d = 8, 16; 2 for d ≥ 32, or 4 and 8 at ε = 0.1). The original
  parameters are downloaded files drawn once with torch's RNG; this draws its own with ``key``.

  Args:
    key: PRNG key.
    dim: d.
    epsilon: ε.
    n_input, input_dist, input_std: the input mixture's construction.
    n_potential, potential_dist: the potential's construction.
    potential_std: the potential's component std (default: the benchmark's table; required off the table).

  Returns:
    A :class:`MixtureBenchmark`.
  """
  _check_epsilon(epsilon)
  if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
    raise ValueError(f"`dim` must be an int >= 1, got {dim!r}.")
  if potential_std is None:
    table = _POTENTIAL_STD.get(float(epsilon), {})
    if dim not in table:
      raise ValueError(f"no benchmark potential std for d = {dim}, ε = {epsilon}: the benchmark has d in "
                       f"{sorted(_POTENTIAL_STD[1.0])} and ε in {sorted(_POTENTIAL_STD)}; pass `potential_std`.")
    potential_std = 0.5 * table[dim]
  return _build_benchmark(key, epsilon, input_dist, input_std, potential_dist, potential_std, dim=dim,
                          n_input=n_input, n_potential=n_potential)


@functools.partial(jax.jit, static_argnames=("dim", "n_input", "n_potential"))
def _build_benchmark(key, epsilon, input_dist, input_std, potential_dist, potential_std, *, dim, n_input,
                     n_potential) -> MixtureBenchmark:
  keys = jax.random.split(key, 4)
  dtype = jnp.result_type(float)  # float32, or float64 under x64
  eye = jnp.eye(dim, dtype=dtype)

  def weights(k, n):
    p = jax.random.uniform(k, (n,), dtype)
    return jnp.log(p / p.sum())

  return MixtureBenchmark(
    input_log_probs=weights(keys[0], n_input),
    input_means=_grid_centres(keys[1], dim, n_input, input_dist),
    input_covs=jnp.broadcast_to(input_std**2 * eye, (n_input, dim, dim)),
    potential_log_probs=weights(keys[2], n_potential),
    potential_means=_grid_centres(keys[3], dim, n_potential, potential_dist),
    potential_covs=jnp.broadcast_to(potential_std**2 * eye, (n_potential, dim, dim)),
    epsilon=jnp.asarray(epsilon, dtype),
  )


class BenchmarkPieces(NamedTuple):
  """The factorisations of a :class:`MixtureBenchmark` its samplers need, computed once (:func:`benchmark_pieces`).

  With them, sampling p0, p1 and π*(·|x) costs only gathers and matrix products (no LAPACK call per batch).

  Attributes:
    bench: the benchmark.
    input_chol: ``(M, d, d)`` Cholesky factors of the input covariances A_m.
    weight_prec: ``(N, d, d)`` inverse Cholesky factors of Σ_n + εI (for the weights w_n(x)).
    weight_log_norm: ``(N,)`` log q_n - ½ log det(2π(Σ_n + εI)).
    plan_cov: ``(N, d, d)`` Σ̂_n = (I/ε + Σ_n⁻¹)⁻¹.
    plan_chol: ``(N, d, d)`` Cholesky factors of Σ̂_n.
    plan_bias: ``(N, d)`` Σ̂_nΣ_n⁻¹μ_n.
    plan_slope: ``(N, d, d)`` Σ̂_n/ε.
  """

  bench: MixtureBenchmark
  input_chol: jax.Array
  weight_prec: jax.Array
  weight_log_norm: jax.Array
  plan_cov: jax.Array
  plan_chol: jax.Array
  plan_bias: jax.Array
  plan_slope: jax.Array


@jax.jit
def benchmark_pieces(bench: MixtureBenchmark) -> BenchmarkPieces:
  """Factorises the benchmark's covariances once (see :class:`BenchmarkPieces`)."""
  d = bench.dim
  eye = jnp.eye(d, dtype=bench.potential_covs.dtype)
  inv_cov = jnp.linalg.inv(bench.potential_covs)
  plan_cov = jnp.linalg.inv(eye / bench.epsilon + inv_cov)
  plan_cov = 0.5 * (plan_cov + jnp.swapaxes(plan_cov, -1, -2))
  shifted_chol = jnp.linalg.cholesky(bench.potential_covs + bench.epsilon * eye)
  weight_prec = jsp.linalg.solve_triangular(shifted_chol, jnp.broadcast_to(eye, shifted_chol.shape), lower=True)
  log_det = 2.0 * jnp.sum(jnp.log(jnp.diagonal(shifted_chol, axis1=-2, axis2=-1)), -1)
  return BenchmarkPieces(
    bench=bench,
    input_chol=jnp.linalg.cholesky(bench.input_covs),
    weight_prec=weight_prec,
    weight_log_norm=bench.potential_log_probs - 0.5 * (d * jnp.log(2.0 * jnp.pi) + log_det),
    plan_cov=plan_cov,
    plan_chol=jnp.linalg.cholesky(plan_cov),
    plan_bias=jnp.einsum("nij,njk,nk->ni", plan_cov, inv_cov, bench.potential_means),
    plan_slope=plan_cov / bench.epsilon,
  )


def _input_sample(key: jax.Array, pieces: BenchmarkPieces, n: int) -> jax.Array:
  bench = pieces.bench
  k_comp, k_noise = jax.random.split(key)
  comp = jax.random.categorical(k_comp, bench.input_log_probs, shape=(n,))
  noise = jax.random.normal(k_noise, (n, bench.dim), bench.input_means.dtype)
  return bench.input_means[comp] + jnp.einsum("nij,nj->ni", pieces.input_chol[comp], noise)


def _conditional(pieces: BenchmarkPieces, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  x = _check_points(x, pieces.bench.dim, "x")
  white = jnp.einsum("nij,...nj->...ni", pieces.weight_prec, x[..., None, :] - pieces.bench.potential_means)
  log_w = jax.nn.log_softmax(pieces.weight_log_norm - 0.5 * jnp.sum(white * white, -1), axis=-1)
  means = pieces.plan_bias + jnp.einsum("nij,...j->...ni", pieces.plan_slope, x)
  return log_w, means, pieces.plan_cov


def _target_sample(key: jax.Array, pieces: BenchmarkPieces, x: jax.Array) -> jax.Array:
  log_w, means, _ = _conditional(pieces, x)
  k_comp, k_noise = jax.random.split(key)
  comp = jax.random.categorical(k_comp, log_w, axis=-1)
  mean = jnp.take_along_axis(means, comp[..., None, None], axis=-2)[..., 0, :]
  noise = jax.random.normal(k_noise, mean.shape, mean.dtype)
  return mean + jnp.einsum("...ij,...j->...i", pieces.plan_chol[comp], noise)


@functools.partial(jax.jit, static_argnames="n")
def sample_benchmark_input(key: jax.Array, bench: MixtureBenchmark, n: int) -> jax.Array:
  """``(n, d)`` samples of the benchmark's source p0 (a Gaussian mixture)."""
  return _input_sample(key, benchmark_pieces(bench), n)


@jax.jit
def benchmark_conditional(bench: MixtureBenchmark, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The benchmark's true π*(·|x) as a mixture: log weights ``(..., N)``, means ``(..., N, d)``, covs ``(N, d, d)``.

  Weights ∝ q_n N(x | μ_n, Σ_n + εI), means Σ̂_nΣ_n⁻¹μ_n + Σ̂_n x/ε, covariances Σ̂_n = (I/ε + Σ_n⁻¹)⁻¹.
  """
  return _conditional(benchmark_pieces(bench), x)


@jax.jit
def benchmark_conditional_moments(bench: MixtureBenchmark, x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mean ``(..., d)`` and covariance ``(..., d, d)`` of the benchmark's true π*(·|x) (the cBW-UVP reference)."""
  return _mixture_moments(*benchmark_conditional(bench, x))


@jax.jit
def sample_benchmark_target(key: jax.Array, bench: MixtureBenchmark, x: jax.Array) -> jax.Array:
  """One y ~ π*(·|x) per point of x ``(..., d)``; with x ~ p0 these are samples of the target p1."""
  return _target_sample(key, benchmark_pieces(bench), x)


def benchmark_samplers(bench: MixtureBenchmark) -> tuple[Sampler, Sampler, Callable[[jax.Array, jax.Array], jax.Array]]:
  """Samplers ``(key, n) -> (n, d)`` of p0 and p1, and ``(key, x) -> y ~ π*(·|x)``, for :func:`fit` and the metrics.

  The covariances are factorised once here, so a sampler traced inside a training loop is only gathers and matrix
  products. p1 samples are y ~ π*(·|x) with fresh x ~ p0 (independent of the p0 batch, as in the benchmark).
  """
  pieces = benchmark_pieces(bench)

  def sample_x0(key, n):
    return _input_sample(key, pieces, n)

  def sample_x1(key, n):
    k_x, k_y = jax.random.split(key)
    return _target_sample(k_y, pieces, _input_sample(k_x, pieces, n))

  def sample_plan_true(key, x):
    return _target_sample(key, pieces, x)

  return sample_x0, sample_x1, sample_plan_true


@jax.jit
def benchmark_lightsb_params(bench: MixtureBenchmark) -> LightSBParams:
  """The exact LightSB θ* of the benchmark (full S_n = Σ̂_n/ε, r_n = Σ̂_nΣ_n⁻¹μ_n, K = N).

  log α_n = log q_n - ½ log det(Σ_n + εI) - ½ μ_nᵀ(Σ_n + εI)⁻¹μ_n, so that w_n(x) matches the benchmark's weights.
  """
  pieces = benchmark_pieces(bench)
  white_mean = jnp.einsum("nij,nj->ni", pieces.weight_prec, bench.potential_means)
  d = bench.dim
  log_alpha = pieces.weight_log_norm + 0.5 * d * jnp.log(2.0 * jnp.pi) - 0.5 * jnp.sum(white_mean**2, -1)
  chol = jnp.linalg.cholesky(pieces.plan_slope)
  diag = jnp.diagonal(chol, axis1=-2, axis2=-1)
  return LightSBParams(log_alpha, pieces.plan_bias, 2.0 * jnp.log(diag), jnp.tril(chol, -1))


@functools.partial(jax.jit, static_argnames="num_samples")
def benchmark_target_variance(key: jax.Array, bench: MixtureBenchmark, num_samples: int = 100_000) -> jax.Array:
  """tr Cov(y) of the target p1 by Monte Carlo (E tr Cov(y|x) + tr Cov(E[y|x]), x ~ p0): the cBW-UVP's Var(y)."""
  pieces = benchmark_pieces(bench)
  log_w, means, covs = _conditional(pieces, _input_sample(key, pieces, num_samples))
  w = jnp.exp(log_w)
  mean = jnp.einsum("nk,nkd->nd", w, means)
  # tr Cov(y|x) = Σ_k w_k (tr Σ̂_k + ‖m_k - m‖²), without forming the (n, d, d) covariances.
  spread = jnp.sum((means - mean[:, None]) ** 2, -1)  # (n, K)
  cond_trace = w @ jnp.trace(covs, axis1=-2, axis2=-1) + jnp.sum(w * spread, -1)
  return jnp.mean(cond_trace) + jnp.sum(jnp.var(mean, axis=0))


def gaussian_fit(samples: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mean ``(..., d)`` and unbiased covariance ``(..., d, d)`` of samples ``(..., n, d)`` (as ``np.cov``)."""
  mean = jnp.mean(samples, axis=-2)
  centred = samples - mean[..., None, :]
  return mean, jnp.einsum("...ni,...nj->...ij", centred, centred) / (samples.shape[-2] - 1)


def bures_wasserstein(mean_a: jax.Array, cov_a: jax.Array, mean_b: jax.Array, cov_b: jax.Array) -> jax.Array:
  """½ W2² between N(μa, Σa) and N(μb, Σb): ½‖μa-μb‖² + ½trΣa + ½trΣb - tr((Σa^{½} Σb Σa^{½})^{½}).

  The benchmark's ``BW`` (Gushchin et al. 2023, ``compute_BW_with_gt_stats``); batched over leading axes.
  """
  root_a = sqrtm_psd(cov_a)
  cross = jnp.trace(sqrtm_psd(root_a @ cov_b @ root_a), axis1=-2, axis2=-1)
  return (0.5 * jnp.sum((mean_a - mean_b) ** 2, -1) + 0.5 * jnp.trace(cov_a, axis1=-2, axis2=-1)
          + 0.5 * jnp.trace(cov_b, axis1=-2, axis2=-1) - cross)


def bw_uvp(samples: jax.Array, true_mean: jax.Array, true_cov: jax.Array) -> jax.Array:
  """BW-UVP (%) = 100 · BW(Gaussian fit of samples, truth) / (½ tr Σ_true) (Gushchin et al. 2023)."""
  mean, cov = gaussian_fit(samples)
  return 100.0 * bures_wasserstein(mean, cov, true_mean, true_cov) / (0.5 * jnp.trace(true_cov))


@functools.partial(jax.jit, static_argnames=("sampler", "num_samples", "batch_size"))
def conditional_bw_uvp(key: jax.Array, sampler: Callable[[jax.Array, jax.Array, int], jax.Array], x: jax.Array,
                       true_means: jax.Array, true_covs: jax.Array, target_variance, *, num_samples: int = 1000,
                       batch_size: int = 25) -> jax.Array:
  """cBW-UVP (%) = 100 · mean_x BW(fit of samples of y|x, true mean/cov of y|x) / (½ Var(y)) (Gushchin et al. 2023).

  Args:
    key: PRNG key.
    sampler: ``(key, x (d,), n) -> (n, d)`` samples of the model's y | x, e.g.
      ``lambda k, x, n: sample_plan(k, params, x, eps, n)``.
    x: ``(m, d)`` test inputs.
    true_means: ``(m, d)`` the true conditional means.
    true_covs: ``(m, d, d)`` the true conditional covariances.
    target_variance: Var(y) = tr Cov(y) of the target.
    num_samples: samples per test input (the benchmark: 1000).
    batch_size: test inputs per step of the ``lax.map`` (bounds memory at batch·num_samples·d).

  Returns:
    The cBW-UVP in percent (a scalar).
  """
  keys = jax.random.split(key, x.shape[0])

  def one(args):
    k, xi, mean, cov = args
    fit_mean, fit_cov = gaussian_fit(sampler(k, xi, num_samples))
    return bures_wasserstein(fit_mean, fit_cov, mean, cov)

  bws = jax.lax.map(one, (keys, x, true_means, true_covs), batch_size=batch_size)
  return 100.0 * jnp.mean(bws) / (0.5 * target_variance)
