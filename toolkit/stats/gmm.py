r"""Gaussian mixtures in closed form: densities, scores, moments, draws, products, powers and noising.

A :class:`GaussianMixture` is an *unnormalised* mixture ``q(x) = Σ_k exp(log_weights_k) N(x; means_k, covs_k)``
with full covariances, so that products and powers, whose masses are the normalising constants an SMC sampler
estimates, stay in the family. The closed forms rest on the Gaussian product identity
``N(x; a, A) N(x; b, B) = N(a; b, A + B) N(x; c, C)``, ``C = (A⁻¹ + B⁻¹)⁻¹``, ``c = C(A⁻¹a + B⁻¹b)``
(e.g. Petersen & Pedersen, "The Matrix Cookbook", 2012, §8.1.8), and on the law of ``αX + σε`` for
``X ~ q``, ``ε ~ N(0, I)``, which is the marginal of a diffusion's forward process started at ``q``
(Song et al., "Score-Based Generative Modeling through Stochastic Differential Equations", ICLR 2021,
arXiv 2011.13456, §3.3).

Every function works under ``jit`` and ``vmap`` (a mixture is a pytree of arrays), and ``grad`` where it is
differentiable.

>>> import jax.numpy as jnp
>>> from toolkit.stats import gmm
>>> q = gmm.gaussian_mixture([0.5, 0.5], [[-2.0, 0.0], [2.0, 0.0]], [0.5, 0.05])
>>> print(round(float(gmm.log_mass(gmm.power(q, 2))), 3))  # log ∫ q², exact
-0.826
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from toolkit import _checks


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
  """Builds a :class:`GaussianMixture` from weights (K,), means (K, d) and covariances (K, d, d), (K, d) or (K,).

  Covariances of shape ``(K, d)`` are diagonals and of shape ``(K,)`` isotropic variances.

  >>> q = gaussian_mixture([0.3, 0.7], [[0.0], [1.0]], [1.0, 0.5])
  >>> q.covs.shape
  (2, 1, 1)
  """
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
  _checks.check_weight_values(weights)
  if not isinstance(covs, jax.core.Tracer):
    # Every density and score goes through a Cholesky factor, which is NaN for a covariance that is not PD.
    c = np.asarray(covs, np.float64)
    smallest = np.linalg.eigvalsh(0.5 * (c + np.swapaxes(c, -1, -2))).min(-1)
    if not (smallest > 0).all():
      raise ValueError(
        f"`covs` must be positive definite, got a smallest eigenvalue of {float(smallest.min()):.3g} "
        f"(component {int(np.argmin(smallest))})."
      )
  return GaussianMixture(jnp.log(weights), means, covs)


def gaussian_log_density(x: jax.Array, mean: jax.Array, cov: jax.Array) -> jax.Array:
  """``log N(x; mean, cov)`` for one point ``x`` (d,) by a Cholesky factor of ``cov`` (d, d).

  >>> print(round(float(gaussian_log_density(jnp.zeros(2), jnp.zeros(2), jnp.eye(2))), 4))  # -log 2π
  -1.8379
  """
  d = jnp.shape(mean)[-1] if jnp.ndim(mean) == 1 else None
  if d is None or jnp.shape(x) != (d,) or jnp.shape(cov) != (d, d):
    raise ValueError(
      f"`x` and `mean` must be (d,) and `cov` (d, d), got {jnp.shape(x)}, {jnp.shape(mean)} and {jnp.shape(cov)}."
    )
  chol = jnp.linalg.cholesky(cov)
  z = jax.scipy.linalg.solve_triangular(chol, x - mean, lower=True)
  return -0.5 * (jnp.sum(z**2) + d * jnp.log(2 * jnp.pi)) - jnp.sum(jnp.log(jnp.diag(chol)))


def _component_terms(mixture: GaussianMixture, x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Log joint ``log w_k + log N(x; m_k, C_k)`` (M, K) and ``C_k⁻¹(m_k - x)`` (M, K, d) for x (M, d).

  One Cholesky factor per component, shared by all points: factorising per point made a sampler's score
  evaluation ~100× slower.
  """
  d = mixture.means.shape[-1]
  chol = jnp.linalg.cholesky(mixture.covs)  # (K, d, d)
  prec = jax.vmap(lambda c: jax.scipy.linalg.cho_solve((c, True), jnp.eye(d, dtype=c.dtype)))(chol)
  diff = mixture.means[None, :, :] - x[:, None, :]  # (M, K, d)
  prec_diff = jnp.einsum("kij,mkj->mki", prec, diff)
  half_log_det = jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
  log_joint = (
    mixture.log_weights - half_log_det - 0.5 * d * jnp.log(2 * jnp.pi) - 0.5 * jnp.sum(diff * prec_diff, axis=-1)
  )
  return log_joint, prec_diff


@jax.jit
def log_density(mixture: GaussianMixture, x: jax.Array) -> jax.Array:
  """``log Σ_k w_k N(x; m_k, C_k)`` for ``x`` of shape ``(..., d)``; returns shape ``(...)``.

  >>> q = gaussian_mixture([1.0], [[0.0, 0.0]], [1.0])
  >>> print(round(float(log_density(q, jnp.zeros(2))), 4))
  -1.8379
  """
  x = jnp.asarray(x)
  log_joint, _ = _component_terms(mixture, x.reshape(-1, x.shape[-1]))
  return jax.nn.logsumexp(log_joint, axis=-1).reshape(x.shape[:-1])


@jax.jit
def score(mixture: GaussianMixture, x: jax.Array) -> jax.Array:
  """``∇ log q(x) = Σ_k r_k(x) C_k⁻¹(m_k - x)``, ``r = softmax_k(log w_k + log N(x; m_k, C_k))``, for x (..., d).

  >>> q = gaussian_mixture([1.0], [[1.0, 0.0]], [0.5])
  >>> print(score(q, jnp.zeros((1, 2))).round(4).tolist())  # C⁻¹(m - x)
  [[2.0, 0.0]]
  """
  x = jnp.asarray(x)
  log_joint, prec_diff = _component_terms(mixture, x.reshape(-1, x.shape[-1]))
  resp = jax.nn.softmax(log_joint, axis=-1)
  return jnp.einsum("mk,mki->mi", resp, prec_diff).reshape(x.shape)


def _check_mixture(mixture: Any) -> None:
  if not all(hasattr(mixture, name) for name in ("log_weights", "means", "covs")):
    raise TypeError(f"`mixture` must be a GaussianMixture (see gaussian_mixture), got {type(mixture).__name__}.")
  # A stacked batch of mixtures would be summed over the batch as well: vmap over it instead.
  if jnp.ndim(mixture.log_weights) != 1 or jnp.ndim(mixture.means) != 2:
    raise ValueError(
      f"`mixture` must hold log_weights (K,) and means (K, d) (vmap over a batch of mixtures), got "
      f"{jnp.shape(mixture.log_weights)} and {jnp.shape(mixture.means)}."
    )


def log_mass(mixture: GaussianMixture) -> jax.Array:
  """``log ∫ q = logsumexp(log_weights)``: the exact log-normaliser of an unnormalised mixture."""
  _check_mixture(mixture)
  return jax.nn.logsumexp(mixture.log_weights)


def mixture_moments(log_weights: jax.Array, means: jax.Array, covs: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mean and covariance of ``Σ_k w_k N(m_k, Σ_k)`` from *normalised* log-weights, batched over leading axes.

  ``mean = Σ_k w_k m_k``, ``cov = Σ_k w_k (Σ_k + (m_k - mean)(m_k - mean)ᵀ)`` (the law of total covariance).
  The weights are used as ``exp(log_weights)`` without renormalising (pass ``log_softmax`` of unnormalised ones;
  :func:`moments` does this for a :class:`GaussianMixture`).

  Args:
    log_weights: ``(..., K)`` normalised log-weights.
    means: ``(..., K, d)``.
    covs: ``(K, d, d)`` shared by the batch (as for a conditional mixture whose covariances do not depend on the
      condition), or ``(..., K, d, d)``.

  Returns:
    ``(mean (..., d), cov (..., d, d))``.

  >>> mean, cov = mixture_moments(jnp.log(jnp.array([0.5, 0.5])), jnp.array([[-1.0], [1.0]]), jnp.ones((2, 1, 1)))
  >>> print(round(float(mean[0]), 4), round(float(cov[0, 0]), 4))
  0.0 2.0
  """
  lw_shape, m_shape, c_shape = jnp.shape(log_weights), jnp.shape(means), jnp.shape(covs)
  if len(lw_shape) < 1 or len(m_shape) < 2 or m_shape[-2] != lw_shape[-1]:
    raise ValueError(f"`means` must have shape (..., K, d) for `log_weights` (..., K), got {m_shape} and {lw_shape}.")
  k, d = m_shape[-2:]
  if len(c_shape) < 3 or c_shape[-3:] != (k, d, d):
    raise ValueError(f"`covs` must have shape (K, d, d) = ({k}, {d}, {d}) or (..., K, d, d), got {c_shape}.")
  if not _checks.is_traced(log_weights):
    # Unnormalised weights scale the moments silently; NaN fails this test too.
    total = np.exp(np.asarray(log_weights, np.float64)).sum(-1)
    tol = max(1e-3, float(np.sqrt(jnp.finfo(jnp.result_type(log_weights, float)).eps)))
    if not (np.abs(total - 1.0) <= tol).all():
      raise ValueError(
        f"`log_weights` must be normalised (their exponentials summing to 1 over the last axis; pass "
        f"log_softmax), got sums in [{float(np.min(total)):.6g}, {float(np.max(total)):.6g}]."
      )
  w = jnp.exp(log_weights)
  mean = jnp.einsum("...k,...kd->...d", w, means)
  centred = means - mean[..., None, :]
  # Shared covariances keep the unbatched contraction (no broadcast copy of covs over the batch).
  cov_subscripts = "...k,kij->...ij" if jnp.ndim(covs) == 3 else "...k,...kij->...ij"
  cov = jnp.einsum(cov_subscripts, w, covs) + jnp.einsum("...k,...ki,...kj->...ij", w, centred, centred)
  return mean, cov


@jax.jit
def moments(mixture: GaussianMixture) -> tuple[jax.Array, jax.Array]:
  """Mean ``(d,)`` and covariance ``(d, d)`` of the normalised mixture.

  >>> q = gaussian_mixture([1.0, 3.0], [[-1.0], [1.0]], [1.0, 1.0])  # unnormalised weights
  >>> mean, cov = moments(q)
  >>> print(round(float(mean[0]), 4), round(float(cov[0, 0]), 4))
  0.5 1.75
  """
  p = jax.nn.softmax(mixture.log_weights)
  mean = p @ mixture.means
  centred = mixture.means - mean
  return mean, jnp.einsum("k,kij->ij", p, mixture.covs) + (p[:, None] * centred).T @ centred


def sample(key: jax.Array, mixture: GaussianMixture, num_samples: int) -> jax.Array:
  """``(num_samples, d)`` i.i.d. draws from the normalised mixture.

  >>> q = gaussian_mixture([0.5, 0.5], [[-2.0, 0.0], [2.0, 0.0]], [0.5, 0.05])
  >>> sample(jax.random.key(0), q, 5).shape
  (5, 2)
  """
  if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 0:
    raise ValueError(f"`num_samples` must be a non-negative Python int (a static shape), got {num_samples!r}.")
  k_comp, k_noise = jax.random.split(key)
  comp = jax.random.categorical(k_comp, mixture.log_weights, shape=(num_samples,))
  chol = jnp.linalg.cholesky(mixture.covs)[comp]
  z = jax.random.normal(k_noise, mixture.means[comp].shape, mixture.means.dtype)
  return mixture.means[comp] + jnp.einsum("nij,nj->ni", chol, z)


def noised(mixture: GaussianMixture, alpha: Any, sigma: Any) -> GaussianMixture:
  """The law of ``αX + σε``, ``X ~ mixture``, ``ε ~ N(0, I)``: means ``α m_k``, covariances ``α² C_k + σ² I``.

  With ``(α_t, σ_t)`` of a diffusion's forward process this is its marginal ``q_t`` started at ``q_0 = mixture``
  (e.g. ``toolkit.smc.fkc.noise_gmm``).

  >>> q = noised(gaussian_mixture([1.0], [[2.0]], [1.0]), 0.5, 1.0)
  >>> print(float(q.means[0, 0]), float(q.covs[0, 0, 0]))
  1.0 1.25
  """
  _check_mixture(mixture)
  # A vector alpha or sigma would broadcast against the means' last axis (silently, when its length is d).
  for name, value in (("alpha", alpha), ("sigma", sigma)):
    if jnp.ndim(value) != 0:
      raise ValueError(f"`{name}` must be a scalar, got shape {jnp.shape(value)}.")
    if not _checks.is_traced(value) and not np.isfinite(np.asarray(value, np.float64)):
      raise ValueError(f"`{name}` must be finite, got {value!r}.")
  if not (_checks.is_traced(alpha) or _checks.is_traced(sigma)) and float(alpha) == 0.0 and float(sigma) == 0.0:
    raise ValueError("`alpha` and `sigma` must not both be 0 (the noised covariances would be singular).")
  d = mixture.means.shape[-1]
  return GaussianMixture(
    mixture.log_weights,
    alpha * mixture.means,
    alpha**2 * mixture.covs + sigma**2 * jnp.eye(d, dtype=mixture.means.dtype),
  )


@jax.jit
def product(mixture1: GaussianMixture, mixture2: GaussianMixture) -> GaussianMixture:
  """The exact product ``q^1 q^2`` as an unnormalised mixture of ``K1 K2`` components.

  ``N(x; a, A) N(x; b, B) = N(a; b, A + B) N(x; c, C)``, ``C = (A⁻¹ + B⁻¹)⁻¹``, ``c = C(A⁻¹a + B⁻¹b)``; the mass of
  the result is ``∫ q^1 q^2``.

  >>> n01 = gaussian_mixture([1.0], [[0.0]], [1.0])
  >>> print(round(float(log_mass(product(n01, n01))), 4))  # log N(0; 0, 2) = -½ log 4π
  -1.2655
  """

  def pair(a, cov_a, b, cov_b):
    prec_a, prec_b = jnp.linalg.inv(cov_a), jnp.linalg.inv(cov_b)
    cov = jnp.linalg.inv(prec_a + prec_b)
    cov = 0.5 * (cov + cov.T)
    return gaussian_log_density(a, b, cov_a + cov_b), cov @ (prec_a @ a + prec_b @ b), cov

  pairs = jax.vmap(jax.vmap(pair, (None, None, 0, 0)), (0, 0, None, None))
  log_scale, means, covs = pairs(mixture1.means, mixture1.covs, mixture2.means, mixture2.covs)
  log_w = mixture1.log_weights[:, None] + mixture2.log_weights[None, :] + log_scale
  d = mixture1.means.shape[-1]
  return GaussianMixture(log_w.reshape(-1), means.reshape(-1, d), covs.reshape(-1, d, d))


@functools.partial(jax.jit, static_argnames="beta")
def power(mixture: GaussianMixture, beta: int) -> GaussianMixture:
  """The exact ``q^β`` for a positive integer β (static), a mixture of ``K^β`` components.

  >>> q = gaussian_mixture([0.5, 0.5], [[-1.0], [1.0]], [1.0, 1.0])
  >>> power(q, 3).means.shape
  (8, 1)
  """
  if not isinstance(beta, int) or isinstance(beta, bool) or beta < 1:
    raise ValueError(f"`beta` must be a positive Python int for the closed-form power, got {beta!r}.")
  out = mixture
  for _ in range(beta - 1):
    out = product(out, mixture)
  return out


def pad(mixture: GaussianMixture, num_components: int) -> GaussianMixture:
  """The same mixture with ``num_components`` components: zero-weight copies of the first one are appended.

  Mixtures padded to one size stack into one pytree (``jax.tree.map(jnp.stack, ...)``), so one compiled function
  serves them all.

  >>> q = pad(gaussian_mixture([1.0], [[0.0]], [1.0]), 3)
  >>> print(q.means.shape, round(float(log_mass(q)), 6))
  (3, 1) 0.0
  """
  k = mixture.means.shape[0]
  if not isinstance(num_components, int) or num_components < k:
    raise ValueError(f"`num_components` must be a Python int >= the mixture's {k} components, got {num_components!r}.")
  extra = num_components - k
  return GaussianMixture(
    jnp.concatenate([mixture.log_weights, jnp.full((extra,), -jnp.inf)]),
    jnp.concatenate([mixture.means, jnp.repeat(mixture.means[:1], extra, 0)]),
    jnp.concatenate([mixture.covs, jnp.repeat(mixture.covs[:1], extra, 0)]),
  )


class GaussianGeometricMean(NamedTuple):
  """``N(x; m_u, C_u)^{1-w} N(x; m_c, C_c)^w = exp(log_normalizer) N(x; mean, cov)``."""

  log_normalizer: jax.Array
  mean: jax.Array
  cov: jax.Array


@jax.jit
def gaussian_geometric_mean(
  mean_u: jax.Array, cov_u: jax.Array, mean_c: jax.Array, cov_c: jax.Array, w: Any
) -> GaussianGeometricMean:
  """Exact geometric mean of two Gaussians, e.g. the target of classifier-free guidance for Gaussian models.

  Precision ``P = (1-w)C_u⁻¹ + w C_c⁻¹`` (must be positive definite), mean ``m = P⁻¹((1-w)C_u⁻¹m_u + w C_c⁻¹m_c)``,
  ``log Z = -½[(1-w)(log|2πC_u| + m_uᵀC_u⁻¹m_u) + w(log|2πC_c| + m_cᵀC_c⁻¹m_c)] + ½[log|2πP⁻¹| + mᵀPm]``
  (Skreta et al., ICML 2025, arXiv 2503.02819, uses it as the guidance target of its Gaussian examples).

  >>> gm = gaussian_geometric_mean(jnp.zeros(2), jnp.eye(2), jnp.ones(2), 0.25 * jnp.eye(2), 3.0)
  >>> print([round(float(m), 3) for m in gm.mean], round(float(gm.log_normalizer), 3))
  [1.2, 1.2] 4.256
  """
  prec_u, prec_c = jnp.linalg.inv(cov_u), jnp.linalg.inv(cov_c)
  prec = (1.0 - w) * prec_u + w * prec_c
  cov = jnp.linalg.inv(prec)
  mean = cov @ ((1.0 - w) * prec_u @ mean_u + w * prec_c @ mean_c)

  def log_det_2pi(c):
    return jnp.linalg.slogdet(2 * jnp.pi * c)[1]

  log_z = -0.5 * (
    (1.0 - w) * (log_det_2pi(cov_u) + mean_u @ prec_u @ mean_u) + w * (log_det_2pi(cov_c) + mean_c @ prec_c @ mean_c)
  ) + 0.5 * (log_det_2pi(cov) + mean @ prec @ mean)
  return GaussianGeometricMean(log_normalizer=log_z, mean=mean, cov=cov)
