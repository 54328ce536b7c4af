"""KIVI's asymmetric low-bit quantization of the KV cache: per-channel keys, per-token values, packed int32 codes.

Liu, Yuan, Jin, Zhong, Xu, Braverman, Chen, Hu. "KIVI: A Tuning-Free Asymmetric 2bit Quantization for KV Cache",
ICML 2024, arXiv 2402.02750.

Asymmetric min-max quantization with B bits of a group g: scale s = (max g − min g) / (2^B − 1), zero point the
float minimum m, codes q = clip(round((x − m) / s), 0, 2^B − 1), and x̂ = q s + m, so |x − x̂| ≤ s / 2. The paper's
finding is the grouping: key caches have a few outlier *channels*, so keys are quantized per channel (a group is
``group_size`` consecutive tokens of one channel), while values are quantized per token (``group_size`` consecutive
channels of one token). Codes are packed ``32 / B`` to an int32 word along the grouped axis (as the authors' kernels
do; Triton's ``dot`` takes no unsigned integers).

This module holds the quantizer, the packing, the streaming cache with its full-precision residual, decode
attention against that cache (a Pallas kernel and an XLA path, chosen by ``impl``), and ``KIVI``, the cache strategy
the transformer of ``toolkit.models.transformer`` plugs in. ``bits=16`` keeps the cache unquantized through the same
machinery: the paper's 16-bit baseline, and an exact oracle for the bookkeeping.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.experimental import pallas as pl

from toolkit import _checks
from toolkit.kernels import dispatch

SUPPORTED_BITS = (2, 4, 8)  # packed code widths
CACHE_BITS = SUPPORTED_BITS + (16,)  # 16: values kept as they are (the unquantized baseline)


def _check_bits(bits, allowed=SUPPORTED_BITS) -> int:
  return dispatch.check_bits(bits, allowed)


def _check_sizes(**sizes) -> None:
  for name, value in sizes.items():
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
      raise ValueError(f"`{name}` must be a positive int, got {value!r}.")


def _per_word(bits: int) -> int:
  return 1 if bits == 16 else 32 // bits


def pack(codes: jax.Array, bits: int) -> jax.Array:
  """Packs integer codes in [0, 2^bits) along the last axis, ``32 // bits`` per int32 word (lowest bits first).

  Concrete codes outside [0, 2^bits) are refused; under ``jit`` each code is masked to its ``bits`` low bits, so an
  out-of-range code can never spill into its neighbours' fields.
  """
  _check_bits(bits)
  per_word = 32 // bits
  if not jnp.issubdtype(jnp.result_type(codes), jnp.integer):
    raise TypeError(f"`codes` must be an integer array, got dtype {jnp.result_type(codes)}.")
  if codes.ndim < 1 or codes.shape[-1] % per_word:
    raise ValueError(
      f"the last axis of `codes` ({codes.shape}) must be a multiple of {per_word} for {bits}-bit packing."
    )
  _checks.check_ids(codes, 1 << bits, "codes", f"{bits}-bit codes")
  fields = (codes.astype(jnp.uint32) & jnp.uint32((1 << bits) - 1)).reshape(*codes.shape[:-1], -1, per_word)
  shifts = jnp.arange(per_word, dtype=jnp.uint32) * bits
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


def _codes(stored: jax.Array, bits: int) -> jax.Array:
  """The codes behind the stored words; at 16 bits the stored array holds the values themselves."""
  return stored if bits == 16 else unpack(stored, bits)


@struct.dataclass
class QuantizedTensor:
  """Packed codes with their group scales and zero points.

  Attributes:
    codes: int32 words, the grouped axis moved last and packed: (..., other, grouped / (32 / bits)); at 16 bits the
      unquantized values in the same (moved) layout.
    scale: (..., other, grouped / group_size): per-group step.
    zero: (..., other, grouped / group_size): per-group float minimum.
    bits: static.
    group_size: static.
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
    """Bytes of codes, scales and zero points as stored (at 16 bits the values; their unit scales are not
    counted, since an unquantized cache would not store them)."""
    arrays = (self.codes,) if self.bits == 16 else (self.codes, self.scale, self.zero)
    return sum(int(a.size) * a.dtype.itemsize for a in arrays)


def _quantize(x: jax.Array, bits: int, group_size: int, axis: int, name: str, scale_dtype) -> QuantizedTensor:
  _check_bits(bits, CACHE_BITS)
  if jnp.ndim(x) < 2:
    raise ValueError(f"`{name}` must have shape (..., tokens, channels), got {jnp.shape(x)}.")
  if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
    raise TypeError(f"`{name}` must be a floating array, got dtype {jnp.result_type(x)}.")
  per_word = _per_word(bits)
  length = x.shape[axis]
  if not isinstance(group_size, int) or group_size < 1 or length % group_size or group_size % per_word:
    raise ValueError(
      f"`group_size` must divide the grouped axis of `{name}` ({length}) and be a multiple of "
      f"{per_word} (codes per int32 at {bits} bits), got {group_size!r}."
    )
  scale_dtype = jnp.dtype(x.dtype if scale_dtype is None else scale_dtype)
  moved = jnp.moveaxis(x, axis, -1)
  groups = moved.reshape(*moved.shape[:-1], length // group_size, group_size)
  if bits == 16:
    ones = jnp.ones(groups.shape[:-1], scale_dtype)
    return QuantizedTensor(moved, ones, jnp.zeros_like(ones), bits, group_size, axis, tuple(x.shape))
  # XLA:CPU's min/max reductions drop NaN (jaxlib 0.10.2: min over [NaN, 1, ...] is 1, where numpy gives NaN), so a
  # NaN would quantize to a finite code. Poison the group's range explicitly: a NaN input dequantizes to NaN.
  has_nan = jnp.any(jnp.isnan(groups), axis=-1)
  lo = jnp.where(has_nan, jnp.nan, jnp.min(groups, axis=-1))
  hi = jnp.where(has_nan, jnp.nan, jnp.max(groups, axis=-1))
  levels = (1 << bits) - 1
  # Scale and zero point are rounded to their storage dtype first, so the codes are the nearest ones to x under the
  # parameters that are actually stored (the paper stores them in fp16).
  zero = lo.astype(scale_dtype)
  scale = ((hi - lo) / levels).astype(scale_dtype)
  # A constant group has range 0: any positive step gives code 0 and dequantizes exactly to its minimum. A NaN range
  # stays NaN (the comparison is False for NaN, so test for it first).
  safe = jnp.where(jnp.isnan(scale) | (scale > 0), scale, jnp.ones_like(scale))
  shifted = (groups - zero[..., None].astype(x.dtype)) / safe[..., None].astype(x.dtype)
  codes = jnp.clip(jnp.round(shifted), 0, levels).astype(jnp.int32)
  return QuantizedTensor(pack(codes.reshape(moved.shape), bits), safe, zero, bits, group_size, axis, tuple(x.shape))


def quantize_keys(k: jax.Array, *, bits: int = 2, group_size: int = 32, scale_dtype=None) -> QuantizedTensor:
  """Per-channel key quantization (KIVI §3.2): each group is ``group_size`` consecutive tokens of one channel.

  Args:
    k: (..., tokens, channels) keys; tokens must be a multiple of ``group_size``.
    bits: 2, 4 or 8 (16: no quantization).
    group_size: G (paper default 32), a multiple of ``32 // bits``.
    scale_dtype: storage dtype of scales and zero points (default: that of ``k``; the paper uses fp16).

  Returns:
    A ``QuantizedTensor``; ``dequantize`` gives back the keys to within half a step of their group.

  >>> k = jax.random.normal(jax.random.key(0), (4, 64, 32))  # (heads, tokens, channels)
  >>> q = quantize_keys(k, bits=2, group_size=32)
  >>> q.codes.shape, q.scale.shape  # 16 two-bit codes per int32 word along the tokens
  ((4, 32, 4), (4, 32, 2))
  >>> bool(jnp.all(jnp.abs(dequantize(q) - k) <= q.scale.max() / 2 + 1e-6))
  True
  """
  return _quantize(k, bits, group_size, -2, "k", scale_dtype)


def quantize_values(v: jax.Array, *, bits: int = 2, group_size: int = 32, scale_dtype=None) -> QuantizedTensor:
  """Per-token value quantization (KIVI §3.2): each group is ``group_size`` consecutive channels of one token."""
  return _quantize(v, bits, group_size, -1, "v", scale_dtype)


def dequantize(q: QuantizedTensor) -> jax.Array:
  """The float array of the original shape: x̂ = code · scale + zero (computed in at least float32)."""
  if not isinstance(q, QuantizedTensor):
    raise TypeError(f"`q` must be a QuantizedTensor (of `quantize_keys` or `quantize_values`), got {type(q).__name__}.")
  codes = _codes(q.codes, q.bits)
  dtype = jnp.promote_types(jnp.promote_types(q.scale.dtype, jnp.float32), codes.dtype if q.bits == 16 else jnp.float32)
  groups = codes.reshape(*codes.shape[:-1], -1, q.group_size).astype(dtype)
  values = groups * q.scale[..., None].astype(dtype) + q.zero[..., None].astype(dtype)
  return jnp.moveaxis(values.reshape(codes.shape), -1, q.axis)


@struct.dataclass
class KIVICache:
  """A fixed-capacity KIVI cache for one layer: quantized groups plus a full-precision residual (jit-safe).

  ``keys`` and ``values`` are the quantized part over the whole capacity ``T`` (a multiple of G): keys per channel
  (``axis=-2``; codes packed along tokens, one scale per channel and group of G tokens) unless the cache was made
  with ``per_channel_keys=False`` (the naive per-token ablation), values per token. ``k_residual``/``v_residual``
  (..., R, C) hold the latest tokens in full precision. ``n_quantized`` (a multiple of G) and ``n_residual`` are
  int32 scalars; the token order is quantized groups first, then the residual.
  """

  keys: QuantizedTensor
  values: QuantizedTensor
  k_residual: jax.Array
  v_residual: jax.Array
  n_quantized: jax.Array
  n_residual: jax.Array

  @property
  def bits(self) -> int:
    return self.values.bits

  @property
  def group_size(self) -> int:
    return self.values.group_size

  @property
  def capacity(self) -> int:
    return self.values.shape[-2]

  @property
  def length(self) -> jax.Array:
    return self.n_quantized + self.n_residual

  @property
  def quantized_nbytes(self) -> int:
    """Bytes of the quantized part (codes, scales, zero points) over the whole capacity."""
    return self.keys.nbytes + self.values.nbytes

  @property
  def residual_nbytes(self) -> int:
    return sum(int(a.size) * a.dtype.itemsize for a in (self.k_residual, self.v_residual))


def init_cache(
  batch_shape: tuple[int, ...],
  capacity: int,
  channels: int,
  *,
  bits: int = 2,
  group_size: int = 32,
  residual: int = 128,
  dtype=jnp.float32,
  scale_dtype=None,
  per_channel_keys: bool = True,
) -> KIVICache:
  """An empty cache. ``residual`` (R, paper default 128) must be a multiple of ``group_size`` (G, default 32);
  ``capacity`` (quantized tokens) and ``channels`` must be multiples of G."""
  _check_bits(bits, CACHE_BITS)
  _check_sizes(capacity=capacity, channels=channels, group_size=group_size, residual=residual)
  per_word = _per_word(bits)
  if group_size % per_word or channels % group_size or capacity % group_size:
    raise ValueError(
      f"`group_size` ({group_size}) must be a multiple of {per_word} and divide `channels` "
      f"({channels}) and `capacity` ({capacity})."
    )
  if residual < group_size or residual % group_size:
    raise ValueError(f"`residual` must be a positive multiple of `group_size` ({group_size}), got {residual}.")
  b = tuple(batch_shape)
  empty = jax.ShapeDtypeStruct(b + (capacity, channels), dtype)
  key_axis = -2 if per_channel_keys else -1
  # Zero-filled buffers of the quantizer's output structure; quantizing a constant array instead would have XLA
  # constant-fold a reduction over the whole capacity at every compile.
  zeros = lambda axis, name: jax.tree.map(
    lambda a: jnp.zeros(a.shape, a.dtype),
    jax.eval_shape(lambda x: _quantize(x, bits, group_size, axis, name, scale_dtype), empty),
  )
  return KIVICache(
    keys=zeros(key_axis, "k"),
    values=zeros(-1, "v"),
    k_residual=jnp.zeros(b + (residual, channels), dtype),
    v_residual=jnp.zeros(b + (residual, channels), dtype),
    n_quantized=jnp.zeros((), jnp.int32),
    n_residual=jnp.zeros((), jnp.int32),
  )


def _write(buffer: jax.Array, update: jax.Array, start: jax.Array, axis: int) -> jax.Array:
  index = [jnp.zeros((), jnp.int32)] * buffer.ndim
  index[axis % buffer.ndim] = start
  return jax.lax.dynamic_update_slice(buffer, update.astype(buffer.dtype), index)


def _store(buffer: QuantizedTensor, group: QuantizedTensor, start: jax.Array) -> QuantizedTensor:
  """Writes the quantized tokens ``group`` into ``buffer`` from token ``start`` (a multiple of G)."""
  if buffer.axis == -2:  # tokens are the grouped, packed (last) axis of the stored layout
    per_word = _per_word(buffer.bits)
    return buffer.replace(
      codes=_write(buffer.codes, group.codes, start // per_word, -1),
      scale=_write(buffer.scale, group.scale, start // buffer.group_size, -1),
      zero=_write(buffer.zero, group.zero, start // buffer.group_size, -1),
    )
  return buffer.replace(
    codes=_write(buffer.codes, group.codes, start, -2),
    scale=_write(buffer.scale, group.scale, start, -2),
    zero=_write(buffer.zero, group.zero, start, -2),
  )


def append(cache: KIVICache, k: jax.Array, v: jax.Array) -> KIVICache:
  """Appends one token's key and value (..., C). When the residual is full, its oldest G tokens are quantized
  as one group (keys per channel, values per token) and the residual shifts by G: the latest R − G to R tokens stay
  in full precision.

  A cache holds at most ``capacity + residual - 1`` tokens. Appending past that raises a ``ValueError`` when the
  cache's counts are concrete; under ``jit`` it cannot raise, so ``n_quantized`` then exceeds ``capacity`` and
  ``decode_attention`` returns NaN (``overflowed`` tells which) instead of attending over overwritten groups."""
  expected = cache.k_residual.shape[:-2] + cache.k_residual.shape[-1:]
  if jnp.shape(k) != expected or jnp.shape(v) != expected:
    raise ValueError(
      f"`k` and `v` must both have shape {expected} (the cache's batch axes, then channels), got "
      f"{jnp.shape(k)} and {jnp.shape(v)}."
    )
  g = cache.group_size
  concrete = not isinstance(cache.n_residual, jax.core.Tracer) and not isinstance(cache.n_quantized, jax.core.Tracer)
  if (
    concrete and int(cache.n_residual) + 1 == cache.k_residual.shape[-2] and int(cache.n_quantized) + g > cache.capacity
  ):
    raise ValueError(
      f"the cache is full: {cache.capacity} quantized + {cache.k_residual.shape[-2] - 1} residual tokens "
      f"(capacity + residual - 1); make it with a larger `capacity`."
    )
  k_res = _write(cache.k_residual, k[..., None, :], cache.n_residual, -2)
  v_res = _write(cache.v_residual, v[..., None, :], cache.n_residual, -2)
  count = cache.n_residual + 1
  full = count == cache.k_residual.shape[-2]

  scale_dtype = cache.values.scale.dtype
  qk = _quantize(k_res[..., :g, :], cache.bits, g, cache.keys.axis, "k", scale_dtype)
  qv = quantize_values(v_res[..., :g, :], bits=cache.bits, group_size=g, scale_dtype=scale_dtype)
  flushed = cache.replace(
    keys=_store(cache.keys, qk, cache.n_quantized),
    values=_store(cache.values, qv, cache.n_quantized),
    k_residual=jnp.roll(k_res, -g, axis=-2),
    v_residual=jnp.roll(v_res, -g, axis=-2),
    n_quantized=cache.n_quantized + g,
    n_residual=count - g,
  )
  kept = cache.replace(k_residual=k_res, v_residual=v_res, n_residual=count)
  return jax.tree.map(lambda a, b: jnp.where(full, a, b), flushed, kept)


def extend(cache: KIVICache, k: jax.Array, v: jax.Array) -> KIVICache:
  """Appends tokens (..., T, C) one at a time, so a prefilled cache is the one decoding would have built."""
  if k.shape != v.shape or k.shape[:-2] != cache.k_residual.shape[:-2] or k.shape[-1] != cache.k_residual.shape[-1]:
    raise ValueError(
      f"`k` and `v` must both have shape {cache.k_residual.shape[:-2]} + (tokens, "
      f"{cache.k_residual.shape[-1]}), got {k.shape} and {v.shape}."
    )
  # The R-th residual token flushes a group into the quantized part, so a cache holds capacity + R - 1 tokens.
  room = cache.capacity + cache.k_residual.shape[-2] - 1
  if not isinstance(cache.n_quantized, jax.core.Tracer) and not isinstance(cache.n_residual, jax.core.Tracer):
    room -= int(cache.n_quantized) + int(cache.n_residual)
  if k.shape[-2] > room:
    raise ValueError(
      f"the prompt ({k.shape[-2]} tokens) does not fit the cache: room for {room} more tokens (capacity "
      f"{cache.capacity} quantized + {cache.k_residual.shape[-2]} residual - 1, less those already stored)."
    )
  step = lambda c, kv: (append(c, *kv), None)
  cache, _ = jax.lax.scan(step, cache, (jnp.moveaxis(k, -2, 0), jnp.moveaxis(v, -2, 0)))
  return cache


def _check_cache(cache) -> KIVICache:
  if not isinstance(cache, KIVICache):
    raise TypeError(f"`cache` must be a KIVICache (of `init_cache`), got {type(cache).__name__}.")
  return cache


def _check_query(q, cache) -> None:
  """``q`` (..., C) with the cache's batch axes and channels."""
  _check_cache(cache)
  expected = cache.k_residual.shape[:-2] + cache.k_residual.shape[-1:]
  if jnp.shape(q) != expected:
    raise ValueError(f"`q` must have shape {expected} (the cache's batch axes, then channels), got {jnp.shape(q)}.")


def overflowed(cache: KIVICache) -> jax.Array:
  """Whether more tokens were appended (under ``jit``) than the cache holds: its quantized groups were overwritten."""
  _check_cache(cache)
  return cache.n_quantized > cache.capacity


def dequantize_cache(cache: KIVICache) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Keys and values of the whole capacity (..., T + R, C) in token order, and a validity mask (T + R,)."""
  _check_cache(cache)
  keys, values = dequantize(cache.keys), dequantize(cache.values)
  k_res, v_res = cache.k_residual.astype(keys.dtype), cache.v_residual.astype(values.dtype)
  return (
    jnp.concatenate([keys, k_res], axis=-2),
    jnp.concatenate([values, v_res], axis=-2),
    valid_tokens(cache),
  )


def valid_tokens(cache: KIVICache) -> jax.Array:
  """(T + R,) mask of the filled slots: the first ``n_quantized`` of the quantized part, then ``n_residual``."""
  _check_cache(cache)
  position = jnp.arange(cache.capacity + cache.k_residual.shape[-2])
  return jnp.where(
    position < cache.capacity,
    position < cache.n_quantized,
    position - cache.capacity < cache.n_residual,
  )


def decode_attention_reference(q: jax.Array, cache: KIVICache) -> jax.Array:
  """One decode step of attention against the cache by dequantize-then-einsum: q (..., C) -> (..., C)."""
  # A q of the wrong shape broadcast against the cache (or failed in an einsum with no name).
  _check_query(q, cache)
  keys, values, mask = dequantize_cache(cache)
  scores = jnp.einsum("...c,...tc->...t", q.astype(keys.dtype), keys) / math.sqrt(q.shape[-1])
  weights = jax.nn.softmax(jnp.where(mask, scores, -jnp.inf), axis=-1)
  return jnp.einsum("...t,...tc->...c", weights, values).astype(q.dtype)


def decode_attention_xla(q: jax.Array, cache: KIVICache) -> jax.Array:
  """The same attention without materialising dequantized keys or values (the XLA path).

  Keys are per channel: q·k̂_t = Σ_c (q_c s_{c,g(t)}) code_{c,t} + Σ_c q_c z_{c,g(t)}, so the scales fold into the
  query and the codes are only converted and contracted. Values are per token: the softmax weights fold into the
  scales, out_c = Σ_t (p_t s_{t,g(c)}) code_{t,c} + Σ_t p_t z_{t,g(c)}. (The per-token key ablation dequantizes.)
  """
  _check_query(q, cache)
  g, capacity, channels = cache.group_size, cache.capacity, q.shape[-1]
  qf = q.astype(jnp.promote_types(q.dtype, jnp.float32))
  if cache.keys.axis == -2:
    k_codes = _codes(cache.keys.codes, cache.bits).astype(qf.dtype)  # (..., C, T)
    qs = qf[..., :, None] * cache.keys.scale  # (..., C, T/G)
    scores_q = jnp.einsum("...cgt,...cg->...gt", k_codes.reshape(*k_codes.shape[:-1], -1, g), qs)
    bias = jnp.einsum("...c,...cg->...g", qf, cache.keys.zero.astype(qf.dtype))
    scores_q = (scores_q + bias[..., None]).reshape(*q.shape[:-1], capacity)
  else:
    scores_q = jnp.einsum("...c,...tc->...t", qf, dequantize(cache.keys))
  scores_r = jnp.einsum("...c,...rc->...r", qf, cache.k_residual)
  scores = jnp.concatenate([scores_q, scores_r], axis=-1) / math.sqrt(channels)
  weights = jax.nn.softmax(jnp.where(valid_tokens(cache), scores, -jnp.inf), axis=-1)
  p_q, p_r = weights[..., :capacity], weights[..., capacity:]
  v_codes = _codes(cache.values.codes, cache.bits).astype(qf.dtype)  # (..., T, C)
  v_groups = v_codes.reshape(*v_codes.shape[:-1], -1, g)  # (..., T, C/G, G)
  out_q = jnp.einsum("...tg,...tgc->...gc", p_q[..., None] * cache.values.scale, v_groups)
  out_q = out_q + jnp.einsum("...t,...tg->...g", p_q, cache.values.zero.astype(qf.dtype))[..., None]
  out = out_q.reshape(*q.shape[:-1], channels) + jnp.einsum("...r,...rc->...c", p_r, cache.v_residual)
  return out.astype(q.dtype)


_NEG = -1e30  # a finite "minus infinity": a fully masked block then gives weights 0, not exp(-inf + inf) = NaN


def _attention_kernel(
  counts_ref,
  q_ref,
  kc_ref,
  ks_ref,
  kz_ref,
  vc_ref,
  vs_ref,
  vz_ref,
  kr_ref,
  vr_ref,
  o_ref,
  *,
  bits: int,
  group_size: int,
  block_tokens: int,
):
  """One (batch, head) row: online softmax over blocks of quantized tokens, then the residual (flash-decoding
  with one split). The codes are unpacked in registers and contracted by multiply-and-sum (one query row is too
  few for a matrix unit); the scales are folded as in ``decode_attention_xla``."""
  n_quantized, n_residual = counts_ref[0], counts_ref[1]
  q = q_ref[...].astype(jnp.float32)
  channels, g, bt = q.shape[0], group_size, block_tokens
  per_word = _per_word(bits)
  inv_sqrt = 1.0 / math.sqrt(channels)

  def update(carry, scores, valid, weighted_values):
    m, l, acc = carry
    m_new = jnp.maximum(m, jnp.max(jnp.where(valid, scores, _NEG)))
    p = jnp.where(valid, jnp.exp(scores - m_new), 0.0)
    alpha = jnp.exp(m - m_new)
    return m_new, alpha * l + jnp.sum(p), alpha * acc + weighted_values(p)

  def block(i, carry):
    t0 = i * bt
    k_codes = _codes(kc_ref[:, pl.ds(t0 // per_word, bt // per_word)], bits).astype(jnp.float32)  # (C, bt)
    k_scale = ks_ref[:, pl.ds(t0 // g, bt // g)].astype(jnp.float32)  # (C, bt/G)
    k_zero = kz_ref[:, pl.ds(t0 // g, bt // g)].astype(jnp.float32)
    scores = jnp.sum(k_codes.reshape(channels, bt // g, g) * (q[:, None] * k_scale)[:, :, None], axis=0)
    scores = (scores + jnp.sum(q[:, None] * k_zero, axis=0)[:, None]).reshape(bt) * inv_sqrt
    valid = t0 + jnp.arange(bt) < n_quantized

    def weighted_values(p):
      v_codes = _codes(vc_ref[pl.ds(t0, bt), :], bits).astype(jnp.float32)  # (bt, C)
      v_scale = vs_ref[pl.ds(t0, bt), :].astype(jnp.float32)  # (bt, C/G)
      v_zero = vz_ref[pl.ds(t0, bt), :].astype(jnp.float32)
      out = jnp.sum(v_codes.reshape(bt, channels // g, g) * (p[:, None] * v_scale)[:, :, None], axis=0)
      return (out + jnp.sum(p[:, None] * v_zero, axis=0)[:, None]).reshape(channels)

    return update(carry, scores, valid, weighted_values)

  init = (jnp.float32(_NEG), jnp.float32(0.0), jnp.zeros((channels,), jnp.float32))
  # Only the filled blocks are visited: the trip count is dynamic.
  carry = jax.lax.fori_loop(0, (n_quantized + bt - 1) // bt, block, init)
  k_res = kr_ref[...].astype(jnp.float32)
  v_res = vr_ref[...].astype(jnp.float32)
  scores = jnp.sum(k_res * q[None, :], axis=1) * inv_sqrt
  valid = jnp.arange(k_res.shape[0]) < n_residual
  _, l, acc = update(carry, scores, valid, lambda p: jnp.sum(p[:, None] * v_res, axis=0))
  o_ref[...] = (acc / l).astype(o_ref.dtype)


def _block_tokens(capacity: int, group_size: int, limit: int = 512) -> int:
  """The largest multiple of G that divides the capacity and is at most ``limit`` (G itself if none larger)."""
  groups = capacity // group_size
  best = 1
  for d in range(1, groups + 1):
    if groups % d == 0 and d * group_size <= limit:
      best = d
  return best * group_size


@functools.partial(jax.jit, static_argnames=("block_tokens", "interpret"))
def decode_attention_pallas(
  q: jax.Array, cache: KIVICache, *, block_tokens: int | None = None, interpret: bool | None = None
) -> jax.Array:
  """The Pallas kernel: one program per (batch, head) row, the quantized cache read in blocks of
  ``block_tokens`` tokens (static; a multiple of G dividing the capacity, ``None``: the largest such block of at
  most 512 tokens). ``interpret`` (static) defaults to True on CPU, where Pallas does not compile."""
  if cache.keys.axis != -2:
    raise ValueError("the Pallas kernel takes KIVI's per-channel keys; the per-token key ablation runs on 'xla'.")
  g = cache.group_size
  bt = _block_tokens(cache.capacity, g) if block_tokens is None else block_tokens
  if not isinstance(bt, int) or bt < 1 or bt % g or cache.capacity % bt:
    raise ValueError(
      f"`block_tokens` must be a multiple of group_size ({g}) dividing the capacity "
      f"({cache.capacity}), got {block_tokens!r}."
    )
  interpret = dispatch.default_interpret(interpret)
  batch, channels = q.shape[:-1], q.shape[-1]
  rows = math.prod(batch)
  flat = lambda a: a.reshape((rows,) + a.shape[len(batch) :])
  operands = [
    flat(q),
    *(
      flat(a)
      for a in (
        cache.keys.codes,
        cache.keys.scale,
        cache.keys.zero,
        cache.values.codes,
        cache.values.scale,
        cache.values.zero,
        cache.k_residual,
        cache.v_residual,
      )
    ),
  ]
  row_spec = lambda a: pl.BlockSpec((None,) + a.shape[1:], lambda i, n=a.ndim - 1: (i,) + (0,) * n)
  counts = jnp.stack([cache.n_quantized, cache.n_residual]).astype(jnp.int32)
  kernel = lambda *refs: _attention_kernel(*refs, bits=cache.bits, group_size=g, block_tokens=bt)
  out = pl.pallas_call(
    kernel,
    out_shape=jax.ShapeDtypeStruct((rows, channels), q.dtype),
    grid=(rows,),
    in_specs=[pl.BlockSpec((2,), lambda i: (0,))] + [row_spec(a) for a in operands],
    out_specs=pl.BlockSpec((None, channels), lambda i: (i, 0)),
    interpret=interpret,
    compiler_params=dispatch.compiler_params(interpret),
    name="kivi_decode_attention",
  )(counts, *operands)
  return out.reshape(q.shape)


@functools.partial(jax.jit, static_argnames=("impl", "block_tokens", "interpret"))
def decode_attention(
  q: jax.Array,
  cache: KIVICache,
  *,
  impl: str | None = None,
  block_tokens: int | None = None,
  interpret: bool | None = None,
) -> jax.Array:
  """softmax(q·K̂ᵀ/√C)·V̂ over the filled slots of the cache, for one decode step: q (..., C) -> (..., C).

  Args:
    q: queries with the cache's batch axes and channels.
    cache: a ``KIVICache``.
    impl: static, ``"pallas"``, ``"xla"`` or ``None`` (``toolkit.kernels.dispatch.default_impl()``: Pallas on
      GPU/TPU, XLA on CPU).
    block_tokens: static, the Pallas kernel's block of cached tokens (see ``decode_attention_pallas``); the XLA
      path ignores it.
    interpret: static, run the Pallas kernel in interpret mode (``None``: on CPU only); the XLA path ignores it.

  Returns:
    The attention output, the shape and dtype of ``q``.

  >>> cache = init_cache((2,), capacity=64, channels=32, bits=2, group_size=32, residual=32)
  >>> keys, values = jax.random.normal(jax.random.key(0), (2, 2, 40, 32))
  >>> cache = extend(cache, keys, values)
  >>> int(cache.n_quantized), int(cache.n_residual)
  (32, 8)
  >>> q = jnp.ones((2, 32))
  >>> xla = decode_attention(q, cache, impl="xla")
  >>> pallas = decode_attention(q, cache, impl="pallas", interpret=True)
  >>> xla.shape, bool(jnp.allclose(xla, pallas, atol=1e-5))
  ((2, 32), True)
  """
  expected = cache.k_residual.shape[:-2] + cache.k_residual.shape[-1:]
  if q.shape != expected:
    raise ValueError(f"`q` must have shape {expected} (the cache's batch axes, then channels), got {q.shape}.")
  if dispatch.check_impl(impl) == "pallas":
    out = decode_attention_pallas(q, cache, block_tokens=block_tokens, interpret=interpret)
  else:
    out = decode_attention_xla(q, cache)
  return jnp.where(overflowed(cache), jnp.nan, out).astype(out.dtype)


@dataclasses.dataclass(frozen=True)
class KIVI:
  """KIVI as a cache strategy of ``toolkit.models.transformer`` (its ``KVCache`` protocol), per layer.

  The prompt's attention is computed in full precision by the model and its keys and values stored through
  ``prefill``; each decode step appends the new token, then attends over the quantized groups and the residual.

  Attributes:
    bits: 2 (KIVI-2), 4 (KIVI-4), 8, or 16 (no quantization).
    group_size: G (paper default 32).
    residual: R, the full-precision window (paper default 128), a multiple of G.
    per_channel_keys: False gives the naive ablation that quantizes keys per token too.
    scale_dtype: storage dtype of scales and zero points (fp16, as in the paper).
    impl: decode attention implementation, see ``decode_attention``.

  >>> from toolkit.models import transformer
  >>> config = transformer.TransformerConfig(d_model=64, num_heads=2, num_layers=1, max_len=64)
  >>> params = transformer.init_params(jax.random.key(0), config)
  >>> tokens = jax.random.randint(jax.random.key(1), (2, 48), 0, 256)
  >>> exact = transformer.decode_log_probs(params, config, tokens, transformer.FullPrecisionCache(), 8)
  >>> kivi2 = transformer.decode_log_probs(params, config, tokens, KIVI(bits=2, residual=32), 8)
  >>> kivi2.log_probs.shape, bool(jnp.abs(kivi2.log_probs - exact.log_probs).max() < 0.1)
  ((2, 40), True)
  """

  bits: int = 2
  group_size: int = 32
  residual: int = 128
  per_channel_keys: bool = True
  scale_dtype: str = "float16"
  impl: str | None = None

  def __post_init__(self):
    _check_bits(self.bits, CACHE_BITS)
    _check_sizes(group_size=self.group_size, residual=self.residual)
    if self.impl is not None:
      dispatch.check_impl(self.impl)

  def init(self, batch_shape: tuple[int, ...], capacity: int, head_dim: int, dtype) -> KIVICache:
    capacity = -(-capacity // self.group_size) * self.group_size
    return init_cache(
      batch_shape,
      capacity,
      head_dim,
      bits=self.bits,
      group_size=self.group_size,
      residual=self.residual,
      dtype=dtype,
      scale_dtype=self.scale_dtype,
      per_channel_keys=self.per_channel_keys,
    )

  def prefill(self, state: KIVICache, k: jax.Array, v: jax.Array) -> KIVICache:
    return extend(state, k, v)

  def attend(self, state: KIVICache, q: jax.Array, k: jax.Array, v: jax.Array) -> tuple[jax.Array, KIVICache]:
    state = append(state, k, v)
    return decode_attention(q, state, impl=self.impl), state


__all__ = [
  "CACHE_BITS",
  "KIVI",
  "SUPPORTED_BITS",
  "KIVICache",
  "QuantizedTensor",
  "append",
  "decode_attention",
  "decode_attention_pallas",
  "decode_attention_reference",
  "decode_attention_xla",
  "dequantize",
  "dequantize_cache",
  "extend",
  "init_cache",
  "pack",
  "quantize_keys",
  "quantize_values",
  "unpack",
  "valid_tokens",
]
