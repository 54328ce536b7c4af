r"""Gaussian-kernel density estimation in log space, for hundreds of dimensions and large databases.

The estimator of Biroli & Mézard, "Kernel Density Estimators in Large Dimensions" (arXiv 2408.05807, 2024), Eq. of
the abstract with a Gaussian kernel:

  ``ρ̂_h(x) = (1/n) Σ_i N(x | y_i, h² I_d)``.

In ``d`` in the tens to hundreds every kernel term underflows (``log N`` is of order ``-d``), so everything is a
``logsumexp`` of ``log N(x | y_i, h² I) = -|x - y_i|²/(2h²) - (d/2) log(2π h²)``, accumulated over chunks of the
database with a running maximum (``jax.lax.scan``), so that the ``(m, n)`` matrix of kernel terms never exists.

Entry points: :func:`log_density` (the estimate), :func:`kernel_weight_stats` (how many data points carry the
sum at each point: the largest normalised weight, the participation ``Σ w_i²`` and the log-ratio of the two largest
terms), :func:`mean_log_likelihood` and :func:`kl_divergence` (held-out scores of a bandwidth) and
:func:`select_bandwidth` (the held-out-likelihood, i.e. KL-optimal, bandwidth over a grid). The paper's regime
thresholds ``h_CLT(α)``, ``h_G(α)`` and other closed forms for Gaussian data are in :mod:`toolkit.stats.kde_theory`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from toolkit._checks import is_traced

DEFAULT_CHUNK_SIZE = 2048


class KernelWeightStats(NamedTuple):
  """How the kernel sum at each point is shared among the data points (all of shape ``(m,)``).

  Attributes:
    log_density: ``log ρ̂_h(x)``.
    max_weight: the largest normalised weight ``max_i w_i``, ``w_i = N(x|y_i,h²I) / Σ_j N(x|y_j,h²I)``.
    participation: ``Σ_i w_i²`` (the inverse participation ratio: ``1/n`` when all points count equally, 1 when one
      point carries the sum).
    log_top_ratio: ``log z_(1) − log z_(2)``, the log-ratio of the two largest kernel terms (its inverse mean is a
      one-step Hill estimate of the stable index of the terms at the top of the database).
  """

  log_density: jax.Array
  max_weight: jax.Array
  participation: jax.Array
  log_top_ratio: jax.Array


class BandwidthSearch(NamedTuple):
  """The held-out log-likelihood of each bandwidth on a grid and the best one.

  Attributes:
    bandwidths: the grid, ``(k,)``.
    mean_log_likelihood: mean held-out ``log ρ̂_h(x)`` per bandwidth, ``(k,)``.
    index: index of the grid maximum.
    bandwidth: the grid maximiser.
    refined_bandwidth: the vertex of the parabola through the maximum and its two neighbours in ``log h`` (the grid
      maximiser when it lies on the edge of the grid).
  """

  bandwidths: jax.Array
  mean_log_likelihood: jax.Array
  index: jax.Array
  bandwidth: jax.Array
  refined_bandwidth: jax.Array


def _check_inputs(points, data, chunk_size) -> tuple[jax.Array, jax.Array]:
  x, y = jnp.asarray(points), jnp.asarray(data)
  if x.ndim != 2:
    raise ValueError(f"`points` must have shape (m, d), got shape {x.shape}.")
  if y.ndim != 2 or y.shape[0] < 1:
    raise ValueError(f"`data` must have shape (n, d) with n >= 1, got shape {y.shape}.")
  if x.shape[1] != y.shape[1]:
    raise ValueError(f"`points` and `data` must have the same dimension, got {x.shape[1]} and {y.shape[1]}.")
  if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
    raise ValueError(f"`chunk_size` must be a Python int >= 1, got {chunk_size!r}.")
  dtype = jnp.result_type(x.dtype, y.dtype, float)
  return x.astype(dtype), y.astype(dtype)


def _check_bandwidth(bandwidth) -> None:
  if is_traced(bandwidth):
    return
  # A vector of bandwidths would broadcast into the wrong shapes: vmap over it, or use select_bandwidth.
  if np.ndim(bandwidth) != 0:
    raise ValueError(f"`bandwidth` must be a scalar > 0, got shape {np.shape(bandwidth)}.")
  if not (np.isfinite(np.asarray(bandwidth, np.float64)) and np.asarray(bandwidth, np.float64) > 0):
    raise ValueError(f"`bandwidth` must be > 0 and finite, got {bandwidth}.")


def _chunks(data: jax.Array, chunk_size: int) -> tuple[jax.Array, jax.Array]:
  """``(num_chunks, c, d)`` chunks of the data (zero-padded) and the ``(num_chunks, c)`` mask of real rows."""
  n, d = data.shape
  c = min(chunk_size, n)
  num_chunks = -(-n // c)
  pad = num_chunks * c - n
  padded = jnp.pad(data, ((0, pad), (0, 0)))
  mask = jnp.arange(num_chunks * c) < n
  return padded.reshape(num_chunks, c, d), mask.reshape(num_chunks, c)


def _sq_dists(x: jax.Array, y: jax.Array) -> jax.Array:
  """``|x_a − y_b|²``, ``(m, c)``, by the expansion (one matmul), clipped at 0 against round-off."""
  sq = jnp.sum(x**2, axis=1)[:, None] + jnp.sum(y**2, axis=1)[None, :] - 2.0 * x @ y.T
  return jnp.maximum(sq, 0.0)


def _log_normaliser(d: int, h: jax.Array) -> jax.Array:
  return -0.5 * d * jnp.log(2.0 * jnp.pi * h**2)


def _scan_lse(x, data, inv_two_h2, chunk_size):
  """Running ``logsumexp_i(−|x − y_i|² · inv_two_h2)`` over chunks; ``inv_two_h2`` has shape ``(k,)`` → ``(k, m)``."""
  chunks, masks = _chunks(data, chunk_size)
  m, k = x.shape[0], inv_two_h2.shape[0]

  def body(carry, chunk):
    run_max, run_sum = carry
    y, mask = chunk
    logits = -inv_two_h2[:, None, None] * _sq_dists(x, y)[None]  # (k, m, c)
    logits = jnp.where(mask[None, None, :], logits, -jnp.inf)
    new_max = jnp.maximum(run_max, jnp.max(logits, axis=-1))
    run_sum = run_sum * jnp.exp(run_max - new_max) + jnp.sum(jnp.exp(logits - new_max[..., None]), axis=-1)
    return (new_max, run_sum), None

  init = (jnp.full((k, m), -jnp.inf, x.dtype), jnp.zeros((k, m), x.dtype))
  (run_max, run_sum), _ = jax.lax.scan(body, init, (chunks, masks))
  return run_max + jnp.log(run_sum)


def log_density(points, data, bandwidth, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> jax.Array:
  """``log ρ̂_h(x) = log[(1/n) Σ_i N(x | y_i, h² I)]`` at each point, in log space, chunked over the data.

  Biroli & Mézard (arXiv 2408.05807), the estimator of the abstract with a Gaussian kernel; equals scikit-learn's
  ``KernelDensity(kernel="gaussian", bandwidth=h).fit(data).score_samples(points)``.

  Args:
    points: ``(m, d)`` evaluation points.
    data: ``(n, d)`` database.
    bandwidth: scalar ``h > 0`` (may be traced).
    chunk_size: database rows per chunk (static); memory is ``O(m · chunk_size)``.

  Returns:
    ``(m,)`` log-densities.

  >>> x = jnp.zeros((1, 200)); y = jnp.zeros((5, 200))
  >>> round(float(log_density(x, y, 1.0)[0]), 3)  # -100 log(2π)
  -183.788
  """
  x, y = _check_inputs(points, data, chunk_size)
  _check_bandwidth(bandwidth)
  h = jnp.asarray(bandwidth, dtype=x.dtype)
  lse = _scan_lse(x, y, (0.5 / h**2)[None], chunk_size)[0]
  return lse - jnp.log(y.shape[0]) + _log_normaliser(x.shape[1], h)


def kernel_weight_stats(points, data, bandwidth, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> KernelWeightStats:
  """The estimate and how many data points carry it: largest weight, participation, top-two log-ratio.

  These measure the regimes of Biroli & Mézard (arXiv 2408.05807): below ``h_G`` the sum is dominated by a few
  points (``participation`` of order 1); above it, by exponentially many (``participation → 0``).

  Args:
    points: ``(m, d)`` evaluation points.
    data: ``(n, d)`` database, ``n >= 2``.
    bandwidth: scalar ``h > 0``.
    chunk_size: database rows per chunk (static).

  Returns:
    A :class:`KernelWeightStats` of ``(m,)`` arrays.

  >>> x = jnp.zeros((1, 2)); y = jnp.array([[0.0, 0.0], [3.0, 0.0]])
  >>> s = kernel_weight_stats(x, y, 0.5)
  >>> round(float(s.max_weight[0]), 4), round(float(s.log_top_ratio[0]), 2)
  (1.0, 18.0)
  """
  x, y = _check_inputs(points, data, chunk_size)
  _check_bandwidth(bandwidth)
  if y.shape[0] < 2:
    raise ValueError(f"`data` needs n >= 2 rows for the top-two ratio, got {y.shape[0]}.")
  h = jnp.asarray(bandwidth, dtype=x.dtype)
  chunks, masks = _chunks(y, chunk_size)
  m = x.shape[0]
  inv = 0.5 / h**2

  def body(carry, chunk):
    max1, sum1, max2, sum2, top2 = carry
    yc, mask = chunk
    logits = jnp.where(mask[None, :], -inv * _sq_dists(x, yc), -jnp.inf)  # (m, c)
    new1 = jnp.maximum(max1, jnp.max(logits, axis=1))
    sum1 = sum1 * jnp.exp(max1 - new1) + jnp.sum(jnp.exp(logits - new1[:, None]), axis=1)
    new2 = jnp.maximum(max2, jnp.max(2.0 * logits, axis=1))
    sum2 = sum2 * jnp.exp(max2 - new2) + jnp.sum(jnp.exp(2.0 * logits - new2[:, None]), axis=1)
    k = min(2, logits.shape[1])
    top2 = jax.lax.top_k(jnp.concatenate([top2, jax.lax.top_k(logits, k)[0]], axis=1), 2)[0]
    return (new1, sum1, new2, sum2, top2), None

  neg = jnp.full((m,), -jnp.inf, x.dtype)
  zero = jnp.zeros((m,), x.dtype)
  init = (neg, zero, neg, zero, jnp.full((m, 2), -jnp.inf, x.dtype))
  (max1, sum1, max2, sum2, top2), _ = jax.lax.scan(body, init, (chunks, masks))
  lse1 = max1 + jnp.log(sum1)
  lse2 = max2 + jnp.log(sum2)
  return KernelWeightStats(
    log_density=lse1 - jnp.log(y.shape[0]) + _log_normaliser(x.shape[1], h),
    max_weight=jnp.exp(top2[:, 0] - lse1),
    participation=jnp.exp(lse2 - 2.0 * lse1),
    log_top_ratio=top2[:, 0] - top2[:, 1],
  )


def mean_log_likelihood(points, data, bandwidth, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> jax.Array:
  """The mean held-out log-likelihood ``(1/m) Σ_a log ρ̂_h(x_a)`` of a bandwidth (points apart from the data).

  Arguments as in :func:`log_density`, which checks them.
  """
  return jnp.mean(log_density(points, data, bandwidth, chunk_size=chunk_size))


def kl_divergence(
  points,
  data,
  bandwidth,
  log_target: Callable[[jax.Array], jax.Array],
  *,
  chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> jax.Array:
  """Monte Carlo ``KL(ρ ‖ ρ̂_h) ≈ (1/m) Σ_a [log ρ(x_a) − log ρ̂_h(x_a)]`` over held-out points ``x_a ~ ρ``.

  Args:
    points: ``(m, d)`` fresh samples of the target ``ρ`` (not in ``data``).
    data: ``(n, d)`` database drawn from ``ρ``.
    bandwidth: scalar ``h > 0``.
    log_target: ``(m, d) -> (m,)``, the target's log-density ``log ρ``.
    chunk_size: database rows per chunk (static).

  Returns:
    The scalar KL estimate (nats).
  """
  if not callable(log_target):
    raise TypeError(f"`log_target` must be a function (m, d) -> (m,), got {type(log_target).__name__}.")
  x = jnp.asarray(points)
  log_estimate = log_density(x, data, bandwidth, chunk_size=chunk_size)  # checks points, data and bandwidth
  log_rho = log_target(x)
  # An (m, 1) output would broadcast against the (m,) estimate into an (m, m) matrix, silently.
  if jnp.shape(log_rho) != log_estimate.shape:
    raise ValueError(f"`log_target` must return shape {log_estimate.shape}, got {jnp.shape(log_rho)}.")
  return jnp.mean(log_rho - log_estimate)


def select_bandwidth(points, data, bandwidths, *, chunk_size: int = 512) -> BandwidthSearch:
  """The held-out-likelihood (KL-optimal) bandwidth over a grid; the distances are computed once for all ``h``.

  Maximising the mean held-out ``log ρ̂_h`` is minimising the Monte Carlo ``KL(ρ ‖ ρ̂_h)``, whose optimum
  Biroli & Mézard (arXiv 2408.05807) place below ``h_CLT``.

  Args:
    points: ``(m, d)`` held-out points.
    data: ``(n, d)`` database.
    bandwidths: ``(k,)`` increasing grid of ``h > 0``.
    chunk_size: database rows per chunk (static); memory is ``O(k · m · chunk_size)``.

  Returns:
    A :class:`BandwidthSearch`.

  >>> key_x, key_y = jax.random.split(jax.random.key(0))
  >>> y = jax.random.normal(key_y, (400, 2)); x = jax.random.normal(key_x, (400, 2))
  >>> out = select_bandwidth(x, y, jnp.geomspace(0.05, 2.0, 30))
  >>> bool(0.1 < out.refined_bandwidth < 1.0)
  True
  """
  x, y = _check_inputs(points, data, chunk_size)
  hs = jnp.asarray(bandwidths, dtype=x.dtype)
  if hs.ndim != 1 or hs.shape[0] < 1:
    raise ValueError(f"`bandwidths` must be a non-empty 1-D grid, got shape {hs.shape}.")
  lse = _scan_lse(x, y, 0.5 / hs**2, chunk_size)  # (k, m)
  ll = jnp.mean(lse, axis=1) - jnp.log(y.shape[0]) + _log_normaliser(x.shape[1], hs)
  i = jnp.argmax(ll)
  k = hs.shape[0]
  j = jnp.clip(i, 1, max(k - 2, 1))
  if k >= 3:
    t = jnp.log(jax.lax.dynamic_slice(hs, (j - 1,), (3,)))
    f = jax.lax.dynamic_slice(ll, (j - 1,), (3,))
    denom = (t[0] - t[1]) * (t[0] - t[2]) * (t[1] - t[2])
    a = (t[2] * (f[1] - f[0]) + t[1] * (f[0] - f[2]) + t[0] * (f[2] - f[1])) / denom
    b = (t[2] ** 2 * (f[0] - f[1]) + t[1] ** 2 * (f[2] - f[0]) + t[0] ** 2 * (f[1] - f[2])) / denom
    vertex = jnp.clip(-b / (2.0 * a), t[0], t[2])
    interior = (i > 0) & (i < k - 1) & (a < 0)
    refined = jnp.where(interior, jnp.exp(vertex), hs[i])
  else:
    refined = hs[i]
  return BandwidthSearch(bandwidths=hs, mean_log_likelihood=ll, index=i, bandwidth=hs[i], refined_bandwidth=refined)
