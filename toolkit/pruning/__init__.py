"""Sparse networks: score-searched masks on frozen pretrained weights (``lottery_jackpot``) and dynamic channel
pruning with self-supervised mask predictors (``ftwt``)."""

from toolkit.pruning import ftwt, lottery_jackpot
from toolkit.pruning.ftwt import (
  DynamicOutput,
  FlopsEstimate,
  FTWTState,
  FTWTStepInfo,
  MaskPredictor,
  dynamic_forward,
  flops_estimate,
  heatmap_scores,
  l1_channel_masks,
  mass_target,
)
from toolkit.pruning.lottery_jackpot import (
  JackpotInfo,
  JackpotState,
  kernels_except,
  magnitude_mask,
  magnitude_scores,
  random_scores,
)

__all__ = [
  "DynamicOutput",
  "FTWTState",
  "FTWTStepInfo",
  "FlopsEstimate",
  "JackpotInfo",
  "JackpotState",
  "MaskPredictor",
  "dynamic_forward",
  "flops_estimate",
  "ftwt",
  "heatmap_scores",
  "kernels_except",
  "l1_channel_masks",
  "lottery_jackpot",
  "magnitude_mask",
  "magnitude_scores",
  "mass_target",
  "random_scores",
]
