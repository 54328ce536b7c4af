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


def sqrtm_psd(matrix: jax.Array) -> jax.Array:
  """Square root of symmetric positive semi-definite matrices ``(..., d, d)`` by ``eigh``.

  The input is symmetrised and negative rounding-level eigenvalues are clipped at 0.

  >>> print(sqrtm_psd(jnp.array([[4.0, 0.0], [0.0, 9.0]])).diagonal().tolist())
  [2.0, 3.0]
  """
  w, v = jnp.linalg.eigh(0.5 * (matrix + jnp.swapaxes(matrix, -1, -2)))
  return (v * jnp.sqrt(jnp.maximum(w, 0.0))[..., None, :]) @ jnp.swapaxes(v, -1, -2)


def gaussian_fit(samples: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mean ``(..., d)`` and unbiased covariance ``(..., d, d)`` of samples ``(..., n, d)`` (as ``np.cov``)."""
  mean = jnp.mean(samples, axis=-2)
  centred = samples - mean[..., None, :]
  return mean, jnp.einsum("...ni,...nj->...ij", centred, centred) / (samples.shape[-2] - 1)


def bures_wasserstein(mean_a: jax.Array, cov_a: jax.Array, mean_b: jax.Array, cov_b: jax.Array) -> jax.Array:
  """½ W2² between N(μa, Σa) and N(μb, Σb): ½‖μa-μb‖² + ½trΣa + ½trΣb - tr((Σa^{½} Σb Σa^{½})^{½}).

  The benchmark's ``BW`` (arXiv 2306.10161, ``compute_BW_with_gt_stats``); batched over leading axes.

  >>> bw = bures_wasserstein(jnp.zeros(2), jnp.eye(2), jnp.ones(2), 4.0 * jnp.eye(2))
  >>> print(round(float(bw), 4))  # ½·2 + ½·(2 - 1)²·2
  2.0
  """
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
  return 100 * jnp.mean(jnp.sum((mapped - optimal) ** 2, axis=1)) / target_variance
