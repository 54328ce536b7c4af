"""Linear algebra: low-rank matrix completion by robust alternating minimisation (``matrix_completion``) and its
synthetic incoherent problems (``completion_data``). Generic names (``matrix_completion.init``, ``.step``,
``.complete``) are reached through their module.
"""

from toolkit.linalg import completion_data, matrix_completion
from toolkit.linalg.completion_data import CompletionProblem, LowRankMatrix
from toolkit.linalg.matrix_completion import (
  AltMinState,
  AltMinStepInfo,
  CGSolver,
  CompletionResult,
  Entries,
  HalfStepSolver,
  Observations,
  solve_cg,
  solve_exact,
  top_singular_subspace,
)

__all__ = [
  "AltMinState",
  "AltMinStepInfo",
  "CGSolver",
  "CompletionProblem",
  "CompletionResult",
  "Entries",
  "HalfStepSolver",
  "LowRankMatrix",
  "Observations",
  "completion_data",
  "matrix_completion",
  "solve_cg",
  "solve_exact",
  "top_singular_subspace",
]
