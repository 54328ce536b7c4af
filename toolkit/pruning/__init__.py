"""Sparse networks: score-searched masks on frozen pretrained weights (``lottery_jackpot``) and dynamic channel
pruning with self-supervised mask predictors (``ftwt``)."""

from toolkit.pruning import lottery_jackpot
from toolkit.pruning.lottery_jackpot import (
  JackpotInfo,
  JackpotState,
  kernels_except,
  magnitude_mask,
  magnitude_scores,
  random_scores,
)

__all__ = [
  "JackpotInfo",
  "JackpotState",
  "kernels_except",
  "lottery_jackpot",
  "magnitude_mask",
  "magnitude_scores",
  "random_scores",
]
