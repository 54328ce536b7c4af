"""Low-bit kernels: KIVI (KV-cache quantization) and T-MAC (table-lookup mixed-precision GEMM).

Each kernel has a Pallas implementation and an XLA path behind one ``impl=`` argument, chosen by one rule
(``dispatch``). Names that both modules define (``dequantize``, ``SUPPORTED_BITS``) are reached through their
module: ``kivi.dequantize``, ``tmac.dequantize``.
"""

from toolkit.kernels import dispatch
from toolkit.kernels import kivi
from toolkit.kernels import tmac
from toolkit.kernels.dispatch import IMPLS
from toolkit.kernels.dispatch import check_bits
from toolkit.kernels.dispatch import check_impl
from toolkit.kernels.dispatch import default_impl
from toolkit.kernels.kivi import KIVI
from toolkit.kernels.kivi import KIVICache
from toolkit.kernels.kivi import QuantizedTensor
from toolkit.kernels.kivi import decode_attention
from toolkit.kernels.kivi import init_cache
from toolkit.kernels.kivi import quantize_keys
from toolkit.kernels.kivi import quantize_values
from toolkit.kernels.tmac import TMACWeights
from toolkit.kernels.tmac import bitserial_matmul
from toolkit.kernels.tmac import build_tables
from toolkit.kernels.tmac import lut_gather
from toolkit.kernels.tmac import matmul
from toolkit.kernels.tmac import onehot_lut
from toolkit.kernels.tmac import preprocess

__all__ = [
  "IMPLS", "KIVI", "KIVICache", "QuantizedTensor", "TMACWeights", "bitserial_matmul", "build_tables", "check_bits",
  "check_impl", "decode_attention", "default_impl", "dispatch", "init_cache", "kivi", "lut_gather", "matmul",
  "onehot_lut", "preprocess", "quantize_keys", "quantize_values", "tmac",
]
