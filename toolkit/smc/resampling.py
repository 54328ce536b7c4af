"""Resampling schemes, effective sample size and the adaptive-resampling rule, all in log-space.

The four classical unbiased schemes (Douc, Cappé and Moulines, "Comparison of resampling schemes for particle
filtering", 2005): each maps normalised weights ``w`` (N,) to ``num_samples`` ancestor indices whose expected
offspring counts are ``num_samples * w``. They take ``(key, weights, num_samples)`` like blackjax's
``blackjax.smc.resampling`` so the two are interchangeable, and have log-weight variants for callers that keep
unnormalised log-weights. Shapes are static, so every function works under ``jit`` and ``vmap``.

Invalid weights (a NaN, a negative entry, or no positive finite mass) are refused with a ``ValueError`` when the
weights are concrete. Under ``jit`` they cannot raise: the resamplers then return garbage indices, and the SMC drivers
(``paris``, ``fkc``) report the step through their outputs (NaN log-likelihood and estimate, ``nan_detected``).
``normalize_log_weights`` propagates a NaN instead of hiding it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from toolkit import _checks

Resampler = Callable[[jax.Array, jax.Array, int], jax.Array]


def _check_weights(weights, name="weights") -> None:
  if jnp.ndim(weights) != 1 or jnp.shape(weights)[0] < 1:
    raise ValueError(f"`{name}` must be a 1-D array over at least one particle, got shape {jnp.shape(weights)}.")
  if not jnp.issubdtype(jnp.result_type(weights), jnp.floating):
    raise TypeError(f"`{name}` must be a floating array, got dtype {jnp.result_type(weights)}.")


def _check_log_weight_values(log_weights) -> None:
  """Concrete log-weights must be free of NaN and +inf (either makes every normalised weight NaN)."""
  if _checks.is_traced(log_weights):
    return
  lw = np.asarray(log_weights)
  bad = np.isnan(lw) | (lw == np.inf)
  if bad.any():
    raise ValueError(
      f"`log_weights` must be free of NaN and +inf, got {lw[bad][0]} at indices {np.flatnonzero(bad)[:8].tolist()}."
    )


def _check_num_samples(num_samples) -> int:
  if not isinstance(num_samples, int | np.integer) or isinstance(num_samples, bool) or num_samples < 1:
    raise ValueError(f"`num_samples` must be a positive int (a static shape), got {num_samples!r}.")
  return int(num_samples)


def _sorted_to_indices(weights: jax.Array, positions: jax.Array) -> jax.Array:
  """Indices ``i`` with ``cdf[i-1] <= u·cdf[-1] < cdf[i]`` for ``positions`` in [0, 1) (any order)."""
  cdf = jnp.cumsum(weights)
  # The last cdf entry can fall a few ulps short of 1 (or of the total when weights are unnormalised): scale the
  # positions by it and clip, so no index ever points past the end.
  idx = jnp.searchsorted(cdf, positions * cdf[-1], side="right")
  return jnp.clip(idx, 0, weights.shape[0] - 1).astype(jnp.int32)


def systematic(key: jax.Array, weights: jax.Array, num_samples: int) -> jax.Array:
  """Systematic resampling: one uniform ``u``, positions ``(m + u) / M``. Returns sorted indices (M,)."""
  _check_weights(weights)
  _checks.check_weight_values(weights)
  m = _check_num_samples(num_samples)
  u = jax.random.uniform(key, (), dtype=weights.dtype)
  return _sorted_to_indices(weights, (jnp.arange(m, dtype=weights.dtype) + u) / m)


def stratified(key: jax.Array, weights: jax.Array, num_samples: int) -> jax.Array:
  """Stratified resampling: one uniform per stratum ``[m/M, (m+1)/M)``. Returns sorted indices (M,)."""
  _check_weights(weights)
  _checks.check_weight_values(weights)
  m = _check_num_samples(num_samples)
  u = jax.random.uniform(key, (m,), dtype=weights.dtype)
  return _sorted_to_indices(weights, (jnp.arange(m, dtype=weights.dtype) + u) / m)


def multinomial(key: jax.Array, weights: jax.Array, num_samples: int) -> jax.Array:
  """Multinomial resampling: M i.i.d. draws from Cat(w), in O(N + M) by sorted uniforms.

  The sorted uniforms are normalised cumulative sums of M + 1 exponentials (the order statistics of M uniforms),
  so no sort is needed; ``jax.random.categorical`` would cost O(N M) (Gumbel-max). Returns sorted indices.
  """
  _check_weights(weights)
  _checks.check_weight_values(weights)
  m = _check_num_samples(num_samples)
  e = jax.random.exponential(key, (m + 1,), dtype=weights.dtype)
  positions = jnp.cumsum(e)[:-1] / jnp.sum(e)
  return _sorted_to_indices(weights, positions)


def residual(key: jax.Array, weights: jax.Array, num_samples: int) -> jax.Array:
  """Residual resampling: ``floor(M w_i)`` deterministic copies of each ``i``, the rest multinomial on the residuals.

  The deterministic part is written into a fixed-length output (static shapes under jit): position ``m`` holds the
  particle whose copy range ``[c_{i-1}, c_i)`` contains ``m``; positions past the deterministic total take the
  multinomial draws. The result is in particle order, not shuffled.
  """
  _check_weights(weights)
  _checks.check_weight_values(weights)
  m = _check_num_samples(num_samples)
  w = weights / jnp.sum(weights)
  copies = jnp.floor(m * w)
  n_det = jnp.sum(copies).astype(jnp.int32)
  det_cdf = jnp.cumsum(copies)
  slot = jnp.arange(m)
  det_idx = jnp.clip(jnp.searchsorted(det_cdf, slot, side="right"), 0, w.shape[0] - 1).astype(jnp.int32)
  resid = m * w - copies
  # With no residual mass at all (every M w_i an integer) the multinomial part is never used: guard its weights.
  resid = jnp.where(jnp.sum(resid) > 0, resid, jnp.ones_like(resid))
  # i.i.d. (unsorted) draws, so that the first M - n_det of them are still an i.i.d. sample; they fill the slots
  # n_det..M-1.
  rand_idx = _sorted_to_indices(resid, jax.random.uniform(key, (m,), dtype=w.dtype))
  rand_idx = rand_idx[jnp.clip(slot - n_det, 0, m - 1)]
  return jnp.where(slot < n_det, det_idx, rand_idx)


SCHEMES: dict[str, Resampler] = {
  "multinomial": multinomial,
  "stratified": stratified,
  "systematic": systematic,
  "residual": residual,
}


def check_resampler(resampler) -> Resampler:
  """``resampler`` itself if it is a resampling function ``(key, weights, num_samples) -> indices``."""
  if isinstance(resampler, str) or not callable(resampler):
    raise TypeError(
      f"`resampler` must be a function (key, weights, num_samples) -> indices such as "
      f"toolkit.smc.resampling.systematic (one of {sorted(SCHEMES)}), got {resampler!r}."
    )
  return resampler


def normalize_log_weights(log_weights: jax.Array) -> jax.Array:
  """Normalised log-weights ``lw - logsumexp(lw)``; an all ``-inf`` vector becomes uniform instead of NaN, while a
  NaN anywhere (or a ``+inf``) makes every entry NaN, so that a broken weight is never silently replaced."""
  _check_weights(log_weights, "log_weights")
  finite = jnp.any(jnp.isfinite(log_weights))
  broken = jnp.any(jnp.isnan(log_weights) | (log_weights == jnp.inf))
  safe = jnp.where(finite, log_weights, jnp.zeros_like(log_weights))
  return jnp.where(broken, jnp.nan, safe - jax.nn.logsumexp(safe))


def log_ess(log_weights: jax.Array) -> jax.Array:
  """Log effective sample size, ``2 logsumexp(lw) - logsumexp(2 lw)`` (Kong, Liu and Wong 1994)."""
  _check_weights(log_weights, "log_weights")
  return 2.0 * jax.nn.logsumexp(log_weights) - jax.nn.logsumexp(2.0 * log_weights)


def ess(log_weights: jax.Array) -> jax.Array:
  """Effective sample size ``(Σ w)² / Σ w²`` from unnormalised log-weights, in [1, N]."""
  return jnp.exp(log_ess(log_weights))


def resample_log(
  key: jax.Array,
  log_weights: jax.Array,
  num_samples: int | None = None,
  resampler: Resampler = systematic,
) -> jax.Array:
  """Ancestor indices from unnormalised log-weights (normalised in log-space first, so underflow is harmless)."""
  check_resampler(resampler)
  _check_weights(log_weights, "log_weights")
  _check_log_weight_values(log_weights)
  n = jnp.shape(log_weights)[0] if num_samples is None else num_samples
  return resampler(key, jnp.exp(normalize_log_weights(log_weights)), n)


class AdaptiveResampling(NamedTuple):
  """Result of one adaptive-resampling decision.

  Attributes:
    ancestors: (N,) indices; ``arange(N)`` where no resampling happened.
    log_weights: (N,) log-weights after the step: zeros after resampling, the input otherwise.
    resampled: bool, whether resampling happened.
    log_normalizer_increment: ``logsumexp(lw) - log N`` where resampling happened, else 0. Summing these and the
      final ``logsumexp(lw) - log N`` gives the usual estimate of log Z.
    ess: effective sample size before the decision.
  """

  ancestors: jax.Array
  log_weights: jax.Array
  resampled: jax.Array
  log_normalizer_increment: jax.Array
  ess: jax.Array


def adaptive_resample(
  key: jax.Array,
  log_weights: jax.Array,
  *,
  ess_threshold: float = 0.5,
  resampler: Resampler = systematic,
) -> AdaptiveResampling:
  """Resample when ESS < ``ess_threshold`` · N (1 resamples always, 0 never), as a jit/vmap-safe select.

  Both branches are computed and one is selected: under ``vmap`` a ``lax.cond`` becomes a select anyway.
  """
  n = log_weights.shape[0]
  current_ess = ess(log_weights)
  if isinstance(ess_threshold, jax.core.Tracer):
    # A traced threshold (vmapped over, say) cannot pick the branch at trace time: the comparison does it
    # (a threshold of 1 resamples whenever ESS < N, i.e. unless the weights are exactly equal).
    if jnp.ndim(ess_threshold) != 0:
      raise ValueError(f"`ess_threshold` must be a scalar, got shape {jnp.shape(ess_threshold)}.")
    do = (current_ess < ess_threshold * n) | (ess_threshold >= 1.0)
  else:
    if not 0.0 <= ess_threshold <= 1.0:
      raise ValueError(f"`ess_threshold` must be in [0, 1] (a fraction of N), got {ess_threshold}.")
    do = current_ess < ess_threshold * n if ess_threshold < 1.0 else jnp.array(True)
  idx = resample_log(key, log_weights, n, resampler)
  ancestors = jnp.where(do, idx, jnp.arange(n, dtype=idx.dtype))
  increment = jax.nn.logsumexp(log_weights) - jnp.log(n)
  return AdaptiveResampling(
    ancestors=ancestors,
    log_weights=jnp.where(do, jnp.zeros_like(log_weights), log_weights),
    resampled=do,
    log_normalizer_increment=jnp.where(do, increment, jnp.zeros_like(increment)),
    ess=current_ess,
  )
