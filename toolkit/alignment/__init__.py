"""Alignment of language models: direct-alignment fine-tuning, its diagnostics and synthetic tasks.

Modules: ``preference_training`` (SFT and DPO / IPO / hinge fine-tuning of a causal LM against a frozen reference,
one pure step at a time, and response sampling), ``indicators`` (the top-k entropy and top-k probability mass
over-optimisation indicators of Shi et al., arXiv 2410.11677). The losses themselves live in
``toolkit.losses.preference``. Generic step names (``preference_training.init``) are reached through their module.
"""

from toolkit.alignment import indicators, preference_training
from toolkit.alignment.indicators import masked_sequence_mean, topk_entropy, topk_probability_mass
from toolkit.alignment.preference_training import (
  AlignmentState,
  PreferenceBatch,
  PreferenceInfo,
  SampledResponses,
  SFTBatch,
  SFTInfo,
  preference_step,
  response_log_probs,
  sample_responses,
  sft_step,
)

__all__ = [
  "AlignmentState",
  "PreferenceBatch",
  "PreferenceInfo",
  "SFTBatch",
  "SFTInfo",
  "SampledResponses",
  "indicators",
  "masked_sequence_mean",
  "preference_step",
  "preference_training",
  "response_log_probs",
  "sample_responses",
  "sft_step",
  "topk_entropy",
  "topk_probability_mass",
]
