"""Small flax models shared by the experiments: an MLP and a byte-level decoder-only transformer LM with a
pluggable KV cache (``transformer``), its training, evaluation and cached checkpoint (``lm_training``)."""

from toolkit.models import lm_training, transformer
from toolkit.models.lm_training import (
  Evaluation,
  Pretrained,
  TrainRecipe,
  TrainRecord,
  evaluate,
  load_model,
  make_evaluator,
  pretrained,
  train,
  train_tiny,
)
from toolkit.models.mlp import MLP
from toolkit.models.transformer import (
  DecodeOutput,
  DecodeState,
  FeedForward,
  FullPrecisionCache,
  KVCache,
  Transformer,
  TransformerConfig,
  decode_log_probs,
  init_params,
  sequence_log_probs,
)

__all__ = [
  "MLP",
  "DecodeOutput",
  "DecodeState",
  "Evaluation",
  "FeedForward",
  "FullPrecisionCache",
  "KVCache",
  "Pretrained",
  "TrainRecipe",
  "TrainRecord",
  "Transformer",
  "TransformerConfig",
  "decode_log_probs",
  "evaluate",
  "init_params",
  "lm_training",
  "load_model",
  "make_evaluator",
  "pretrained",
  "sequence_log_probs",
  "train",
  "train_tiny",
  "transformer",
]
