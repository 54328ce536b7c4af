"""Losses in the style of ``optax.losses``: ``(logits, labels) -> per-example loss``.

``preference`` holds the direct-alignment losses (DPO, IPO, SLiC hinge) on per-example sequence log-probabilities;
its ``sequence_log_probs`` (aligned logits, tokens, mask) is reached through the module, since
``toolkit.models.transformer.sequence_log_probs`` has another signature.
"""

from toolkit.losses import distillation, preference
from toolkit.losses.distillation import (
  DistillationTerms,
  align_gradients,
  binary_kl,
  binary_kl_norm,
  dual_head_loss,
  dual_head_terms,
  kd_loss,
)
from toolkit.losses.preference import (
  PreferenceLoss,
  dpo_loss,
  hinge_loss,
  implicit_reward_margin,
  implicit_rewards,
  ipo_loss,
)
from toolkit.losses.stablemax import (
  log_stablemax,
  softmax_collapse_fraction,
  stablemax,
  stablemax_collapse_fraction,
  stablemax_cross_entropy,
)

__all__ = [
  "DistillationTerms",
  "PreferenceLoss",
  "align_gradients",
  "binary_kl",
  "binary_kl_norm",
  "distillation",
  "dpo_loss",
  "dual_head_loss",
  "dual_head_terms",
  "hinge_loss",
  "implicit_reward_margin",
  "implicit_rewards",
  "ipo_loss",
  "kd_loss",
  "log_stablemax",
  "preference",
  "softmax_collapse_fraction",
  "stablemax",
  "stablemax_collapse_fraction",
  "stablemax_cross_entropy",
]
