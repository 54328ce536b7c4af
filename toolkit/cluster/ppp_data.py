"""Gaussian blobs with known clusters for PPP (arXiv 2003.04372): the data of its tests, experiment and notebook.

The paper's own data sets are not public; these are our constructions (research notes, stats.md §5): blobs of
unequal spread and size with one overlapping pair in 2-D, and well-separated blobs in a higher dimension.

>>> import jax
>>> x, y = blobs(jax.random.key(0), *UNEQUAL_2D)
>>> x.shape, int(y.max()) + 1
((1000, 2), 5)
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from toolkit import _checks

# (centres, standard deviations, sizes). Clusters 3 and 4 are the overlapping pair: centres 3.5 apart with
# standard deviation 0.8 (4.4 sigma; the Bayes error between them is about 1.4%).
UNEQUAL_2D = (
  ((0.0, 0.0), (10.0, 0.0), (0.0, 10.0), (10.0, 10.0), (13.5, 10.0)),
  (1.0, 2.0, 0.5, 0.8, 0.8),
  (300, 200, 150, 200, 150),
)


def high_dim_spec(dim: int = 20, num_clusters: int = 5, separation: float = 8.0):
  """Centres ``separation * e_j`` (pairwise ``separation * sqrt(2)`` apart), unequal spreads 0.7..2, 200 points each."""
  dim = _checks.check_int(dim, "dim", 1)
  num_clusters = _checks.check_int(num_clusters, "num_clusters", 1)
  _checks.check_positive(separation, "separation")
  if dim < num_clusters:
    raise ValueError(f"`dim` must be >= num_clusters = {num_clusters}, got {dim}.")
  centres = separation * np.eye(num_clusters, dim)
  stds = np.linspace(0.7, 2.0, num_clusters)
  return tuple(map(tuple, centres)), tuple(stds), (200,) * num_clusters


def blobs(
  key: jax.Array, centres: Sequence[Sequence[float]], stds: Sequence[float], sizes: Sequence[int]
) -> tuple[jax.Array, jax.Array]:
  """Isotropic Gaussian blobs: ``sizes[j]`` points ``centres[j] + stds[j] * N(0, I)``, in cluster order.

  Returns:
    ``(x, labels)``: ``(n, d)`` float32 points and their ``(n,)`` int32 true clusters.
  """
  centres = jnp.asarray(centres, jnp.float32)
  if centres.ndim != 2 or len(stds) != centres.shape[0] or len(sizes) != centres.shape[0]:
    raise ValueError("`centres` (K, d), `stds` (K,) and `sizes` (K,) must describe the same K clusters.")
  labels = jnp.repeat(jnp.arange(len(sizes), dtype=jnp.int32), np.asarray(sizes), total_repeat_length=sum(sizes))
  noise = jax.random.normal(key, (sum(sizes), centres.shape[1]))
  x = centres[labels] + jnp.asarray(stds, jnp.float32)[labels, None] * noise
  return x, labels
