"""Small flax models shared by the experiments: an MLP (``mlp``), a small CNN with channel masks (``cnn``), the
cached pretrained classifiers that pruning and distillation start from (``classifier``), a byte-level decoder-only
transformer LM with a pluggable KV cache (``transformer``), its training, evaluation and cached checkpoint
(``lm_training``), and a time-conditioned score network with its denoising score-matching trainer (``score_net``).

Names that several modules define (``init_params``, ``train``) are reached through their module:
``transformer.init_params``, ``lm_training.train``, ``score_net.train``.
"""

from toolkit.models import classifier, cnn, dual_head, lm_training, mlp, score_net, transformer
from toolkit.models.classifier import (
  ClassificationData,
  ClassifierRecipe,
  PretrainedClassifier,
  classification_data,
  pretrained_classifier,
  train_classifier,
)
from toolkit.models.cnn import CNN
from toolkit.models.dual_head import (
  DistillationResult,
  DistillationState,
  DistillationStepInfo,
  DualHeadMLP,
  DualHeadOutput,
)
from toolkit.models.lm_training import (
  Evaluation,
  Pretrained,
  TrainRecipe,
  TrainRecord,
  evaluate,
  load_model,
  make_evaluator,
  pretrained,
  train_tiny,
)
from toolkit.models.mlp import MLP
from toolkit.models.score_net import ScoreNet, ScoreNetTraining
from toolkit.models.transformer import (
  Attention,
  Block,
  DecodeOutput,
  DecodeState,
  FeedForward,
  FullPrecisionCache,
  FullPrecisionState,
  KVCache,
  Transformer,
  TransformerConfig,
  decode_log_probs,
  sequence_log_probs,
)

__all__ = [
  "CNN",
  "MLP",
  "Attention",
  "Block",
  "ClassificationData",
  "ClassifierRecipe",
  "DecodeOutput",
  "DecodeState",
  "DistillationResult",
  "DistillationState",
  "DistillationStepInfo",
  "DualHeadMLP",
  "DualHeadOutput",
  "Evaluation",
  "FeedForward",
  "FullPrecisionCache",
  "FullPrecisionState",
  "KVCache",
  "Pretrained",
  "PretrainedClassifier",
  "ScoreNet",
  "ScoreNetTraining",
  "TrainRecipe",
  "TrainRecord",
  "Transformer",
  "TransformerConfig",
  "classification_data",
  "classifier",
  "cnn",
  "decode_log_probs",
  "dual_head",
  "evaluate",
  "lm_training",
  "load_model",
  "make_evaluator",
  "mlp",
  "pretrained",
  "pretrained_classifier",
  "score_net",
  "sequence_log_probs",
  "train_classifier",
  "train_tiny",
  "transformer",
]
