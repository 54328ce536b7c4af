"""Small flax models shared by the experiments: an MLP and a byte-level decoder-only transformer LM with a
pluggable KV cache (``transformer``), its training, evaluation and cached checkpoint (``lm_training``)."""

from toolkit.models import lm_training
from toolkit.models import transformer
from toolkit.models.lm_training import Evaluation
from toolkit.models.lm_training import Pretrained
from toolkit.models.lm_training import TrainRecipe
from toolkit.models.lm_training import TrainRecord
from toolkit.models.lm_training import evaluate
from toolkit.models.lm_training import load_model
from toolkit.models.lm_training import make_evaluator
from toolkit.models.lm_training import pretrained
from toolkit.models.lm_training import train
from toolkit.models.lm_training import train_tiny
from toolkit.models.mlp import MLP
from toolkit.models.transformer import DecodeOutput
from toolkit.models.transformer import DecodeState
from toolkit.models.transformer import FeedForward
from toolkit.models.transformer import FullPrecisionCache
from toolkit.models.transformer import KVCache
from toolkit.models.transformer import Transformer
from toolkit.models.transformer import TransformerConfig
from toolkit.models.transformer import decode_log_probs
from toolkit.models.transformer import init_params
from toolkit.models.transformer import sequence_log_probs

__all__ = [
  "DecodeOutput", "DecodeState", "Evaluation", "FeedForward", "FullPrecisionCache", "KVCache", "MLP", "Pretrained",
  "TrainRecipe", "TrainRecord", "Transformer", "TransformerConfig", "decode_log_probs", "evaluate", "init_params",
  "lm_training", "load_model", "make_evaluator", "pretrained", "sequence_log_probs", "train", "train_tiny",
  "transformer",
]
