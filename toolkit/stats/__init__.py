"""Statistics: Gaussian mixtures in closed form, quadrature oracles, and metrics between samples and targets."""

from toolkit.stats import gmm, metrics, quadrature

__all__ = ["gmm", "metrics", "quadrature"]
