r"""Synthetic ordinal data with a rare last class, and the metrics of PRESTO's simulations.

The design of Faletto & Bien, "Predicting Rare Events by Shrinking Towards Proportional Odds", ICML 2023,
arXiv 2305.18700, §4.1 ("sparse differences") and §4.2 ("dense differences"), as the authors' simulation code
generates it (github.com/gregfaletto/presto, ``Simulations/model_functions.R``):

- ``x ~ U[-1, 1]^p``; ``P(y ≤ k | x) = σ(α_k + xᵀβ_k)`` for ``k = 0..K-2`` (the authors' sign convention);
  ``y`` is drawn from the class probabilities (differences of the cumulative ones).
- Sparse differences: each entry of β_0 is ``base_value`` with probability ``dev_prob`` and 0 otherwise; each
  entry of each difference β_k - β_{k-1} is ``±dev_size`` (random sign) with probability ``dev_prob`` and 0
  otherwise. Defaults ``base_value = 0.5``, ``dev_size = 0.5``, ``dev_prob = 1/2``: ours, chosen because they give
  the rare-class shares printed on the paper's §4.1 figure (1.17%, 0.71%, 0.43%; we measure 1.15%, 0.71%, 0.43%
  over 200 draws). The version of the authors' ``4_1_sparse_diffs.R`` we could read uses ``base_value = 1``,
  ``dev_prob = 1/3`` (shares 1.34%, 0.83%, 0.51%).
  Dense differences: β_0 and every difference ``~ U[-dev_size, dev_size]`` (``dev_size = 0.5``).
- Intercepts (0, 3, 5), (0, 3.5, 5.5), (0, 4, 6) with n = 2500, p = 10, K = 4 (rare class ≈ 1.2%, 0.7%, 0.4%).
- A draw is rejected (new β and x) if any class probability at a sampled x is negative or some class is empty.
  Ours: a rejected draw redraws β and x together; the authors redraw x up to ten times for an empty class before
  redrawing β. The loop is a ``lax.while_loop`` (at most ``max_tries``; ``valid`` says whether it succeeded).

Metric (the authors' ``rare_prob_mse_gen``): the mean over the training x of ``(p̂_{K-1}(x) - p_{K-1}(x))²``.
Comparisons across replications use a paired t interval of the per-replication differences.

>>> import jax
>>> from toolkit.stats import ordinal_data
>>> data = ordinal_data.sparse_differences(jax.random.key(0), intercepts=(0.0, 3.0, 5.0))
>>> print(data.x.shape, data.probs.shape, bool(data.valid), bool(data.probs.min() >= 0))
(2500, 10) (2500, 4) True True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from toolkit import _checks


class OrdinalData(NamedTuple):
  """A simulated data set and its truth.

  Attributes:
    x: ``(n, p)`` features.
    y: ``(n,)`` int labels in ``0..K-1``.
    probs: ``(n, K)`` true class probabilities at x.
    intercepts: ``(K-1,)`` true α.
    coef: ``(p, K-1)`` true β_k as columns.
    valid: ``()`` whether a draw passed the checks within ``max_tries``.
  """

  x: jax.Array
  y: jax.Array
  probs: jax.Array
  intercepts: jax.Array
  coef: jax.Array
  valid: jax.Array


def class_probabilities(intercepts: jax.Array, coef: jax.Array, x: jax.Array) -> jax.Array:
  """``(n, K)`` ``P(y = k | x)`` = differences of ``σ(α_k + xᵀβ_k)`` (not rearranged: may be negative)."""
  # Mismatched shapes would broadcast (e.g. a (p,) coef against (K-1,) intercepts when n = K-1), silently.
  if jnp.ndim(x) != 2 or jnp.ndim(coef) != 2 or jnp.shape(coef)[0] != jnp.shape(x)[1]:
    raise ValueError(f"`x` must be (n, p) and `coef` (p, K-1), got {jnp.shape(x)} and {jnp.shape(coef)}.")
  if jnp.shape(intercepts) != jnp.shape(coef)[1:]:
    raise ValueError(f"`intercepts` must have shape ({jnp.shape(coef)[1]},), got {jnp.shape(intercepts)}.")
  cum = jax.nn.sigmoid(intercepts + x @ coef)
  n = x.shape[0]
  return jnp.diff(jnp.concatenate([jnp.zeros((n, 1), cum.dtype), cum, jnp.ones((n, 1), cum.dtype)], axis=1), axis=1)


def _check_design(num_features, num_classes, dev_size) -> None:
  _checks.check_int(num_features, "num_features")
  _checks.check_int(num_classes, "num_classes", minimum=2)
  # A negative dev_size reverses uniform's bounds (dense) and is meaningless as a size.
  if not _checks.is_traced(dev_size) and not float(dev_size) >= 0.0:
    raise ValueError(f"`dev_size` must be >= 0, got {dev_size!r}.")


def sparse_coef(key, num_features: int, num_classes: int, *, base_value=0.5, dev_size=0.5, dev_prob=0.5):
  """``(p, K-1)`` β_k of the sparse-differences design (§4.1)."""
  _check_design(num_features, num_classes, dev_size)
  # bernoulli takes any p: p > 1 keeps every entry and p < 0 none, silently.
  if not _checks.is_traced(dev_prob) and not 0.0 <= float(dev_prob) <= 1.0:
    raise ValueError(f"`dev_prob` must be a probability in [0, 1], got {dev_prob!r}.")
  k_keep, k_dev, k_sign = jax.random.split(key, 3)
  first = base_value * jax.random.bernoulli(k_keep, dev_prob, (num_features, 1))
  signs = jnp.where(jax.random.bernoulli(k_sign, 0.5, (num_features, num_classes - 2)), 1.0, -1.0)
  devs = dev_size * signs * jax.random.bernoulli(k_dev, dev_prob, (num_features, num_classes - 2))
  return jnp.cumsum(jnp.concatenate([first, devs], axis=1), axis=1)


def dense_coef(key, num_features: int, num_classes: int, *, dev_size=0.5):
  """``(p, K-1)`` β_k of the dense-differences design (§4.2): β_0 and the differences ``~ U[-dev_size, dev_size]``."""
  _check_design(num_features, num_classes, dev_size)
  steps = jax.random.uniform(key, (num_features, num_classes - 1), minval=-dev_size, maxval=dev_size)
  return jnp.cumsum(steps, axis=1)


def simulate(
  key: jax.Array,
  draw_coef: Callable[[jax.Array], jax.Array],
  intercepts,
  *,
  num_samples: int = 2500,
  num_features: int = 10,
  max_tries: int = 100,
) -> OrdinalData:
  """Draws β with ``draw_coef(key) -> (p, K-1)``, then ``x ~ U[-1, 1]^p`` and ``y``, until the draw is valid."""
  intercepts = jnp.asarray(intercepts, dtype=jnp.result_type(float))
  if intercepts.ndim != 1 or intercepts.shape[0] < 1 or not isinstance(intercepts, jax.Array):
    raise ValueError(f"`intercepts` must be a 1-D sequence of K-1 >= 1 values, got shape {intercepts.shape}.")
  for name, value in (("num_samples", num_samples), ("num_features", num_features), ("max_tries", max_tries)):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
      raise ValueError(f"`{name}` must be an int >= 1, got {value!r}.")
  num_classes = intercepts.shape[0] + 1

  def draw(k):
    k_coef, k_x, k_y = jax.random.split(k, 3)
    coef = draw_coef(k_coef).astype(intercepts.dtype)
    if coef.shape != (num_features, num_classes - 1):
      raise ValueError(f"`draw_coef` must return shape ({num_features}, {num_classes - 1}), got {coef.shape}.")
    x = jax.random.uniform(k_x, (num_samples, num_features), intercepts.dtype, -1.0, 1.0)
    probs = class_probabilities(intercepts, coef, x)
    cum = jnp.cumsum(probs, axis=1)[:, :-1]
    y = jnp.sum(jax.random.uniform(k_y, (num_samples, 1), intercepts.dtype) > cum, axis=1).astype(jnp.int32)
    counts = jnp.zeros(num_classes, jnp.int32).at[y].add(1)
    valid = jnp.all(probs >= 0) & jnp.all(counts > 0)
    return OrdinalData(x, y, probs, intercepts, coef, valid)

  def body(carry):
    k, tries, _ = carry
    k, sub = jax.random.split(k)
    return k, tries + 1, draw(sub)

  k0, sub0 = jax.random.split(key)
  _, _, data = jax.lax.while_loop(lambda c: (~c[2].valid) & (c[1] < max_tries), body, (k0, jnp.asarray(1), draw(sub0)))
  return data


def sparse_differences(
  key, *, intercepts=(0.0, 3.0, 5.0), num_samples: int = 2500, num_features: int = 10, base_value=0.5,
  dev_size=0.5, dev_prob=0.5, max_tries: int = 100,
) -> OrdinalData:  # fmt: skip
  """One data set of the sparse-differences design (arXiv 2305.18700, §4.1)."""
  num_classes = len(intercepts) + 1
  if num_classes < 3:
    raise ValueError(f"`intercepts` must have K-1 >= 2 values, got {intercepts!r}.")

  def draw_coef(k):
    return sparse_coef(k, num_features, num_classes, base_value=base_value, dev_size=dev_size, dev_prob=dev_prob)

  return simulate(key, draw_coef, intercepts, num_samples=num_samples, num_features=num_features, max_tries=max_tries)


def dense_differences(
  key, *, intercepts=(0.0, 3.0, 5.0), num_samples: int = 2500, num_features: int = 10, dev_size=0.5,
  max_tries: int = 100,
) -> OrdinalData:  # fmt: skip
  """One data set of the dense-differences design (arXiv 2305.18700, §4.2)."""
  num_classes = len(intercepts) + 1

  def draw_coef(k):
    return dense_coef(k, num_features, num_classes, dev_size=dev_size)

  return simulate(key, draw_coef, intercepts, num_samples=num_samples, num_features=num_features, max_tries=max_tries)


def rare_probability_mse(probs_hat: jax.Array, probs_true: jax.Array) -> jax.Array:
  """Mean over points of the squared error of the last (rare) class probability: ``(..., n, K) -> (...)``."""
  # Different shapes would broadcast (e.g. (n, K) against (1, K)) into a wrong mean, silently.
  if jnp.ndim(probs_hat) < 2 or jnp.shape(probs_hat) != jnp.shape(probs_true):
    raise ValueError(
      f"`probs_hat` and `probs_true` must have one shape (..., n, K), got {jnp.shape(probs_hat)} and "
      f"{jnp.shape(probs_true)}."
    )
  return jnp.mean((probs_hat[..., -1] - probs_true[..., -1]) ** 2, axis=-1)


class PairedInterval(NamedTuple):
  """Paired t interval of ``mean(a - b)``: ``mean``, ``low``, ``high``, ``p_value`` (two-sided), ``num``."""

  mean: float
  low: float
  high: float
  p_value: float
  num: int


def paired_t_interval(a, b, level: float = 0.95) -> PairedInterval:
  """Confidence interval of the mean paired difference ``a - b`` (Student t; NumPy/SciPy, host side)."""
  d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
  if d.ndim != 1 or d.size < 2:
    raise ValueError(f"`a` and `b` must be 1-D of equal length >= 2, got difference shape {d.shape}.")
  if not 0 < level < 1:
    raise ValueError(f"`level` must be in (0, 1), got {level!r}.")
  mean, se = d.mean(), d.std(ddof=1) / np.sqrt(d.size)
  half = scipy.stats.t.ppf(0.5 + level / 2, d.size - 1) * se
  p = float(scipy.stats.ttest_1samp(d, 0.0).pvalue) if se > 0 else float(mean == 0)
  return PairedInterval(float(mean), float(mean - half), float(mean + half), p, int(d.size))
