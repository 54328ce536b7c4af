"""Low-bit kernels: KIVI (KV-cache quantization) and T-MAC (table-lookup mixed-precision GEMM).

Each kernel has a Pallas implementation and an XLA path behind one ``impl=`` argument, chosen by one rule
(``dispatch``). Names that both modules define (``dequantize``, ``SUPPORTED_BITS``) are reached through their
module: ``kivi.dequantize``, ``tmac.dequantize``. ``kivi_eval`` (cache byte counts, outlier key channels, paired
z-scores, decode-attention timing) and ``tmac_benchmark`` (timing sweeps and fits) are the measurement helpers of
the two experiments.
"""

from toolkit.kernels import dispatch, kivi, kivi_eval, tmac, tmac_benchmark
from toolkit.kernels.dispatch import IMPLS, check_bits, check_impl, default_impl
from toolkit.kernels.kivi import (
  KIVI,
  KIVICache,
  QuantizedTensor,
  decode_attention,
  init_cache,
  quantize_keys,
  quantize_values,
)
from toolkit.kernels.kivi_eval import CacheBytes, ChannelMagnitudes, DecodeAttentionTimes, OffsetKeys
from toolkit.kernels.tmac import (
  TMACWeights,
  bitserial_matmul,
  build_tables,
  lut_gather,
  matmul,
  onehot_lut,
  preprocess,
)

__all__ = [
  "IMPLS",
  "KIVI",
  "CacheBytes",
  "ChannelMagnitudes",
  "DecodeAttentionTimes",
  "KIVICache",
  "OffsetKeys",
  "QuantizedTensor",
  "TMACWeights",
  "bitserial_matmul",
  "build_tables",
  "check_bits",
  "check_impl",
  "decode_attention",
  "default_impl",
  "dispatch",
  "init_cache",
  "kivi",
  "kivi_eval",
  "lut_gather",
  "matmul",
  "onehot_lut",
  "preprocess",
  "quantize_keys",
  "quantize_values",
  "tmac",
  "tmac_benchmark",
]
