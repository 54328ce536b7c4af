"""Training dynamics: optimisation and double descent in random-feature models.

Modules: ``random_features`` (feature maps and the last-layer fitters: minimum norm, ridge, gradient descent, any
optax optimiser), ``linear_theory`` (closed forms of gradient descent on least squares, the oracles).
"""

from toolkit.dynamics import linear_theory, random_features
from toolkit.dynamics.linear_theory import fitted_fraction, gd_closed_form
from toolkit.dynamics.random_features import (
  classification_error,
  condition_number,
  fit_gd,
  fit_min_norm,
  fit_optax,
  fit_ridge,
  mask_features,
  random_feature_map,
  relative_lr,
  squared_loss,
  standardize_features,
)

__all__ = [
  "classification_error",
  "condition_number",
  "fit_gd",
  "fit_min_norm",
  "fit_optax",
  "fit_ridge",
  "fitted_fraction",
  "gd_closed_form",
  "linear_theory",
  "mask_features",
  "random_feature_map",
  "random_features",
  "relative_lr",
  "squared_loss",
  "standardize_features",
]
