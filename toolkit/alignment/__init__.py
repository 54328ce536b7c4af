"""Alignment of language models: direct-alignment fine-tuning, its diagnostics and synthetic tasks.

Modules: ``preference_training`` (SFT and DPO / IPO / hinge fine-tuning of a causal LM against a frozen reference,
one pure step at a time, and response sampling), ``indicators`` (the top-k entropy and top-k probability mass
over-optimisation indicators of Shi et al., arXiv 2410.11677), ``displacement`` (the CHES score, CHES filtering and
the linear toy of likelihood displacement, Razin et al., arXiv 2410.08847), ``displacement_data`` (its synthetic
persona / chat / refusal preference data) and ``synthetic_tasks`` (the topic task with a known gold reward of the
over-optimisation experiment). The losses themselves live in
``toolkit.losses.preference``. Generic step names (``preference_training.init``) are reached through their module.
"""

from toolkit.alignment import displacement, displacement_data, indicators, preference_training, synthetic_tasks
from toolkit.alignment.displacement import (
  ChesSelection,
  LinearToyTrajectory,
  LogProbRate,
  ches_score,
  linear_toy_dpo,
  linear_toy_log_prob_rate,
  lowest_ches,
  response_prediction_mask,
  transformer_hidden_states,
)
from toolkit.alignment.displacement_data import ChatPairs, RefusalPairs, normalized_edit_distance
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
from toolkit.alignment.synthetic_tasks import TopicTask, make_topic_task

__all__ = [
  "AlignmentState",
  "ChatPairs",
  "ChesSelection",
  "LinearToyTrajectory",
  "LogProbRate",
  "PreferenceBatch",
  "PreferenceInfo",
  "RefusalPairs",
  "SFTBatch",
  "SFTInfo",
  "SampledResponses",
  "TopicTask",
  "ches_score",
  "displacement",
  "displacement_data",
  "indicators",
  "linear_toy_dpo",
  "linear_toy_log_prob_rate",
  "lowest_ches",
  "make_topic_task",
  "masked_sequence_mean",
  "normalized_edit_distance",
  "preference_step",
  "preference_training",
  "response_log_probs",
  "response_prediction_mask",
  "sample_responses",
  "sft_step",
  "synthetic_tasks",
  "topk_entropy",
  "topk_probability_mass",
  "transformer_hidden_states",
]
