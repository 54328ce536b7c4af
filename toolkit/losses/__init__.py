"""Losses in the style of ``optax.losses``: ``(logits, labels) -> per-example loss``."""

from toolkit.losses.stablemax import (
  log_stablemax,
  softmax_collapse_fraction,
  stablemax,
  stablemax_collapse_fraction,
  stablemax_cross_entropy,
)

__all__ = [
  "log_stablemax",
  "softmax_collapse_fraction",
  "stablemax",
  "stablemax_collapse_fraction",
  "stablemax_cross_entropy",
]
