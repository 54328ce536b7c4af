"""Partial differential equations: the discrete physics-informed loss of ODIL/GliODIL for tumour growth (``odil``).

Modules: ``odil`` (GliODIL's loss over the whole space-time field and the parameters, optax and Gauss–Newton
optimisation), ``tumour_growth`` (the Fisher–Kolmogorov discretisation, the Crank–Nicolson forward simulator,
synthetic brains and patients, Dice and the uniform-margin control). Generic names (``odil.fit``, ``odil.loss``,
``odil.init``, ``odil.step``, ``tumour_growth.simulate``, ``tumour_growth.dice``, ...) are reached through their
module.
"""

from toolkit.pde import odil, tumour_growth
from toolkit.pde.odil import (
  GliodilParams,
  OdilBounds,
  OdilResult,
  OdilState,
  OdilStepInfo,
  OdilUnknowns,
  OdilWeights,
  TumourScan,
  TumourSeed,
  field_from_levels,
  gauss_newton,
  pde_residual,
)
from toolkit.pde.tumour_growth import (
  SyntheticPatient,
  TissueMaps,
  crank_nicolson_step,
  diffusion_faces,
  gaussian_seed,
  synthetic_brain,
  synthetic_patient,
  uniform_margin,
)

__all__ = [
  "GliodilParams",
  "OdilBounds",
  "OdilResult",
  "OdilState",
  "OdilStepInfo",
  "OdilUnknowns",
  "OdilWeights",
  "SyntheticPatient",
  "TissueMaps",
  "TumourScan",
  "TumourSeed",
  "crank_nicolson_step",
  "diffusion_faces",
  "field_from_levels",
  "gauss_newton",
  "gaussian_seed",
  "odil",
  "pde_residual",
  "synthetic_brain",
  "synthetic_patient",
  "tumour_growth",
  "uniform_margin",
]
