"""KIVI's asymmetric low-bit quantization of the KV cache: per-channel keys, per-token values, packed int32 codes.

Liu, Yuan, Jin, Zhong, Xu, Braverman, Chen, Hu. "KIVI: A Tuning-Free Asymmetric 2bit Quantization for KV Cache",
ICML 2024, arXiv 2402.02750.

Asymmetric min-max quantization with B bits of a group g: scale s = (max g − min g) / (2^B − 1), zero point the
float minimum m, codes q = clip(round((x − m) / s), 0, 2^B − 1), and x̂ = q s + m, so |x − x̂| ≤ s / 2. The paper's
finding is the grouping: key caches have a few outlier *channels*, so keys are quantized per channel (a group is
``group_size`` consecutive tokens of one channel), while values are quantized per token (``group_size`` consecutive
channels of one token). Codes are packed ``32 / B`` to an int32 word along the grouped axis (as the authors' kernels
do; Triton's ``dot`` takes no unsigned integers).

This module holds the quantizer and the packing. The streaming cache with its full-precision residual and the
decode-attention kernels (Pallas and XLA) are not written yet.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

SUPPORTED_BITS = (2, 4, 8)


def _check_bits(bits) -> int:
  if bits not in SUPPORTED_BITS:
    raise ValueError(f"`bits` must be one of {SUPPORTED_BITS}, got {bits!r}.")
  return bits


def pack(codes: jax.Array, bits: int) -> jax.Array:
  """Packs integer codes in [0, 2^bits) along the last axis, ``32 // bits`` per int32 word (lowest bits first)."""
  _check_bits(bits)
  per_word = 32 // bits
  if codes.shape[-1] % per_word:
    raise ValueError(f"the last axis of `codes` ({codes.shape[-1]}) must be a multiple of {per_word} for "
                     f"{bits}-bit packing.")
  fields = codes.astype(jnp.uint32).reshape(*codes.shape[:-1], -1, per_word)
  shifts = (jnp.arange(per_word, dtype=jnp.uint32) * bits)
  # OR of disjoint bit fields == their sum; done in uint32 so the top field may use the sign bit.
  words = jnp.sum(fields << shifts, axis=-1, dtype=jnp.uint32)
  return jax.lax.bitcast_convert_type(words, jnp.int32)


def unpack(words: jax.Array, bits: int) -> jax.Array:
  """Inverse of ``pack``: int32 words (..., W) to int32 codes (..., W · 32 // bits)."""
  _check_bits(bits)
  per_word = 32 // bits
  shifts = jnp.arange(per_word, dtype=jnp.int32) * bits
  # Arithmetic shift of a signed word, then the mask: correct for the top field too.
  codes = (words[..., None] >> shifts) & ((1 << bits) - 1)
  return codes.reshape(*words.shape[:-1], -1)


@struct.dataclass
class QuantizedTensor:
  """Packed codes with their group scales and zero points.

  Attributes:
    codes: int32 words, the grouped axis moved last and packed: (..., other, grouped / (32 / bits)).
    scale, zero: (..., other, grouped / group_size): per-group step and float minimum.
    bits, group_size: static.
    axis: static, the grouped axis of the original array (-2: tokens, for keys; -1: channels, for values).
    shape: static, the original shape.
  """

  codes: jax.Array
  scale: jax.Array
  zero: jax.Array
  bits: int = struct.field(pytree_node=False)
  group_size: int = struct.field(pytree_node=False)
  axis: int = struct.field(pytree_node=False)
  shape: tuple[int, ...] = struct.field(pytree_node=False)

  @property
  def nbytes(self) -> int:
    """Bytes of codes, scales and zero points as stored."""
    return sum(int(a.size) * a.dtype.itemsize for a in (self.codes, self.scale, self.zero))


def _quantize(x: jax.Array, bits: int, group_size: int, axis: int, name: str) -> QuantizedTensor:
  _check_bits(bits)
  if jnp.ndim(x) < 2:
    raise ValueError(f"`{name}` must have shape (..., tokens, channels), got {jnp.shape(x)}.")
  if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
    raise TypeError(f"`{name}` must be a floating array, got dtype {jnp.result_type(x)}.")
  per_word = 32 // bits
  length = x.shape[axis]
  if not isinstance(group_size, int) or group_size < 1 or length % group_size or group_size % per_word:
    raise ValueError(f"`group_size` must divide the grouped axis of `{name}` ({length}) and be a multiple of "
                     f"{per_word} (codes per int32 at {bits} bits), got {group_size!r}.")
  moved = jnp.moveaxis(x, axis, -1)
  groups = moved.reshape(*moved.shape[:-1], length // group_size, group_size)
  lo = jnp.min(groups, axis=-1)
  hi = jnp.max(groups, axis=-1)
  levels = (1 << bits) - 1
  scale = (hi - lo) / levels
  # A constant group has range 0: any positive step gives code 0 and dequantizes exactly to its minimum.
  safe = jnp.where(scale > 0, scale, jnp.ones_like(scale))
  codes = jnp.clip(jnp.round((groups - lo[..., None]) / safe[..., None]), 0, levels).astype(jnp.int32)
  return QuantizedTensor(pack(codes.reshape(moved.shape), bits), safe, lo, bits, group_size, axis,
                         tuple(x.shape))


def quantize_keys(k: jax.Array, *, bits: int = 2, group_size: int = 32) -> QuantizedTensor:
  """Per-channel key quantization: each group is ``group_size`` consecutive tokens of one channel.

  Args:
    k: (..., tokens, channels) keys; tokens must be a multiple of ``group_size``.
    bits: 2, 4 or 8.
    group_size: G (paper default 32), a multiple of ``32 // bits``.
  """
  return _quantize(k, bits, group_size, -2, "k")


def quantize_values(v: jax.Array, *, bits: int = 2, group_size: int = 32) -> QuantizedTensor:
  """Per-token value quantization: each group is ``group_size`` consecutive channels of one token."""
  return _quantize(v, bits, group_size, -1, "v")


def dequantize(q: QuantizedTensor) -> jax.Array:
  """The float array of the original shape: x̂ = code · scale + zero."""
  codes = unpack(q.codes, q.bits)
  groups = codes.reshape(*codes.shape[:-1], -1, q.group_size).astype(q.scale.dtype)
  values = groups * q.scale[..., None] + q.zero[..., None]
  return jnp.moveaxis(values.reshape(codes.shape), -1, q.axis)

