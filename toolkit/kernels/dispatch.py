"""The kernel dispatch rule shared by the toolkit's Pallas kernels: implementation names, the platform rule,
interpret mode, Triton's compiler parameters and the argument checks every kernel makes.

Every kernel entry point takes ``impl=None | "pallas" | "xla"``: ``None`` picks the Pallas kernel where it compiles
(GPU, TPU) and the XLA path on CPU, where Pallas only interprets (slowly, for tests).

>>> default_impl()  # this machine is a CPU
'xla'
>>> check_impl(None), check_impl("pallas")
('xla', 'pallas')
>>> check_bits(2, (2, 4, 8))
2
"""

from __future__ import annotations

import jax
import numpy as np

IMPLS = ("pallas", "xla")
# jax.default_backend() names: "gpu" for CUDA and ROCm (some versions report the platform itself), "tpu".
COMPILED_PALLAS_BACKENDS = ("gpu", "cuda", "rocm", "tpu")


def default_impl() -> str:
  """``"pallas"`` on GPU/TPU, ``"xla"`` elsewhere (on CPU Pallas only runs in interpret mode)."""
  return "pallas" if jax.default_backend() in COMPILED_PALLAS_BACKENDS else "xla"


def check_impl(impl: str | None) -> str:
  """``impl`` itself if it names an implementation, ``default_impl()`` for ``None``; else a ValueError."""
  if impl is None:
    return default_impl()
  if impl not in IMPLS:
    raise ValueError(f"`impl` must be one of {IMPLS} or None, got {impl!r}.")
  return impl


def _check_interpret(interpret, allow_none: bool) -> None:
  # bool() of any other object would pick a mode silently: the string "false" is truthy.
  if not (isinstance(interpret, (bool, np.bool_)) or (allow_none and interpret is None)):
    expected = "None or a bool" if allow_none else "a bool (resolve None with default_interpret first)"
    raise TypeError(f"`interpret` must be {expected}, got {interpret!r}.")


def default_interpret(interpret: bool | None) -> bool:
  """``interpret`` itself, or for ``None`` True on CPU (no Pallas compiler there) and False elsewhere."""
  _check_interpret(interpret, allow_none=True)
  return jax.default_backend() == "cpu" if interpret is None else bool(interpret)


def check_bits(bits, supported: tuple[int, ...], name: str = "bits") -> int:
  """``bits`` as an int if it is an integer (not a bool) among ``supported``; else a ValueError naming ``name``."""
  if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or int(bits) not in supported:
    raise ValueError(f"`{name}` must be one of {supported}, got {bits!r}.")
  return int(bits)


def compiler_params(interpret: bool):
  """Triton's compiler parameters on GPU, None elsewhere.

  jax 0.10 lowers a ``pallas_call`` without compiler parameters to Mosaic GPU, which wants warpgroup-sized
  (128-element) blocks; these kernels are written for the Triton backend (one query row, 16-row dots).
  """
  _check_interpret(interpret, allow_none=False)
  if interpret or jax.default_backend() not in ("gpu", "cuda", "rocm"):
    return None
  from jax.experimental.pallas import triton as pltriton

  return pltriton.CompilerParams(num_warps=4, num_stages=1)


__all__ = [
  "IMPLS",
  "check_bits",
  "check_impl",
  "compiler_params",
  "default_impl",
  "default_interpret",
]
