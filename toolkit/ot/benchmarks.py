r"""Oracles and benchmark constructions of ``toolkit.ot``: problems whose optimal map or plan is known.

* The closed-form Gaussian-to-Gaussian Schrödinger bridge / entropic OT plan (:func:`gaussian_bridge`; Janati,
  Muzellec, Peyré, Cuturi. "Entropic Optimal Transport between Unbalanced Gaussian Measures has a Closed Form",
  NeurIPS 2020, arXiv 2006.02572; Mallasto, Gerolin, Minh 2022; Bunne, Hsieh, Cuturi, Krause 2023), the oracle of
  LightSB (``toolkit.ot.light_sb``).
* The closed-form Brenier map between two Gaussians for the cost ‖x - y‖² (:func:`gaussian_pair`,
  :func:`random_gaussian_pair`; Peyré and Cuturi, "Computational Optimal Transport", 2019, arXiv 1803.00567,
  Remark 2.31), the oracle of the Monge-gap experiment, scored by L2-UVP (``toolkit.ot.metrics.l2_uvp``).
* The Gaussian-mixture entropic OT benchmark (:func:`mixture_benchmark`; Gushchin, Kolesov, Mokrov, Karpikova,
  Spiridonov, Burnaev, Korotin. "Building the Bridge of Schrödinger: A Continuous Entropic Optimal Transport
  Benchmark", NeurIPS 2023 Datasets and Benchmarks, arXiv 2306.10161), scored by cBW-UVP
  (``toolkit.ot.metrics.conditional_bw_uvp``).

Conventions of the entropic oracles are LightSB's: cost ½‖x - y‖² and coefficient ε (ott's ``SqEuclidean`` has no
½: the same problem in ott needs ``epsilon = 2ε``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy as jsp
import numpy as np

from toolkit._checks import check_positive, is_traced
from toolkit.ot._checks import check_count, check_covariance, check_epsilon, check_points
from toolkit.ot.light_sb import LightSBParams
from toolkit.ot.metrics import sqrtm_psd
from toolkit.stats import gmm

Sampler = Callable[[jax.Array, int], jax.Array]  # (key, n) -> (n, d) samples


# ----------------------------------------------------------------------------------------------------------------
# The closed-form Gaussian-to-Gaussian bridge (the exact oracle of LightSB).


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
    return (
      (1.0 - t) ** 2 * self.cov0
      + t**2 * self.cov1
      + t * (1.0 - t) * (self.cross_cov + self.cross_cov.T)
      + self.epsilon * t * (1.0 - t) * eye
    )

  def lightsb_params(self) -> LightSBParams:
    """The exact K = 1 LightSB parameters (α = 1, r*, full S*)."""
    chol = jnp.linalg.cholesky(self.s_star)
    return LightSBParams(
      jnp.zeros((1,), chol.dtype),
      self.r_star[None],
      (2.0 * jnp.log(jnp.diag(chol)))[None],
      jnp.tril(chol, -1)[None],
    )


def gaussian_bridge(mean0: jax.Array, cov0: jax.Array, mean1: jax.Array, cov1: jax.Array, epsilon) -> GaussianBridge:
  """The closed-form Gaussian Schrödinger bridge (arXiv 2006.02572; the benchmark's rotated-Gaussian solution).

  Args:
    mean0: ``(d,)`` μ0.
    cov0: ``(d, d)`` Σ0 (positive definite).
    mean1: ``(d,)`` μ1.
    cov1: ``(d, d)`` Σ1 (positive definite).
    epsilon: ε (cost ½‖x-y‖², Wiener variance ε).

  Returns:
    A :class:`GaussianBridge` (cross-covariance, conditional law, marginals, exact LightSB parameters).
  """
  check_epsilon(epsilon)
  mean0, mean1 = jnp.asarray(mean0), jnp.asarray(mean1)
  if mean0.ndim != 1 or mean1.shape != mean0.shape:
    raise ValueError(f"`mean0` and `mean1` must have the same shape (d,), got {mean0.shape} and {mean1.shape}.")
  d = mean0.shape[0]
  cov0, cov1 = jnp.asarray(cov0), jnp.asarray(cov1)
  check_covariance(cov0, d, "cov0")
  check_covariance(cov1, d, "cov1")
  eye = jnp.eye(d, dtype=cov0.dtype)
  root0 = sqrtm_psd(cov0)
  inv_root0 = jnp.linalg.inv(root0)
  big_d = sqrtm_psd(4.0 * root0 @ cov1 @ root0 + epsilon**2 * eye)
  cross = 0.5 * (root0 @ big_d @ inv_root0 - epsilon * eye)
  return GaussianBridge(mean0, cov0, mean1, cov1, jnp.asarray(epsilon, cov0.dtype), cross)


# ----------------------------------------------------------------------------------------------------------------
# The closed-form Brenier map between two Gaussians (the oracle of the Monge-gap experiment).


def _check_covariance_values(cov, name: str, *, definite: bool) -> None:
  """Concrete covariances ``(..., d, d)`` must be finite and symmetric, and positive definite when ``definite``
  (else semi-definite up to rounding): the matrix square root silently symmetrises an asymmetric one and clips a
  negative eigenvalue, and an inverse or Cholesky factor of a singular one is garbage or NaN."""
  if is_traced(cov):
    return
  c = np.asarray(cov, np.float64)
  if not np.all(np.isfinite(c)):
    raise ValueError(f"`{name}` must be finite (a covariance), got a NaN or infinite entry.")
  scale = max(float(np.abs(c).max(initial=0.0)), 1e-30)
  if np.abs(c - np.swapaxes(c, -1, -2)).max(initial=0.0) > 1e-5 * scale:
    raise ValueError(f"`{name}` must be a symmetric matrix (a covariance).")
  smallest = float(np.linalg.eigvalsh(c).min(initial=np.inf))
  if definite and not smallest > 0:
    raise ValueError(f"`{name}` must be positive definite (a covariance), got a smallest eigenvalue of {smallest:.3g}.")
  if not definite and smallest < -1e-4 * scale:
    raise ValueError(
      f"`{name}` must be positive semi-definite (a covariance), got a smallest eigenvalue of {smallest:.3g}."
    )


def gaussian_brenier_matrix(cov0: jax.Array, cov1: jax.Array) -> jax.Array:
  """A = Σ0^{-½}(Σ0^{½} Σ1 Σ0^{½})^{½}Σ0^{-½}: the optimal map N(μ0, Σ0) → N(μ1, Σ1) for ‖x - y‖² is
  T*(x) = μ1 + A(x - μ0), A symmetric positive definite with A Σ0 A = Σ1 (arXiv 1803.00567, Remark 2.31).

  Args:
    cov0: ``(..., d, d)`` Σ0 (positive definite).
    cov1: ``(..., d, d)`` Σ1 (positive semi-definite); leading axes broadcast against those of ``cov0``.

  Returns:
    ``(..., d, d)`` A.
  """
  cov0, cov1 = jnp.asarray(cov0), jnp.asarray(cov1)
  for name, cov in (("cov0", cov0), ("cov1", cov1)):
    if cov.ndim < 2 or cov.shape[-1] != cov.shape[-2] or cov.shape[-1] < 1:
      raise ValueError(f"`{name}` must be a square matrix (..., d, d) with d >= 1, got shape {cov.shape}.")
    if not (jnp.issubdtype(cov.dtype, jnp.floating) or jnp.issubdtype(cov.dtype, jnp.integer)):
      raise TypeError(f"`{name}` must be a real-valued covariance, got dtype {cov.dtype}.")
  if cov1.shape[-1] != cov0.shape[-1]:
    raise ValueError(f"`cov0` and `cov1` must have the same d, got shapes {cov0.shape} and {cov1.shape}.")
  try:
    np.broadcast_shapes(cov0.shape[:-2], cov1.shape[:-2])
  except ValueError:
    raise ValueError(
      f"`cov0` and `cov1` must have leading axes that broadcast, got shapes {cov0.shape} and {cov1.shape}."
    ) from None
  _check_covariance_values(cov0, "cov0", definite=True)
  _check_covariance_values(cov1, "cov1", definite=False)
  root0 = sqrtm_psd(cov0)
  root0_inv = jnp.linalg.inv(root0)
  return root0_inv @ sqrtm_psd(root0 @ cov1 @ root0) @ root0_inv


class GaussianPair(NamedTuple):
  """Two Gaussians N(μ0, Σ0), N(μ1, Σ1), their samplers, and the optimal map between them for ‖x - y‖².

  Built by :func:`gaussian_pair` or :func:`random_gaussian_pair`; ``sample_source`` and ``sample_target`` are
  samplers ``(key, num_samples) -> (num_samples, d)`` (e.g. for ``monge_gap.fit_map``), ``optimal_map`` is T*.

  Attributes:
    mean0, cov0, mean1, cov1: the two Gaussians.
    chol0, chol1: Cholesky factors of Σ0 and Σ1 (for the samplers).
    map_matrix: A of T*(x) = μ1 + A(x - μ0) (:func:`gaussian_brenier_matrix`).
  """

  mean0: jax.Array
  cov0: jax.Array
  mean1: jax.Array
  cov1: jax.Array
  chol0: jax.Array
  chol1: jax.Array
  map_matrix: jax.Array

  @property
  def dim(self) -> int:
    return self.mean0.shape[0]

  @property
  def target_variance(self) -> jax.Array:
    """tr Σ1, the normaliser of L2-UVP (``toolkit.ot.metrics.l2_uvp``)."""
    return jnp.trace(self.cov1)

  def sample_source(self, key: jax.Array, num_samples: int) -> jax.Array:
    """``(num_samples, d)`` samples of N(μ0, Σ0)."""
    return self.mean0 + jax.random.normal(key, (num_samples, self.dim)) @ self.chol0.T

  def sample_target(self, key: jax.Array, num_samples: int) -> jax.Array:
    """``(num_samples, d)`` samples of N(μ1, Σ1)."""
    return self.mean1 + jax.random.normal(key, (num_samples, self.dim)) @ self.chol1.T

  def optimal_map(self, x: jax.Array) -> jax.Array:
    """``(..., d)``: T*(x) = μ1 + A(x - μ0)."""
    return self.mean1 + (x - self.mean0) @ self.map_matrix.T


def gaussian_pair(mean0: jax.Array, cov0: jax.Array, mean1: jax.Array, cov1: jax.Array) -> GaussianPair:
  """The pair N(μ0, Σ0), N(μ1, Σ1) with its closed-form Brenier map (see :class:`GaussianPair`).

  Args:
    mean0: ``(d,)`` μ0.
    cov0: ``(d, d)`` Σ0 (positive definite).
    mean1: ``(d,)`` μ1.
    cov1: ``(d, d)`` Σ1 (positive definite).
  """
  mean0, mean1 = jnp.asarray(mean0), jnp.asarray(mean1)
  if mean0.ndim != 1 or mean1.shape != mean0.shape:
    raise ValueError(f"`mean0` and `mean1` must have the same shape (d,), got {mean0.shape} and {mean1.shape}.")
  d = mean0.shape[0]
  cov0, cov1 = jnp.asarray(cov0), jnp.asarray(cov1)
  check_covariance(cov0, d, "cov0")
  check_covariance(cov1, d, "cov1")
  chol0, chol1 = jnp.linalg.cholesky(cov0), jnp.linalg.cholesky(cov1)
  return GaussianPair(mean0, cov0, mean1, cov1, chol0, chol1, gaussian_brenier_matrix(cov0, cov1))


def random_gaussian_pair(key: jax.Array, dim: int, *, ridge: float = 0.3) -> GaussianPair:
  """A random :class:`GaussianPair` in dimension d: Σ = aaᵀ + ridge·I with a ~ N(0, 1/d) entrywise, μ0 = 0,
  μ1 ~ N(0, I).

  >>> pair = random_gaussian_pair(jax.random.key(0), 3)
  >>> x = pair.sample_source(jax.random.key(1), 5)
  >>> print(pair.optimal_map(x).shape)
  (5, 3)
  >>> a = pair.map_matrix  # A Σ0 A = Σ1: T* pushes N(μ0, Σ0) onto N(μ1, Σ1)
  >>> print(bool(jnp.allclose(a @ pair.cov0 @ a, pair.cov1, atol=1e-4)))
  True
  """
  check_count(dim, "dim")
  k0, k1, k2 = jax.random.split(key, 3)

  def random_cov(k):
    a = jax.random.normal(k, (dim, dim)) / np.sqrt(dim)
    return a @ a.T + ridge * jnp.eye(dim)

  cov0, cov1 = random_cov(k0), random_cov(k1)
  return gaussian_pair(jnp.zeros(dim), cov0, jax.random.normal(k2, (dim,)), cov1)


# ----------------------------------------------------------------------------------------------------------------
# The Gaussian-mixture EOT benchmark (Gushchin et al. 2023, arXiv 2306.10161).

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


def mixture_benchmark(
  key: jax.Array,
  dim: int,
  epsilon: float,
  *,
  num_input_components: int = 3,
  input_dist: float = 2.0,
  input_std: float = 0.5,
  num_potential_components: int = 5,
  potential_dist: float = 1.0,
  potential_std: float | None = None,
) -> MixtureBenchmark:
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
    num_input_components, input_dist, input_std: the input mixture's construction.
    num_potential_components, potential_dist: the potential's construction.
    potential_std: the potential's component std (default: the benchmark's table; required off the table).

  Returns:
    A :class:`MixtureBenchmark`.

  >>> bench = mixture_benchmark(jax.random.key(0), 2, 1.0)
  >>> print(bench.dim, bench.input_means.shape, bench.potential_means.shape)
  2 (3, 2) (5, 2)
  >>> x = sample_benchmark_input(jax.random.key(1), bench, 4)
  >>> print(sample_benchmark_target(jax.random.key(2), bench, x).shape)  # y ~ π*(·|x)
  (4, 2)
  """
  check_epsilon(epsilon)
  check_count(dim, "dim")
  check_count(num_input_components, "num_input_components")
  check_count(num_potential_components, "num_potential_components")
  if potential_std is None:
    table = _POTENTIAL_STD.get(float(epsilon), {})
    if dim not in table:
      raise ValueError(
        f"no benchmark potential std for d = {dim}, ε = {epsilon}: the benchmark has d in "
        f"{sorted(_POTENTIAL_STD[1.0])} and ε in {sorted(_POTENTIAL_STD)}; pass `potential_std`."
      )
    potential_std = 0.5 * table[dim]
  return _build_benchmark(
    key,
    epsilon,
    input_dist,
    input_std,
    potential_dist,
    potential_std,
    dim=dim,
    num_input_components=num_input_components,
    num_potential_components=num_potential_components,
  )


@functools.partial(jax.jit, static_argnames=("dim", "num_input_components", "num_potential_components"))
def _build_benchmark(
  key,
  epsilon,
  input_dist,
  input_std,
  potential_dist,
  potential_std,
  *,
  dim,
  num_input_components,
  num_potential_components,
) -> MixtureBenchmark:
  keys = jax.random.split(key, 4)
  dtype = jnp.result_type(float)  # float32, or float64 under x64
  eye = jnp.eye(dim, dtype=dtype)

  def weights(k, n):
    p = jax.random.uniform(k, (n,), dtype)
    return jnp.log(p / p.sum())

  return MixtureBenchmark(
    input_log_probs=weights(keys[0], num_input_components),
    input_means=_grid_centres(keys[1], dim, num_input_components, input_dist),
    input_covs=jnp.broadcast_to(input_std**2 * eye, (num_input_components, dim, dim)),
    potential_log_probs=weights(keys[2], num_potential_components),
    potential_means=_grid_centres(keys[3], dim, num_potential_components, potential_dist),
    potential_covs=jnp.broadcast_to(potential_std**2 * eye, (num_potential_components, dim, dim)),
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
  x = check_points(x, pieces.bench.dim, "x")
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


@functools.partial(jax.jit, static_argnames="num_samples")
def sample_benchmark_input(key: jax.Array, bench: MixtureBenchmark, num_samples: int) -> jax.Array:
  """``(n, d)`` samples of the benchmark's source p0 (a Gaussian mixture)."""
  return _input_sample(key, benchmark_pieces(bench), num_samples)


@jax.jit
def benchmark_conditional(bench: MixtureBenchmark, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The benchmark's true π*(·|x) as a mixture: log weights ``(..., N)``, means ``(..., N, d)``, covs ``(N, d, d)``.

  Weights ∝ q_n N(x | μ_n, Σ_n + εI), means Σ̂_nΣ_n⁻¹μ_n + Σ̂_n x/ε, covariances Σ̂_n = (I/ε + Σ_n⁻¹)⁻¹.
  """
  return _conditional(benchmark_pieces(bench), x)


@jax.jit
def benchmark_conditional_moments(bench: MixtureBenchmark, x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mean ``(..., d)`` and covariance ``(..., d, d)`` of the benchmark's true π*(·|x) (the cBW-UVP reference)."""
  return gmm.mixture_moments(*benchmark_conditional(bench, x))


@jax.jit
def sample_benchmark_target(key: jax.Array, bench: MixtureBenchmark, x: jax.Array) -> jax.Array:
  """One y ~ π*(·|x) per point of x ``(..., d)``; with x ~ p0 these are samples of the target p1."""
  return _target_sample(key, benchmark_pieces(bench), x)


def _check_benchmark(bench) -> None:
  """Shapes and dtypes of a :class:`MixtureBenchmark` at trace time; its values too when concrete (a NaN log
  probability makes ``jax.random.categorical`` pick a component silently, an asymmetric covariance is read by its
  lower triangle alone)."""
  if not isinstance(bench, MixtureBenchmark):
    raise TypeError(f"`bench` must be a MixtureBenchmark (see mixture_benchmark), got {type(bench).__name__}.")
  input_shape, potential_shape = jnp.shape(bench.input_means), jnp.shape(bench.potential_means)
  if len(input_shape) != 2 or min(input_shape) < 1:
    raise ValueError(f"`bench.input_means` must have shape (M, d) with M, d >= 1, got {input_shape}.")
  m, d = input_shape
  if len(potential_shape) != 2 or potential_shape[0] < 1 or potential_shape[1] != d:
    raise ValueError(f"`bench.potential_means` must have shape (N, d) with N >= 1 and d = {d}, got {potential_shape}.")
  n = potential_shape[0]
  expected = {
    "input_log_probs": (m,),
    "input_means": (m, d),
    "input_covs": (m, d, d),
    "potential_log_probs": (n,),
    "potential_means": (n, d),
    "potential_covs": (n, d, d),
  }
  for field, shape in expected.items():
    value = getattr(bench, field)
    if jnp.shape(value) != shape:
      raise ValueError(
        f"`bench.{field}` must have shape {shape} (M = {m} input and N = {n} potential components, d = {d}), "
        f"got {jnp.shape(value)}."
      )
    if not jnp.issubdtype(jnp.result_type(value), jnp.floating):
      raise TypeError(f"`bench.{field}` must be floating point, got {jnp.result_type(value)}.")
  if jnp.ndim(bench.epsilon) != 0:
    raise ValueError(f"`bench.epsilon` must be a scalar, got shape {jnp.shape(bench.epsilon)}.")
  check_positive(bench.epsilon, "bench.epsilon")
  for field in ("input_log_probs", "potential_log_probs"):
    value = getattr(bench, field)
    if is_traced(value):
      continue
    log_probs = np.asarray(value, np.float64)
    if np.any(np.isnan(log_probs) | np.isposinf(log_probs)) or not np.any(np.isfinite(log_probs)):
      raise ValueError(
        f"`bench.{field}` must be log-probabilities (no NaN or +inf, at least one finite), got {log_probs}."
      )
  for field in ("input_means", "potential_means"):
    value = getattr(bench, field)
    if not is_traced(value) and not np.all(np.isfinite(np.asarray(value))):
      raise ValueError(f"`bench.{field}` must be finite, got a NaN or infinite entry.")
  _check_covariance_values(bench.input_covs, "bench.input_covs", definite=True)
  _check_covariance_values(bench.potential_covs, "bench.potential_covs", definite=True)


def benchmark_samplers(
  bench: MixtureBenchmark,
) -> tuple[Sampler, Sampler, Callable[[jax.Array, jax.Array], jax.Array]]:
  """Samplers ``(key, n) -> (n, d)`` of p0 and p1, and ``(key, x) -> y ~ π*(·|x)``, for ``light_sb.fit`` and the
  metrics.

  The covariances are factorised once here, so a sampler traced inside a training loop is only gathers and matrix
  products. p1 samples are y ~ π*(·|x) with fresh x ~ p0 (independent of the p0 batch, as in the benchmark).

  Args:
    bench: a :class:`MixtureBenchmark` (from :func:`mixture_benchmark`, or built by hand with consistent shapes,
      ε > 0 and positive definite covariances).
  """
  _check_benchmark(bench)
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
