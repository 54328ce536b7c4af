"""Training dynamics: optimisation and double descent in random-feature models.

Modules: ``random_features`` (feature maps and the last-layer fitters: minimum norm, ridge, gradient descent, any
optax optimiser), ``linear_theory`` (closed forms of gradient descent on least squares, the oracles).
"""

from toolkit.dynamics import linear_theory, random_features, sgd_noise, tasks
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
from toolkit.dynamics.sgd_noise import (
  SGDState,
  TrainResult,
  alpha_hinge_loss,
  init_mlp,
  init_perceptron,
  mlp_apply,
  normalize_activation,
  perceptron_apply,
  relative_weight_change,
)
from toolkit.dynamics.tasks import Task, make_task

__all__ = [
  "SGDState",
  "Task",
  "TrainResult",
  "alpha_hinge_loss",
  "classification_error",
  "condition_number",
  "fit_gd",
  "fit_min_norm",
  "fit_optax",
  "fit_ridge",
  "fitted_fraction",
  "gd_closed_form",
  "init_mlp",
  "init_perceptron",
  "linear_theory",
  "make_task",
  "mask_features",
  "mlp_apply",
  "normalize_activation",
  "perceptron_apply",
  "random_feature_map",
  "random_features",
  "relative_lr",
  "relative_weight_change",
  "sgd_noise",
  "squared_loss",
  "standardize_features",
  "tasks",
]
