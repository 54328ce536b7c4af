"""Post-training weight quantization: RTN, GPTQ and LoRC (ZeroQuant-V2)."""

from toolkit.quant import zeroquant
from toolkit.quant.zeroquant import (
  GPTQQuantizer,
  LoRCFactors,
  QuantizedModel,
  QuantParams,
  RTNQuantizer,
  SizeReport,
  dense_input_hessians,
  dense_kernels,
  gptq,
  gptq_from_hessian,
  hessian,
  lorc,
  quantize_dense_layers,
  quantize_model,
  rtn,
  rtn_params,
  size_report,
)

__all__ = [
  "GPTQQuantizer",
  "LoRCFactors",
  "QuantParams",
  "QuantizedModel",
  "RTNQuantizer",
  "SizeReport",
  "dense_input_hessians",
  "dense_kernels",
  "gptq",
  "gptq_from_hessian",
  "hessian",
  "lorc",
  "quantize_dense_layers",
  "quantize_model",
  "rtn",
  "rtn_params",
  "size_report",
  "zeroquant",
]
