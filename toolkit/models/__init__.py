"""Small flax models shared by the experiments."""

from toolkit.models.mlp import MLP
from toolkit.models.transformer import DecodeOutput
from toolkit.models.transformer import DecodeState
from toolkit.models.transformer import FullPrecisionCache
from toolkit.models.transformer import KVCache
from toolkit.models.transformer import Pretrained
from toolkit.models.transformer import TrainRecipe
from toolkit.models.transformer import Transformer
from toolkit.models.transformer import TransformerConfig
from toolkit.models.transformer import decode_log_probs
from toolkit.models.transformer import pretrained

__all__ = ["DecodeOutput", "DecodeState", "FullPrecisionCache", "KVCache", "MLP", "Pretrained", "TrainRecipe",
           "Transformer", "TransformerConfig", "decode_log_probs", "pretrained"]
