"""Clustering: divisive partitions validated by Gaussian mixtures (``ppp``) and physics-informed clustering of PDE
snapshots for local reduced-order bases (``rom_cluster``). Generic names (``ppp.fit``) are reached through their
module.
"""

from toolkit.cluster import ppp, ppp_data, rom_cluster, rom_snapshots
from toolkit.cluster.ppp import PPPOutput, PPPState, SplitInfo
from toolkit.cluster.rom_cluster import (
  EfficiencyCriterion,
  KMedoidsOutput,
  LocalBases,
  PODBasis,
  assign_nearest,
  chordal_distance,
  efficiency_criterion,
  euclidean_dissimilarity,
  euclidean_kmeans,
  geodesic_distance,
  grassmann_dissimilarity,
  kmedoids,
  local_pod,
  local_projection_error,
  principal_angles,
  projection_distance,
  sine_dissimilarity,
)
from toolkit.cluster.rom_snapshots import (
  PDESnapshots,
  advection_snapshots,
  burgers_cole_hopf,
  burgers_snapshots,
  solve_advection,
  solve_burgers,
)

__all__ = [
  "EfficiencyCriterion",
  "KMedoidsOutput",
  "LocalBases",
  "PDESnapshots",
  "PODBasis",
  "PPPOutput",
  "PPPState",
  "SplitInfo",
  "advection_snapshots",
  "assign_nearest",
  "burgers_cole_hopf",
  "burgers_snapshots",
  "chordal_distance",
  "efficiency_criterion",
  "euclidean_dissimilarity",
  "euclidean_kmeans",
  "geodesic_distance",
  "grassmann_dissimilarity",
  "kmedoids",
  "local_pod",
  "local_projection_error",
  "ppp",
  "ppp_data",
  "principal_angles",
  "projection_distance",
  "rom_cluster",
  "rom_snapshots",
  "sine_dissimilarity",
  "solve_advection",
  "solve_burgers",
]
