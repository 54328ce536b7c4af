"""What the Pallas kernels of this package share."""

from __future__ import annotations

import jax


def compiler_params(interpret: bool):
  """Triton's compiler parameters on GPU, None elsewhere.

  jax 0.10 lowers a ``pallas_call`` without compiler parameters to Mosaic GPU, which wants warpgroup-sized
  (128-element) blocks; these kernels are written for the Triton backend (one query row, 16-row dots).
  """
  if interpret or jax.default_backend() != "gpu":
    return None
  from jax.experimental.pallas import triton as pltriton

  return pltriton.CompilerParams(num_warps=4, num_stages=1)
