"""KIVI's asymmetric low-bit quantization of the KV cache: per-channel keys, per-token values, packed int32 codes.

Liu, Yuan, Jin, Zhong, Xu, Braverman, Chen, Hu. "KIVI: A Tuning-Free Asymmetric 2bit Quantization for KV Cache",
ICML 2024, arXiv 2402.02750.

Asymmetric min-max quantization with B bits of a group g: scale s = (max g − min g) / (2^B − 1), zero point the
float minimum m, codes q = clip(round((x − m) / s), 0, 2^B − 1), and x̂ = q s + m, so |x − x̂| ≤ s / 2. The paper's
finding is the grouping: key caches have a few outlier *channels*, so keys are quantized per channel (a group is
``group_size`` consecutive tokens of one channel), while values are quantized per token (``group_size`` consecutive
channels of one token). Codes are packed ``32 / B`` to an int32 word along the grouped axis (as the authors' kernels
do; Triton's ``dot`` takes no unsigned integers).

This module holds the quantizer, the packing and the streaming cache with its full-precision residual. The
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



@struct.dataclass
class KIVICache:
  """A fixed-capacity KIVI cache for one layer: quantized groups plus a full-precision residual (jit-safe).

  Shapes, with leading batch/head axes ``...``, capacity ``T`` tokens and ``C`` channels:
  ``k_codes`` (..., C, T / (32/bits)) packed along tokens, ``k_scale``/``k_zero`` (..., C, T / G);
  ``v_codes`` (..., T, C / (32/bits)) packed along channels, ``v_scale``/``v_zero`` (..., T, C / G);
  ``k_residual``/``v_residual`` (..., R, C), the latest tokens in full precision.
  ``n_quantized`` (a multiple of G) and ``n_residual`` are int32 scalars; the token order is quantized groups first,
  then the residual.
  """

  k_codes: jax.Array
  k_scale: jax.Array
  k_zero: jax.Array
  v_codes: jax.Array
  v_scale: jax.Array
  v_zero: jax.Array
  k_residual: jax.Array
  v_residual: jax.Array
  n_quantized: jax.Array
  n_residual: jax.Array
  bits: int = struct.field(pytree_node=False)
  group_size: int = struct.field(pytree_node=False)

  @property
  def length(self) -> jax.Array:
    return self.n_quantized + self.n_residual


def init_cache(batch_shape: tuple[int, ...], capacity: int, channels: int, *, bits: int = 2, group_size: int = 32,
               residual: int = 128, dtype=jnp.float32) -> KIVICache:
  """An empty cache. ``residual`` (R, paper default 128) must be a multiple of ``group_size`` (G, default 32)."""
  _check_bits(bits)
  per_word = 32 // bits
  if group_size % per_word or channels % group_size or capacity % group_size:
    raise ValueError(f"`group_size` ({group_size}) must be a multiple of {per_word} and divide `channels` "
                     f"({channels}) and `capacity` ({capacity}).")
  if residual < group_size or residual % group_size:
    raise ValueError(f"`residual` must be a positive multiple of `group_size` ({group_size}), got {residual}.")
  b = tuple(batch_shape)
  zeros = lambda *s, dt=dtype: jnp.zeros(b + s, dt)
  return KIVICache(
      k_codes=zeros(channels, capacity // per_word, dt=jnp.int32), k_scale=zeros(channels, capacity // group_size),
      k_zero=zeros(channels, capacity // group_size), v_codes=zeros(capacity, channels // per_word, dt=jnp.int32),
      v_scale=zeros(capacity, channels // group_size), v_zero=zeros(capacity, channels // group_size),
      k_residual=zeros(residual, channels), v_residual=zeros(residual, channels),
      n_quantized=jnp.zeros((), jnp.int32), n_residual=jnp.zeros((), jnp.int32), bits=bits, group_size=group_size)


def _write(buffer: jax.Array, update: jax.Array, start: jax.Array, axis: int) -> jax.Array:
  index = [jnp.zeros((), jnp.int32)] * buffer.ndim
  index[axis % buffer.ndim] = start
  return jax.lax.dynamic_update_slice(buffer, update.astype(buffer.dtype), index)


def append(cache: KIVICache, k: jax.Array, v: jax.Array) -> KIVICache:
  """Appends one token's key and value (..., C). When the residual is full, its oldest G tokens are quantized
  as one group (keys per channel, values per token) and the residual shifts by G: the latest R − G to R tokens stay
  in full precision. A full cache is the caller's to avoid (its quantized part would be overwritten)."""
  g, per_word = cache.group_size, 32 // cache.bits
  k_res = _write(cache.k_residual, k[..., None, :], cache.n_residual, -2)
  v_res = _write(cache.v_residual, v[..., None, :], cache.n_residual, -2)
  count = cache.n_residual + 1
  full = count == cache.k_residual.shape[-2]

  qk = quantize_keys(k_res[..., :g, :], bits=cache.bits, group_size=g)
  qv = quantize_values(v_res[..., :g, :], bits=cache.bits, group_size=g)
  n_q = cache.n_quantized
  flushed = cache.replace(
      k_codes=_write(cache.k_codes, qk.codes, n_q // per_word, -1),
      k_scale=_write(cache.k_scale, qk.scale, n_q // g, -1),
      k_zero=_write(cache.k_zero, qk.zero, n_q // g, -1),
      v_codes=_write(cache.v_codes, qv.codes, n_q, -2),
      v_scale=_write(cache.v_scale, qv.scale, n_q, -2),
      v_zero=_write(cache.v_zero, qv.zero, n_q, -2),
      k_residual=jnp.roll(k_res, -g, axis=-2), v_residual=jnp.roll(v_res, -g, axis=-2),
      n_quantized=n_q + g, n_residual=count - g)
  kept = cache.replace(k_residual=k_res, v_residual=v_res, n_residual=count)
  return jax.tree.map(lambda a, b: jnp.where(full, a, b), flushed, kept)


def dequantize_cache(cache: KIVICache) -> tuple[jax.Array, jax.Array]:
  """Keys and values of the whole capacity (..., T + R, C) in token order, and a validity mask (T + R,)."""
  capacity = cache.v_codes.shape[-2]
  channels = cache.k_residual.shape[-1]
  keys = dequantize(QuantizedTensor(cache.k_codes, cache.k_scale, cache.k_zero, cache.bits, cache.group_size, -2,
                                    cache.k_codes.shape[:-2] + (capacity, channels)))
  values = dequantize(QuantizedTensor(cache.v_codes, cache.v_scale, cache.v_zero, cache.bits, cache.group_size, -1,
                                      cache.v_codes.shape[:-2] + (capacity, channels)))
  return (jnp.concatenate([keys, cache.k_residual], axis=-2),
          jnp.concatenate([values, cache.v_residual], axis=-2), valid_tokens(cache))


def valid_tokens(cache: KIVICache) -> jax.Array:
  """(T + R,) mask of the filled slots: the first ``n_quantized`` of the quantized part, then ``n_residual``."""
  capacity = cache.v_codes.shape[-2]
  position = jnp.arange(capacity + cache.k_residual.shape[-2])
  return jnp.where(position < capacity, position < cache.n_quantized, position - capacity < cache.n_residual)


def decode_attention_reference(q: jax.Array, cache: KIVICache) -> jax.Array:
  """One decode step of attention against the cache by dequantize-then-einsum: q (..., C) -> (..., C)."""
  keys, values, mask = dequantize_cache(cache)
  scores = jnp.einsum("...c,...tc->...t", q, keys) / jnp.sqrt(q.shape[-1]).astype(q.dtype)
  weights = jax.nn.softmax(jnp.where(mask, scores, -jnp.inf), axis=-1)
  return jnp.einsum("...t,...tc->...c", weights, values)


def decode_attention_xla(q: jax.Array, cache: KIVICache) -> jax.Array:
  """The same attention without materialising dequantized keys or values (the XLA path).

  Keys are per channel: q·k̂_t = Σ_c (q_c s_{c,g(t)}) code_{c,t} + Σ_c q_c z_{c,g(t)}, so the scales fold into the
  query and the codes are only converted and contracted. Values are per token: the softmax weights fold into the
  scales, out_c = Σ_t (p_t s_{t,g(c)}) code_{t,c} + Σ_t p_t z_{t,g(c)}.
  """
  g = cache.group_size
  channels = q.shape[-1]
  scale = 1.0 / jnp.sqrt(channels).astype(q.dtype)
  k_codes = unpack(cache.k_codes, cache.bits).astype(q.dtype)  # (..., C, T)
  capacity = k_codes.shape[-1]
  qs = q[..., :, None] * cache.k_scale  # (..., C, T/G)
  scores_q = jnp.einsum("...cgt,...cg->...gt", k_codes.reshape(*k_codes.shape[:-1], -1, g), qs)
  scores_q = (scores_q + jnp.einsum("...c,...cg->...g", q, cache.k_zero)[..., None]).reshape(
      *q.shape[:-1], capacity)
  scores_r = jnp.einsum("...c,...rc->...r", q, cache.k_residual)
  scores = jnp.concatenate([scores_q, scores_r], axis=-1) * scale
  weights = jax.nn.softmax(jnp.where(valid_tokens(cache), scores, -jnp.inf), axis=-1)
  p_q, p_r = weights[..., :capacity], weights[..., capacity:]
  v_codes = unpack(cache.v_codes, cache.bits).astype(q.dtype)  # (..., T, C)
  v_groups = v_codes.reshape(*v_codes.shape[:-1], -1, g)  # (..., T, C/G, G)
  out_q = jnp.einsum("...tg,...tgc->...gc", p_q[..., None] * cache.v_scale, v_groups)
  out_q = out_q + jnp.einsum("...t,...tg->...g", p_q, cache.v_zero)[..., None]
  return out_q.reshape(*q.shape[:-1], channels) + jnp.einsum("...r,...rc->...c", p_r, cache.v_residual)
