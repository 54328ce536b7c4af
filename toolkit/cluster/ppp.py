r"""Probabilistic Partitive Partitioning (PPP): divisive k-means splits validated by a Gaussian mixture.

Mujahid Sultan, "Probabilistic Partitive Partitioning (PPP)", arXiv 2003.04372 (2020).

What the paper states (abstract): combine k-means, a combinatorial method used to *partition* the data, with a
Gaussian mixture model, a probabilistic method used to *validate the k-means partitions*, so that the clusters
are (1) the same whatever the initial conditions, (2) found without fixing their number beforehand, and (3)
computable on large data.

**What is our reconstruction.** We could not read the paper's algorithm section (no public code is known
either); the split rule, the validation statistics, the thresholds and the stopping rule below are ours, a
"PPP-style" divisive scheme close to bisecting k-means and to G-means (Hamerly & Elkan, NeurIPS 2003), built only
on the abstract's description:

1. Start with one cluster holding every point. Visit the leaves in order (lowest index first).
2. Bisect the visited leaf with k-means (k = 2, k-means++ seeding restricted to the leaf, the best of
   ``num_init`` restarts; ott-jax's :func:`ott.tools.k_means.k_means` with the leaf as point weights).
3. Validate the bisection with Gaussian mixtures (ott-jax's :mod:`ott.tools.gaussian_mixture`, full covariances,
   ``reg_covar`` added to each diagonal as scikit-learn does): a one-component fit (closed form) and a
   two-component fit started at the k-means halves (one M step from the halves, then ``num_em_steps`` EM steps).
   The split is accepted when all of

   * ``BIC(2) < BIC(1)`` (Schwarz 1978; ``BIC = -2 log L + p log n`` with ``p = K d + K d(d+1)/2 + K - 1``),
   * the adjusted Rand index between the mixture's MAP labels and the k-means labels is ``>= agreement_threshold``
     (the mixture reproduces the k-means partition),
   * the mean maximal posterior probability of the mixture is ``>= confidence_threshold`` (the halves are
     separable),
   * both children hold at least ``min_cluster_size`` points, and fewer than ``max_clusters`` clusters exist.

   The children of an accepted split are the mixture's MAP labels on the leaf (``mixture_labels=True``; the
   k-means halves with ``False``). A rejected leaf is final.
4. Stop when every leaf is final; the number of clusters is the number of leaves, found, not given.

Our choices, and what we measured that led to them (on the blobs of :mod:`toolkit.cluster.ppp_data`, before
the experiment's seeds were run; they are hyperparameters of the reconstruction, not figures of the paper):

* ``agreement_threshold = 0.8`` (our research notes suggested 0.95): a two-component mixture of a leaf that holds
  several clusters is misspecified, and at the root of the 2-D blobs its agreement with k-means is only
  0.90-0.94, so 0.95 stops at one cluster; on halves of a single Gaussian blob the agreement is 0.0-0.7.
* ``num_em_steps = 5`` (few): after 50 EM steps the root mixture of the 10-D blobs can drift to another
  two-way grouping of the five clusters (agreement 0.34) and the search stops at one cluster; the mixture is meant
  to validate the k-means partition, not to search for another one.
* MAP children: k-means' equidistant boundary cuts the tail off a wide cluster next to a tight one; kept as a
  leaf, that tail later split off as a spurious cluster (6 clusters found instead of 5 in 6 of 6 trials).
* ``min_cluster_size = 2 (d + 1)`` by default, so that each covariance rests on more than d points.

The thresholds make the result repeatable across seeds: a split of a single Gaussian blob, which is where
k-means depends on its seed, is rejected, and the splits that remain separate groups whatever the seed.

The loop is ``init`` followed by a ``jax.lax.scan`` of ``step`` over ``2 max_clusters - 1`` attempts (each attempt
either splits a leaf or makes it final), so :func:`fit` is one jitted function of fixed shapes; a leaf is a
``(n,)`` weight mask, which keeps every k-means and EM call at the full shape.

>>> import jax
>>> import jax.numpy as jnp
>>> from toolkit.cluster import ppp
>>> k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
>>> x = jnp.concatenate([jax.random.normal(k1, (50, 2)), jnp.array([9.0, 0.0]) + jax.random.normal(k2, (50, 2)),
...                      jnp.array([0.0, 9.0]) + jax.random.normal(k3, (50, 2))])
>>> out = ppp.fit(jax.random.key(1), x, max_clusters=6)  # compiles once (about 10 s on a CPU), then milliseconds
>>> int(out.n_clusters), out.labels.shape
(3, (150,))
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from ott.tools import k_means as ott_k_means
from ott.tools.gaussian_mixture import fit_gmm
from ott.tools.gaussian_mixture import gaussian_mixture as ott_gmm

from toolkit import _checks

GaussianMixture = ott_gmm.GaussianMixture


class PPPState(NamedTuple):
  """State of the divisive loop.

  Attributes:
    labels: ``(n,)`` int32 leaf index of each point, in ``[0, num_clusters)``.
    num_clusters: int32 scalar, number of leaves so far.
    final: ``(max_clusters,)`` bool, leaves whose split was rejected (or slots not yet used: ``False``).
  """

  labels: jax.Array
  num_clusters: jax.Array
  final: jax.Array


class SplitInfo(NamedTuple):
  """The validation statistics of one attempted split (stacked over attempts in :class:`PPPOutput`).

  Attributes:
    node: int32 leaf that was visited (``-1``: nothing left to visit, the attempt did nothing; then ``size`` is 0
      and the statistics are NaN).
    size: number of points in the leaf.
    bic_one: BIC of the one-component Gaussian fit of the leaf.
    bic_two: BIC of the two-component mixture fitted by EM from the k-means halves.
    agreement: adjusted Rand index between the mixture's MAP labels and the k-means labels on the leaf.
    confidence: mean over the leaf of the mixture's maximal posterior probability.
    accepted: whether the leaf was split.
  """

  node: jax.Array
  size: jax.Array
  bic_one: jax.Array
  bic_two: jax.Array
  agreement: jax.Array
  confidence: jax.Array
  accepted: jax.Array


class PPPOutput(NamedTuple):
  """Result of :func:`fit`.

  Attributes:
    labels: ``(n,)`` int32 cluster of each point, numbered by first appearance in ``x`` (0 is the cluster of
      ``x[0]``), so that equal partitions have equal labels.
    n_clusters: int32 scalar, the number of clusters found.
    centroids: ``(max_clusters, d)`` mean of each cluster, in the order of ``labels`` (rows ``>= n_clusters``
      are 0).
    trace: :class:`SplitInfo` with a leading axis of ``2 max_clusters - 1`` attempts, in visiting order.
    reached_max_clusters: bool, the search stopped at ``max_clusters`` with leaves still to visit (then the
      count is a cap, not a finding).
  """

  labels: jax.Array
  n_clusters: jax.Array
  centroids: jax.Array
  trace: SplitInfo
  reached_max_clusters: jax.Array


# ----------------------------------------------------------------------------------------------------------------
# Input checks.


def _check_points(x: Any) -> jax.Array:
  if not hasattr(x, "shape") or not hasattr(x, "dtype"):
    raise TypeError(f"`x` must be an array of shape (n, d), got {type(x).__name__}.")
  if jnp.ndim(x) != 2:
    raise ValueError(f"`x` must have shape (n, d), got {jnp.shape(x)}.")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"`x` must have a floating dtype, got {x.dtype}.")
  return x


def _check_int(name: str, value: Any, low: int) -> int:
  if isinstance(value, bool) or not isinstance(value, int) or value < low:
    raise ValueError(f"`{name}` must be a Python int >= {low}, got {value!r}.")
  return value


def _check_fraction(name: str, value: Any, low: float = 0.0, high: float = 1.0) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
    raise ValueError(f"`{name}` must be a float in [{low}, {high}], got {value!r}.")
  return float(value)


def _check_key(key: Any) -> None:
  if not isinstance(key, jax.Array):
    raise TypeError(f"`key` must be a jax.random key, got {type(key).__name__}.")
  if not (jnp.issubdtype(key.dtype, jax.dtypes.prng_key) or (key.dtype == jnp.uint32 and key.shape == (2,))):
    raise TypeError(f"`key` must be a jax.random key, got an array of dtype {key.dtype} and shape {key.shape}.")


def _check_mixture_points(gmm: Any, x: Any, weights: Any) -> None:
  if not isinstance(gmm, GaussianMixture):
    raise TypeError(f"`gmm` must be an ott-jax GaussianMixture, got {type(gmm).__name__}.")
  _check_points(x)
  if x.shape[1] != gmm.n_dimensions:
    raise ValueError(f"`x` must have {gmm.n_dimensions} columns like the mixture `gmm`, got shape {x.shape}.")
  if weights is not None:
    if jnp.shape(weights) != x.shape[:1]:
      raise ValueError(f"`weights` must have shape {x.shape[:1]} (one per point of `x`), got {jnp.shape(weights)}.")
    _checks.check_weight_values(weights)


def _check_em_inputs(x: Any, weights: Any, responsibilities: Any) -> jax.Array:
  x = _check_points(x)
  if jnp.shape(weights) != x.shape[:1] or jnp.ndim(responsibilities) != 2 or len(responsibilities) != x.shape[0]:
    raise ValueError(
      f"`weights` must have shape (n,) and `responsibilities` (n, k) with n = {x.shape[0]} (the points of `x`), "
      f"got {jnp.shape(weights)} and {jnp.shape(responsibilities)}."
    )
  # Negative or NaN weights would give a silently wrong mixture; traced ones (inside fit) are masks built here.
  _checks.check_weight_values(weights)
  return x


def default_min_cluster_size(dim: int) -> int:
  """``2 (d + 1)``: our default smallest child of a split, so that each full covariance rests on > d points."""
  return 2 * (_checks.check_int(dim, "dim", 1) + 1)


# ----------------------------------------------------------------------------------------------------------------
# Pieces of the validation: agreement, likelihood and BIC of ott-jax mixtures.


def adjusted_rand_index(labels_a: jax.Array, labels_b: jax.Array, num_labels: int, weights=None) -> jax.Array:
  """Adjusted Rand index (Hubert & Arabie, J. Classification 1985) of two labelings, with optional 0/1 weights.

  Args:
    labels_a: ``(n,)`` int labels in ``[0, num_labels)``.
    labels_b: ``(n,)`` int labels in ``[0, num_labels)``.
    num_labels: static number of label values.
    weights: ``(n,)`` point weights (1 keeps a point, 0 drops it) or ``None`` (all ones).

  Returns:
    Scalar ARI; 1.0 when both labelings are a single cluster (scikit-learn's convention).

  >>> print(float(adjusted_rand_index(jnp.array([0, 0, 1, 1]), jnp.array([1, 1, 0, 0]), 2)))
  1.0
  """
  _check_int("num_labels", num_labels, 1)
  if jnp.ndim(labels_a) != 1 or jnp.shape(labels_b) != jnp.shape(labels_a):
    raise ValueError(
      f"`labels_a` and `labels_b` must be (n,) arrays of one length, got {jnp.shape(labels_a)} and "
      f"{jnp.shape(labels_b)}."
    )
  if weights is not None and jnp.shape(weights) != jnp.shape(labels_a):
    raise ValueError(f"`weights` must have shape {jnp.shape(labels_a)} like the labels, got {jnp.shape(weights)}.")
  a = jax.nn.one_hot(labels_a, num_labels)
  b = jax.nn.one_hot(labels_b, num_labels)
  if weights is not None:
    a = a * weights[:, None]
  table = a.T @ b

  def pairs(c):
    return jnp.sum(c * (c - 1.0)) / 2.0

  total = pairs(jnp.sum(table))
  index = pairs(table)
  rows, cols = pairs(jnp.sum(table, 1)), pairs(jnp.sum(table, 0))
  expected = jnp.where(total > 0, rows * cols / jnp.where(total > 0, total, 1.0), 0.0)
  denom = 0.5 * (rows + cols) - expected
  return jnp.where(denom == 0, 1.0, (index - expected) / jnp.where(denom == 0, 1.0, denom))


def num_parameters(num_components: int, dim: int) -> int:
  """Free parameters of a full-covariance Gaussian mixture: ``K d + K d(d+1)/2 + K - 1`` (as scikit-learn counts)."""
  num_components = _checks.check_int(num_components, "num_components", 1)
  dim = _checks.check_int(dim, "dim", 1)
  return num_components * (dim + dim * (dim + 1) // 2) + num_components - 1


def log_likelihood(gmm: GaussianMixture, x: jax.Array, weights=None) -> jax.Array:
  """``Σ_i w_i log p(x_i)`` of an ott-jax :class:`~ott.tools.gaussian_mixture.gaussian_mixture.GaussianMixture`."""
  _check_mixture_points(gmm, x, weights)
  log_p = gmm.log_prob(x)
  return jnp.sum(log_p) if weights is None else jnp.sum(weights * log_p)


def bic(gmm: GaussianMixture, x: jax.Array, weights=None) -> jax.Array:
  """Bayesian information criterion ``-2 log L + p log n`` of a full-covariance mixture (Schwarz, Ann. Stat. 1978).

  ``n`` is the number (sum of weights) of points; ``p`` is :func:`num_parameters`. Equals scikit-learn's
  ``GaussianMixture.bic`` for the same parameters and points.
  """
  _check_mixture_points(gmm, x, weights)
  n = x.shape[0] if weights is None else jnp.sum(weights)
  p = num_parameters(gmm.n_components, gmm.n_dimensions)
  return -2.0 * log_likelihood(gmm, x, weights) + p * jnp.log(n)


def m_step(x: jax.Array, weights: jax.Array, responsibilities: jax.Array, reg_covar: float) -> GaussianMixture:
  """EM's M step with ott-jax's summary statistics, plus ``reg_covar`` on each covariance's diagonal."""
  x = _check_em_inputs(x, weights, responsibilities)
  if not _checks.is_traced(reg_covar):
    value = np.asarray(reg_covar, dtype=np.float64)
    if value.ndim != 0 or not (np.isfinite(value) and value >= 0):
      raise ValueError(f"`reg_covar` must be a finite scalar >= 0, got {reg_covar!r}.")
  mean, cov, component_weights = ott_gmm.get_summary_stats_from_points_and_assignment_probs(
    points=x, point_weights=weights, assignment_probs=responsibilities
  )
  cov = cov + reg_covar * jnp.eye(x.shape[1], dtype=cov.dtype)
  return GaussianMixture.from_mean_cov_component_weights(mean, cov, component_weights)


def fit_em(
  x: jax.Array, weights: jax.Array, responsibilities: jax.Array, *, num_em_steps: int, reg_covar: float
) -> GaussianMixture:
  """Fits a mixture by EM from initial responsibilities: one M step, then ``num_em_steps`` (E, M) steps.

  The E step is ott-jax's :func:`~ott.tools.gaussian_mixture.fit_gmm.get_assignment_probs`; the loop is a
  ``lax.fori_loop`` (ott's ``fit_model_em`` is a Python loop that checks for NaNs on the host, so it cannot run
  under ``jit``). Starting from the responsibilities of a hard partition is scikit-learn's k-means start.
  """
  x = _check_em_inputs(x, weights, responsibilities)
  _check_int("num_em_steps", num_em_steps, 0)
  gmm = m_step(x, weights, responsibilities, reg_covar)

  def body(_, gmm):
    return m_step(x, weights, fit_gmm.get_assignment_probs(gmm, x), reg_covar)

  return jax.lax.fori_loop(0, num_em_steps, body, gmm)


# ----------------------------------------------------------------------------------------------------------------
# One split: k-means on the leaf, then the mixture's verdict.


def _masked_kmeans_pp(x: jax.Array, mask: jax.Array, rng: jax.Array, num_local_trials: int) -> jax.Array:
  """k-means++ seeding (Arthur & Vassilvitskii, SODA 2007) of 2 centroids drawn among the points with mask 1.

  ott's own k-means++ draws among all points, masked or not, hence this seeding passed to it as ``init``.
  """
  k_first, k_second = jax.random.split(rng)
  n = x.shape[0]
  first = x[jax.random.choice(k_first, n, p=mask / jnp.sum(mask))]
  dist = jnp.sum((x - first) ** 2, axis=1) * mask
  total = jnp.sum(dist)
  p = jnp.where(total > 0, dist / jnp.where(total > 0, total, 1.0), mask / jnp.sum(mask))
  candidates = jax.random.choice(k_second, n, shape=(num_local_trials,), p=p)
  cand_dist = jnp.sum((x[None, :, :] - x[candidates][:, None, :]) ** 2, axis=-1)  # (trials, n)
  potential = jnp.sum(jnp.minimum(cand_dist, dist) * mask, axis=1)
  second = x[candidates[jnp.argmin(potential)]]
  return jnp.stack([first, second])


class _SplitResult(NamedTuple):
  assignment: jax.Array  # (n,) int32 child (0/1) of each point (meaningful on the leaf only)
  info: SplitInfo


def _split(
  key: jax.Array,
  x: jax.Array,
  mask: jax.Array,
  *,
  num_init: int,
  num_em_steps: int,
  max_kmeans_iterations: int,
  reg_covar: float,
  agreement_threshold: float,
  confidence_threshold: float,
  use_bic: bool,
  min_cluster_size: int,
  mixture_labels: bool,
) -> _SplitResult:
  """Bisects the leaf ``mask`` with k-means and validates the halves with Gaussian mixtures."""
  size = jnp.sum(mask)
  safe_mask = jnp.where(size > 0, mask, jnp.ones_like(mask))  # an empty leaf never reaches here in practice
  init = functools.partial(lambda m, geom, k, rng: _masked_kmeans_pp(geom.x, m, rng, 3), safe_mask)
  km = ott_k_means.k_means(
    x,
    2,
    weights=safe_mask,
    init=init,
    n_init=num_init,
    max_iterations=max_kmeans_iterations,
    rng=key,
  )
  assignment = km.assignment.astype(jnp.int32)
  hard = jax.nn.one_hot(assignment, 2, dtype=x.dtype)

  one = m_step(x, safe_mask, jnp.ones((x.shape[0], 1), x.dtype), reg_covar)
  two = fit_em(x, safe_mask, hard, num_em_steps=num_em_steps, reg_covar=reg_covar)
  bic_one, bic_two = bic(one, x, safe_mask), bic(two, x, safe_mask)
  log_post = two.get_log_component_posterior(x)
  map_labels = jnp.argmax(log_post, axis=1)
  agreement = adjusted_rand_index(assignment, map_labels, 2, safe_mask)
  confidence = jnp.sum(safe_mask * jnp.exp(jnp.max(log_post, axis=1))) / jnp.sum(safe_mask)
  children = map_labels if mixture_labels else assignment
  child_sizes = jnp.sum(jax.nn.one_hot(children, 2, dtype=x.dtype) * safe_mask[:, None], axis=0)

  finite = jnp.isfinite(bic_one) & jnp.isfinite(bic_two) & jnp.isfinite(agreement) & jnp.isfinite(confidence)
  accepted = (
    finite
    & (jnp.min(child_sizes) >= min_cluster_size)
    & (agreement >= agreement_threshold)
    & (confidence >= confidence_threshold)
  )
  if use_bic:
    accepted = accepted & (bic_two < bic_one)
  info = SplitInfo(
    node=jnp.int32(0),
    size=size.astype(jnp.int32),
    bic_one=bic_one,
    bic_two=bic_two,
    agreement=agreement,
    confidence=confidence,
    accepted=accepted,
  )
  return _SplitResult(children.astype(jnp.int32), info)


# ----------------------------------------------------------------------------------------------------------------
# The divisive loop: init, step, fit.

_STATIC = (
  "max_clusters",
  "num_init",
  "num_em_steps",
  "max_kmeans_iterations",
  "reg_covar",
  "agreement_threshold",
  "confidence_threshold",
  "use_bic",
  "min_cluster_size",
  "mixture_labels",
)


class _Config(NamedTuple):
  max_clusters: int
  num_init: int
  num_em_steps: int
  max_kmeans_iterations: int
  reg_covar: float
  agreement_threshold: float
  confidence_threshold: float
  use_bic: bool
  min_cluster_size: int
  mixture_labels: bool


def _check_config(x: jax.Array, **kw) -> _Config:
  n, d = x.shape
  max_clusters = _check_int("max_clusters", kw["max_clusters"], 2)
  num_init = _check_int("num_init", kw["num_init"], 1)
  num_em_steps = _check_int("num_em_steps", kw["num_em_steps"], 0)
  max_kmeans_iterations = _check_int("max_kmeans_iterations", kw["max_kmeans_iterations"], 1)
  reg_covar = _check_fraction("reg_covar", kw["reg_covar"], 0.0, math.inf)
  agreement_threshold = _check_fraction("agreement_threshold", kw["agreement_threshold"], -1.0, 1.0)
  confidence_threshold = _check_fraction("confidence_threshold", kw["confidence_threshold"], 0.5, 1.0)
  for name in ("use_bic", "mixture_labels"):
    if not isinstance(kw[name], bool):
      raise TypeError(f"`{name}` must be a bool, got {kw[name]!r}.")
  min_cluster_size = kw["min_cluster_size"]
  if min_cluster_size is None:
    min_cluster_size = default_min_cluster_size(d)
  min_cluster_size = _check_int("min_cluster_size", min_cluster_size, 1)
  if n < 2 * min_cluster_size:
    raise ValueError(
      f"`x` must hold at least 2 * min_cluster_size = {2 * min_cluster_size} points to attempt a split, got {n}."
    )
  return _Config(
    max_clusters,
    num_init,
    num_em_steps,
    max_kmeans_iterations,
    reg_covar,
    agreement_threshold,
    confidence_threshold,
    kw["use_bic"],
    min_cluster_size,
    kw["mixture_labels"],
  )


def init(x: jax.Array, *, max_clusters: int = 16) -> PPPState:
  """The state before any split: every point in leaf 0.

  Args:
    x: ``(n, d)`` points.
    max_clusters: static capacity of the tree (number of leaf slots).

  Returns:
    :class:`PPPState`.
  """
  x = _check_points(x)
  _check_int("max_clusters", max_clusters, 2)
  return PPPState(
    labels=jnp.zeros(x.shape[0], jnp.int32),
    num_clusters=jnp.int32(1),
    final=jnp.zeros(max_clusters, bool),
  )


@functools.partial(jax.jit, static_argnames=_STATIC)
def step(
  key: jax.Array,
  state: PPPState,
  x: jax.Array,
  *,
  max_clusters: int = 16,
  num_init: int = 10,
  num_em_steps: int = 5,
  max_kmeans_iterations: int = 100,
  reg_covar: float = 1e-6,
  agreement_threshold: float = 0.8,
  confidence_threshold: float = 0.9,
  use_bic: bool = True,
  min_cluster_size: int | None = None,
  mixture_labels: bool = True,
) -> tuple[PPPState, SplitInfo]:
  """Visits the first leaf that is not final: splits it if the mixture validates its k-means bisection.

  Args:
    key: PRNG key of this attempt (k-means++ seeding).
    state: :class:`PPPState` from :func:`init` or a previous step.
    x: ``(n, d)`` points.
    max_clusters .. mixture_labels: as in :func:`fit`.

  Returns:
    ``(state, info)``: the new state (a split leaf ``j`` keeps its child 0 and child 1 becomes leaf
    ``num_clusters``; a rejected leaf becomes final) and the attempt's :class:`SplitInfo` (``node = -1`` when
    every leaf is final and nothing was done).
  """
  _check_key(key)
  x = _check_points(x)
  cfg = _check_config(
    x,
    max_clusters=max_clusters,
    num_init=num_init,
    num_em_steps=num_em_steps,
    max_kmeans_iterations=max_kmeans_iterations,
    reg_covar=reg_covar,
    agreement_threshold=agreement_threshold,
    confidence_threshold=confidence_threshold,
    use_bic=use_bic,
    min_cluster_size=min_cluster_size,
    mixture_labels=mixture_labels,
  )
  if not isinstance(state, PPPState) or state.final.shape != (max_clusters,) or state.labels.shape != x.shape[:1]:
    raise ValueError(f"`state` must be a PPPState from init(x, max_clusters={max_clusters}).")
  slots = jnp.arange(max_clusters)
  open_leaves = (slots < state.num_clusters) & ~state.final
  active = jnp.any(open_leaves)
  node = jnp.argmax(open_leaves).astype(jnp.int32)
  mask = (state.labels == node).astype(x.dtype)

  def attempt(_):
    return _split(
      key,
      x,
      mask,
      num_init=cfg.num_init,
      num_em_steps=cfg.num_em_steps,
      max_kmeans_iterations=cfg.max_kmeans_iterations,
      reg_covar=cfg.reg_covar,
      agreement_threshold=cfg.agreement_threshold,
      confidence_threshold=cfg.confidence_threshold,
      use_bic=cfg.use_bic,
      min_cluster_size=cfg.min_cluster_size,
      mixture_labels=cfg.mixture_labels,
    )

  def skip(_):
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(attempt, None))

  # Once every leaf is final the remaining attempts do nothing: `cond` skips their k-means and EM (about half of
  # the 2 max_clusters - 1 attempts for a typical search). Under `vmap` both branches run, with the same result.
  split = jax.lax.cond(active, attempt, skip, None)
  room = state.num_clusters < max_clusters
  accepted = active & split.info.accepted & room
  moved = accepted & (state.labels == node) & (split.assignment == 1)
  labels = jnp.where(moved, state.num_clusters, state.labels)
  # A leaf is final once rejected; a leaf validated but with no room left stays open (reached_max_clusters).
  final = state.final.at[node].set(state.final[node] | (active & ~split.info.accepted))
  new_state = PPPState(labels=labels, num_clusters=state.num_clusters + accepted.astype(jnp.int32), final=final)
  nan = jnp.full((), jnp.nan, x.dtype)
  info = SplitInfo(
    node=jnp.where(active, node, -1),
    size=jnp.where(active, split.info.size, 0),
    bic_one=jnp.where(active, split.info.bic_one, nan),
    bic_two=jnp.where(active, split.info.bic_two, nan),
    agreement=jnp.where(active, split.info.agreement, nan),
    confidence=jnp.where(active, split.info.confidence, nan),
    accepted=accepted,
  )
  return new_state, info


def _canonical_labels(labels: jax.Array, num_slots: int) -> jax.Array:
  """Renumbers clusters by first appearance (the cluster of ``x[0]`` is 0)."""
  n = labels.shape[0]
  first = jnp.full(num_slots, n).at[labels].min(jnp.arange(n))
  rank = jnp.argsort(jnp.argsort(first))
  return rank[labels].astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=_STATIC)
def fit(
  key: jax.Array,
  x: jax.Array,
  *,
  max_clusters: int = 16,
  num_init: int = 10,
  num_em_steps: int = 5,
  max_kmeans_iterations: int = 100,
  reg_covar: float = 1e-6,
  agreement_threshold: float = 0.8,
  confidence_threshold: float = 0.9,
  use_bic: bool = True,
  min_cluster_size: int | None = None,
  mixture_labels: bool = True,
) -> PPPOutput:
  """Clusters ``x`` by PPP-style divisive partitioning; the number of clusters is found, not given.

  Arguments after ``x`` are static. The split rule and the defaults are our reconstruction (module docstring).

  Args:
    key: PRNG key (k-means++ seeding of each attempt; attempt ``i`` uses ``fold_in(key, i)``).
    x: ``(n, d)`` floating points. NaNs are not checked (they make every split fail its validation).
    max_clusters: most clusters the search may create (``2 max_clusters - 1`` attempts are run).
    num_init: k-means restarts per bisection (the best inertia is kept).
    num_em_steps: EM steps of the two-component mixture after its M step from the k-means halves.
    max_kmeans_iterations: Lloyd iterations per k-means restart.
    reg_covar: added to the diagonal of every covariance (scikit-learn's ``reg_covar``).
    agreement_threshold: least adjusted Rand index between the mixture's MAP labels and the k-means halves.
    confidence_threshold: least mean maximal posterior probability of the mixture, in ``[0.5, 1]``.
    use_bic: also require ``BIC(2) < BIC(1)``.
    min_cluster_size: fewest points in each child of an accepted split; ``None``: ``2 (d + 1)``.
    mixture_labels: the children of a split are the mixture's MAP labels (``True``) or the k-means halves.

  Returns:
    :class:`PPPOutput`.

  >>> k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  >>> x = jnp.concatenate([jax.random.normal(k1, (50, 2)), jnp.array([9.0, 0.0]) + jax.random.normal(k2, (50, 2)),
  ...                      jnp.array([0.0, 9.0]) + jax.random.normal(k3, (50, 2))])
  >>> out = fit(jax.random.key(0), x, max_clusters=6)
  >>> int(out.n_clusters), [int(jnp.sum(out.labels == j)) for j in range(3)]
  (3, [50, 50, 50])
  """
  _check_key(key)
  x = _check_points(x)
  kwargs = {
    "max_clusters": max_clusters,
    "num_init": num_init,
    "num_em_steps": num_em_steps,
    "max_kmeans_iterations": max_kmeans_iterations,
    "reg_covar": reg_covar,
    "agreement_threshold": agreement_threshold,
    "confidence_threshold": confidence_threshold,
    "use_bic": use_bic,
    "min_cluster_size": min_cluster_size,
    "mixture_labels": mixture_labels,
  }
  _check_config(x, **kwargs)
  num_attempts = 2 * max_clusters - 1
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(num_attempts))

  def body(state, k):
    return step(k, state, x, **kwargs)

  state, trace = jax.lax.scan(body, init(x, max_clusters=max_clusters), keys)
  labels = _canonical_labels(state.labels, max_clusters)
  one_hot = jax.nn.one_hot(labels, max_clusters, dtype=x.dtype)
  counts = jnp.sum(one_hot, axis=0)
  centroids = (one_hot.T @ x) / jnp.maximum(counts, 1.0)[:, None]
  open_left = jnp.any((jnp.arange(max_clusters) < state.num_clusters) & ~state.final)
  return PPPOutput(
    labels=labels,
    n_clusters=state.num_clusters,
    centroids=centroids,
    trace=trace,
    reached_max_clusters=open_left,
  )
