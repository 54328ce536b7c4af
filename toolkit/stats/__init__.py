"""Statistics: Gaussian mixtures in closed form, quadrature oracles, and metrics between samples and targets.

Modules: ``gmm`` (mixtures: densities, scores, moments, products, powers, noising), ``quadrature`` (exact moments
and normalising constants of 2-D densities on a grid), ``metrics`` (energy distance, weighted moments, moment
errors). Generic names (``gmm.sample``, ``gmm.score``, ``gmm.log_density``) are reached through their module.
"""

from toolkit.stats import (
  gmm,
  halfspace_data,
  halfspace_tester,
  kde,
  kde_theory,
  metrics,
  ordinal_data,
  presto,
  quadrature,
  topk_moe,
  voronoi,
)
from toolkit.stats.gmm import (
  GaussianGeometricMean,
  GaussianMixture,
  gaussian_mixture,
  mixture_moments,
)
from toolkit.stats.halfspace_data import SpikeParams, adversarial_labels, massart_labels, spike_marginal
from toolkit.stats.halfspace_tester import (
  BandStatistics,
  HalfspaceTesterOutput,
  HalfspaceTests,
  LearnerOutput,
  PSGDInfo,
  PSGDState,
  band_statistics,
  halfspace_tester_learner,
  moment_statistic,
)
from toolkit.stats.kde import BandwidthSearch, KernelWeightStats, kernel_weight_stats, select_bandwidth
from toolkit.stats.kde_theory import h_clt, h_glass
from toolkit.stats.metrics import energy_distance, moment_errors, weighted_moments
from toolkit.stats.ordinal_data import (
  OrdinalData,
  PairedInterval,
  dense_differences,
  paired_t_interval,
  rare_probability_mse,
  sparse_differences,
)
from toolkit.stats.presto import PrestoCV, PrestoModel, PrestoProblem, PrestoState, fit_proportional_odds
from toolkit.stats.quadrature import GridOracle, grid_oracle, grid_sample
from toolkit.stats.topk_moe import TopKMoEDraw, TopKMoEFit, TopKMoEParams, gating_log_weights, topk_moe_params
from toolkit.stats.voronoi import (
  align_translation,
  conditional_hellinger,
  expected_hellinger,
  min_num_selected,
  voronoi_cells,
  voronoi_loss_exact,
  voronoi_loss_over,
)

__all__ = [
  "BandStatistics",
  "BandwidthSearch",
  "GaussianGeometricMean",
  "GaussianMixture",
  "GridOracle",
  "HalfspaceTesterOutput",
  "HalfspaceTests",
  "KernelWeightStats",
  "LearnerOutput",
  "OrdinalData",
  "PSGDInfo",
  "PSGDState",
  "PairedInterval",
  "PrestoCV",
  "PrestoModel",
  "PrestoProblem",
  "PrestoState",
  "SpikeParams",
  "TopKMoEDraw",
  "TopKMoEFit",
  "TopKMoEParams",
  "adversarial_labels",
  "align_translation",
  "band_statistics",
  "conditional_hellinger",
  "dense_differences",
  "energy_distance",
  "expected_hellinger",
  "fit_proportional_odds",
  "gating_log_weights",
  "gaussian_mixture",
  "gmm",
  "grid_oracle",
  "grid_sample",
  "h_clt",
  "h_glass",
  "halfspace_data",
  "halfspace_tester",
  "halfspace_tester_learner",
  "kde",
  "kde_theory",
  "kernel_weight_stats",
  "massart_labels",
  "metrics",
  "min_num_selected",
  "mixture_moments",
  "moment_errors",
  "moment_statistic",
  "ordinal_data",
  "paired_t_interval",
  "presto",
  "quadrature",
  "rare_probability_mse",
  "select_bandwidth",
  "sparse_differences",
  "spike_marginal",
  "topk_moe",
  "topk_moe_params",
  "voronoi",
  "voronoi_cells",
  "voronoi_loss_exact",
  "voronoi_loss_over",
  "weighted_moments",
]
