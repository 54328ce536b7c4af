r"""Metrics of OT benchmarks: Gaussian fits, the Bures-Wasserstein distance, BW-UVP, cBW-UVP and L2-UVP.

The unexplained-variance percentages (UVP) are those of the continuous OT benchmarks: L2-UVP of a map against the
optimal one (Korotin, Li, Genevay, Solomon, Filippov, Burnaev. "Do Neural Optimal Transport Solvers Work? A
Continuous Wasserstein-2 Benchmark", NeurIPS 2021, arXiv 2106.01954, Sec. 4), and BW-UVP / cBW-UVP of a plan
against the known entropic plan (Gushchin, Kolesov, Mokrov, Karpikova, Spiridonov, Burnaev, Korotin. "Building
the Bridge of Schrödinger: A Continuous Entropic Optimal Transport Benchmark", NeurIPS 2023 Datasets and
Benchmarks, arXiv 2306.10161, Sec. 4).

All matrix square roots in ``toolkit.ot`` are :func:`sqrtm_psd` (an ``eigh``: exact to rounding in float32 and
float64, which the closed-form oracles' tests need).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np


def sqrtm_psd(matrix: jax.Array) -> jax.Array:
  """Square root of symmetric positive semi-definite matrices ``(..., d, d)`` by ``eigh``.

  The input is symmetrised and negative rounding-level eigenvalues are clipped at 0.

  >>> print(sqrtm_psd(jnp.array([[4.0, 0.0], [0.0, 9.0]])).diagonal().tolist())
  [2.0, 3.0]
  """
  if jnp.ndim(matrix) < 2 or jnp.shape(matrix)[-1] != jnp.shape(matrix)[-2]:
    raise ValueError(f"`matrix` must be square, (..., d, d), got shape {jnp.shape(matrix)}.")
  w, v = jnp.linalg.eigh(0.5 * (matrix + jnp.swapaxes(matrix, -1, -2)))
  return (v * jnp.sqrt(jnp.maximum(w, 0.0))[..., None, :]) @ jnp.swapaxes(v, -1, -2)


def gaussian_fit(samples: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mean ``(..., d)`` and unbiased covariance ``(..., d, d)`` of samples ``(..., n, d)`` (as ``np.cov``)."""
  if jnp.ndim(samples) < 2 or jnp.shape(samples)[-2] < 2:
    raise ValueError(f"`samples` must have shape (..., n, d) with n >= 2, got {jnp.shape(samples)}.")
  mean = jnp.mean(samples, axis=-2)
  centred = samples - mean[..., None, :]
  return mean, jnp.einsum("...ni,...nj->...ij", centred, centred) / (samples.shape[-2] - 1)


def _check_gaussian(mean, cov, suffix: str) -> None:
  d = jnp.shape(mean)[-1] if jnp.ndim(mean) else None
  if d is None or jnp.shape(cov)[-2:] != (d, d):
    raise ValueError(
      f"`mean_{suffix}` must be (..., d) and `cov_{suffix}` (..., d, d), got {jnp.shape(mean)} and {jnp.shape(cov)}."
    )
  if not isinstance(cov, jax.core.Tracer):
    # Rounding-level negative eigenvalues are clipped by sqrtm_psd; a clearly negative one is not a covariance.
    eig = np.linalg.eigvalsh(0.5 * (np.asarray(cov, np.float64) + np.swapaxes(np.asarray(cov, np.float64), -1, -2)))
    if (eig.min(-1) < -1e-4 * np.maximum(np.abs(eig).max(-1), 1e-30)).any():
      raise ValueError(f"`cov_{suffix}` must be positive semi-definite, got an eigenvalue {float(eig.min()):.3g}.")


def bures_wasserstein(mean_a: jax.Array, cov_a: jax.Array, mean_b: jax.Array, cov_b: jax.Array) -> jax.Array:
  """½ W2² between N(μa, Σa) and N(μb, Σb): ½‖μa-μb‖² + ½trΣa + ½trΣb - tr((Σa^{½} Σb Σa^{½})^{½}).

  The benchmark's ``BW`` (arXiv 2306.10161, ``compute_BW_with_gt_stats``); batched over leading axes.

  >>> bw = bures_wasserstein(jnp.zeros(2), jnp.eye(2), jnp.ones(2), 4.0 * jnp.eye(2))
  >>> print(round(float(bw), 4))  # ½·2 + ½·(2 - 1)²·2
  2.0
  """
  _check_gaussian(mean_a, cov_a, "a")
  _check_gaussian(mean_b, cov_b, "b")
  root_a = sqrtm_psd(cov_a)
  cross = jnp.trace(sqrtm_psd(root_a @ cov_b @ root_a), axis1=-2, axis2=-1)
  return (
    0.5 * jnp.sum((mean_a - mean_b) ** 2, -1)
    + 0.5 * jnp.trace(cov_a, axis1=-2, axis2=-1)
    + 0.5 * jnp.trace(cov_b, axis1=-2, axis2=-1)
    - cross
  )


def bw_uvp(samples: jax.Array, true_mean: jax.Array, true_cov: jax.Array) -> jax.Array:
  """BW-UVP (%) = 100 · BW(Gaussian fit of samples, truth) / (½ tr Σ_true) (arXiv 2306.10161, Sec. 4)."""
  if jnp.ndim(samples) != 2 or jnp.shape(true_mean) != jnp.shape(samples)[-1:]:
    raise ValueError(
      f"`samples` must be (n, d) and `true_mean` (d,), got {jnp.shape(samples)} and {jnp.shape(true_mean)}."
    )
  mean, cov = gaussian_fit(samples)
  return 100.0 * bures_wasserstein(mean, cov, true_mean, true_cov) / (0.5 * jnp.trace(true_cov))


@functools.partial(jax.jit, static_argnames=("sampler", "num_samples", "batch_size"))
def conditional_bw_uvp(
  key: jax.Array,
  sampler: Callable[[jax.Array, jax.Array, int], jax.Array],
  x: jax.Array,
  true_means: jax.Array,
  true_covs: jax.Array,
  target_variance,
  *,
  num_samples: int = 1000,
  batch_size: int = 25,
) -> jax.Array:
  """cBW-UVP (%) = 100 · mean_x BW(fit of samples of y|x, true y|x) / (½ Var(y)) (arXiv 2306.10161, Sec. 4).

  Args:
    key: PRNG key.
    sampler: ``(key, x (d,), n) -> (n, d)`` samples of the model's y | x, e.g.
      ``lambda k, x, n: light_sb.sample_plan(k, params, x, eps, n)``.
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


def l2_uvp(mapped: jax.Array, optimal: jax.Array, target_variance) -> jax.Array:
  """L2-UVP (%) of a map: 100 · E‖T(x) - T*(x)‖² / Var(y) (arXiv 2106.01954, Sec. 4).

  Args:
    mapped: ``(n, d)`` T(x_i) of the learned map.
    optimal: ``(n, d)`` T*(x_i) of the optimal map.
    target_variance: Var(y) = tr Cov(y) of the target T*#μ.

  >>> print(float(l2_uvp(jnp.ones((4, 2)), jnp.zeros((4, 2)), 4.0)))
  50.0
  """
  if jnp.ndim(mapped) != 2 or jnp.shape(optimal) != jnp.shape(mapped):
    raise ValueError(
      f"`mapped` and `optimal` must be (n, d) arrays of one shape, got {jnp.shape(mapped)} and {jnp.shape(optimal)}."
    )
  if not isinstance(target_variance, jax.core.Tracer) and not float(target_variance) > 0:
    raise ValueError(f"`target_variance` must be > 0, got {target_variance!r}.")
  return 100 * jnp.mean(jnp.sum((mapped - optimal) ** 2, axis=1)) / target_variance
