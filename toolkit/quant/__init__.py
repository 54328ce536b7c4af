"""Post-training weight quantization: RTN, GPTQ and LoRC (ZeroQuant-V2)."""

from toolkit.quant import zeroquant
from toolkit.quant.zeroquant import GPTQQuantizer
from toolkit.quant.zeroquant import LoRCFactors
from toolkit.quant.zeroquant import QuantizedModel
from toolkit.quant.zeroquant import QuantParams
from toolkit.quant.zeroquant import RTNQuantizer
from toolkit.quant.zeroquant import SizeReport
from toolkit.quant.zeroquant import dense_input_hessians
from toolkit.quant.zeroquant import dense_kernels
from toolkit.quant.zeroquant import gptq
from toolkit.quant.zeroquant import gptq_from_hessian
from toolkit.quant.zeroquant import hessian
from toolkit.quant.zeroquant import lorc
from toolkit.quant.zeroquant import quantize_dense_layers
from toolkit.quant.zeroquant import quantize_model
from toolkit.quant.zeroquant import rtn
from toolkit.quant.zeroquant import rtn_params
from toolkit.quant.zeroquant import size_report

__all__ = [
  "GPTQQuantizer", "LoRCFactors", "QuantParams", "QuantizedModel", "RTNQuantizer", "SizeReport",
  "dense_input_hessians", "dense_kernels", "gptq", "gptq_from_hessian", "hessian", "lorc", "quantize_dense_layers",
  "quantize_model", "rtn", "rtn_params", "size_report", "zeroquant",
]
