"""Statistics: Gaussian mixtures in closed form, quadrature oracles, and metrics between samples and targets.

Modules: ``gmm`` (mixtures: densities, scores, moments, products, powers, noising), ``quadrature`` (exact moments
and normalising constants of 2-D densities on a grid), ``metrics`` (energy distance, weighted moments, moment
errors). Generic names (``gmm.sample``, ``gmm.score``, ``gmm.log_density``) are reached through their module.
"""

from toolkit.stats import gmm, metrics, quadrature
from toolkit.stats.gmm import (
  GaussianGeometricMean,
  GaussianMixture,
  gaussian_mixture,
  mixture_moments,
)
from toolkit.stats.metrics import energy_distance, moment_errors, weighted_moments
from toolkit.stats.quadrature import GridOracle, grid_oracle, grid_sample

__all__ = [
  "GaussianGeometricMean",
  "GaussianMixture",
  "GridOracle",
  "energy_distance",
  "gaussian_mixture",
  "gmm",
  "grid_oracle",
  "grid_sample",
  "metrics",
  "mixture_moments",
  "moment_errors",
  "quadrature",
  "weighted_moments",
]
