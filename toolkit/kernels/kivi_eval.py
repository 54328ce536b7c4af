"""Benchmark constructions and measurements for KIVI's KV-cache quantization (apart from the method itself).

* ``OffsetKeys``: a cache strategy that adds LLM-like outlier channels to the keys it stores, exactly harmless to a
  full-precision cache (KIVI, arXiv 2402.02750, Fig. 2: a few key channels of large, steady magnitude).
* ``cache_bytes``: the bytes of one layer's cache state, measured on its arrays.
* ``channel_magnitudes``: the mean |k| and |v| per channel of every layer of a transformer on a batch of text.
* ``paired_z_score``: a paired comparison of two caches on the same windows.
* ``decode_attention_times``: one decode step's attention over a long KIVI cache against float32 attention over
  the full-precision cache, timed side by side.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from toolkit import _checks
from toolkit.kernels import kivi
from toolkit.models import transformer

# Outlier key channels as LLMs have them (KIVI Fig. 2), for a head dimension of 64.
OUTLIER_CHANNELS = (5, 21, 38, 60)
OUTLIER_OFFSET = 12.0


@dataclasses.dataclass(frozen=True)
class OffsetKeys:
  """A cache strategy that stores ``k + offset`` on ``channels`` (all heads) in the wrapped strategy ``inner``.

  A constant vector added to every cached key shifts all of a query's scores by the same q·b, which the softmax
  ignores: the full-precision model is unchanged, and only a quantizer sees the outlier channels.

  >>> cache = OffsetKeys(transformer.FullPrecisionCache(), channels=(1,), offset=5.0)
  >>> state = cache.prefill(cache.init((1,), 4, 2, jnp.float32), jnp.zeros((1, 3, 2)), jnp.ones((1, 3, 2)))
  >>> state.k[0, :3].tolist()
  [[0.0, 5.0], [0.0, 5.0], [0.0, 5.0]]
  """

  inner: Any
  channels: tuple[int, ...] = OUTLIER_CHANNELS
  offset: float = OUTLIER_OFFSET

  def _shift(self, k):
    return k.at[..., jnp.asarray(self.channels)].add(self.offset)

  def init(self, batch_shape, capacity, head_dim, dtype):
    return self.inner.init(batch_shape, capacity, head_dim, dtype)

  def prefill(self, state, k, v):
    return self.inner.prefill(state, self._shift(k), v)

  def attend(self, state, q, k, v):
    return self.inner.attend(state, q, self._shift(k), v)


class CacheBytes(NamedTuple):
  """Bytes of one layer's cache state: the quantized part, the full-precision part (KIVI's residual, or the whole
  of an unquantized cache), and the tokens the quantized part holds (the context for an unquantized cache)."""

  quantized: float
  residual: float
  tokens: float


def _check_config(config: Any) -> None:
  if not isinstance(config, transformer.TransformerConfig):
    raise TypeError(f"`config` must be a transformer.TransformerConfig, got {type(config).__name__}.")


def cache_bytes(cache: Any, config: transformer.TransformerConfig, context: int) -> CacheBytes:
  """Bytes of one layer's cache state at ``context`` tokens (batch 1, all heads), measured on the arrays.

  >>> config = transformer.TransformerConfig()
  >>> b = cache_bytes(kivi.KIVI(bits=2, group_size=32, residual=128), config, 4096)
  >>> b.quantized / b.tokens / config.num_heads  # bytes per token and head: 256 at fp16
  48.0
  """
  if not callable(getattr(cache, "init", None)):
    raise TypeError(f"`cache` must be a KV-cache strategy (init, prefill, attend), got {type(cache).__name__}.")
  _check_config(config)
  context = _checks.check_int(context, "context")
  state = cache.init((1, config.num_heads), context, config.head_dim, jnp.float32)
  if isinstance(state, kivi.KIVICache):
    return CacheBytes(float(state.quantized_nbytes), float(state.residual_nbytes), float(state.capacity))
  total = float(sum(leaf.nbytes for leaf in jax.tree.leaves(state)))
  return CacheBytes(0.0, total, float(context))


class ChannelMagnitudes(NamedTuple):
  """Mean |k| (after RoPE) and |v| per channel, (layers, heads, head_dim) each, and for each the largest channel
  mean over the median channel, the worst layer and head."""

  keys: np.ndarray
  values: np.ndarray
  key_ratio: float
  value_ratio: float


def channel_magnitudes(params: Any, config: transformer.TransformerConfig, tokens) -> ChannelMagnitudes:
  """Per-channel key and value magnitudes of every layer on ``tokens`` (B, T), from a prefill through the exact
  cache: KIVI's evidence for per-channel key quantization (outlier channels in keys, none in values)."""
  _check_config(config)
  tokens = jnp.asarray(tokens)
  if tokens.ndim != 2:  # T is read below (the capacity) before the model checks the tokens
    raise ValueError(f"`tokens` must have shape (B, T), got {tokens.shape}.")
  model = transformer.Transformer(config)
  _, state = model.apply(
    params,
    tokens,
    transformer.FullPrecisionCache(),
    tokens.shape[1],
    method=transformer.Transformer.prefill,
  )
  keys = np.stack([np.abs(np.asarray(c.k)).mean(axis=(0, 2)) for c in state.caches])  # (L, H, D)
  values = np.stack([np.abs(np.asarray(c.v)).mean(axis=(0, 2)) for c in state.caches])
  ratio = lambda m: float((m.max(axis=-1) / np.median(m, axis=-1)).max())
  return ChannelMagnitudes(keys, values, ratio(keys), ratio(values))


def paired_z_score(worse, better) -> float:
  """Mean of ``worse − better`` over paired measurements (e.g. the NLL of two caches on the same windows), in
  standard errors of that mean.

  >>> round(paired_z_score([2.0, 3.0, 4.0], [1.0, 1.0, 1.0]), 4)  # mean 2, standard error 1/√3
  3.4641
  """
  shapes = np.shape(worse), np.shape(better)
  # Unequal lengths would broadcast (a scalar against every window) or fail deep in numpy.
  if len(shapes[0]) != 1 or shapes[0] != shapes[1] or shapes[0][0] < 2:
    raise ValueError(
      f"`worse` and `better` must be 1-D of one length >= 2 (paired measurements), got shapes {shapes[0]} and "
      f"{shapes[1]}."
    )
  diff = np.asarray(worse, np.float64) - np.asarray(better, np.float64)
  return float(diff.mean() / (diff.std(ddof=1) / np.sqrt(diff.size)))


class DecodeAttentionTimes(NamedTuple):
  """Median seconds of one decode step's attention (batch 1) over ``context`` cached tokens.

  Attributes:
    kivi: ``kivi.decode_attention`` over the packed cache (``impl``), dequantizing on the fly.
    fp32: softmax(q·Kᵀ/√C)·V over float32 keys and values (the full-precision cache).
    max_abs_diff: the largest |KIVI − fp32| entry of the outputs (quantization error, not a bug check).
    kivi_bytes, fp32_bytes: the bytes each reads (codes, scales and zero points, and the residual; K and V).
  """

  kivi: float
  fp32: float
  max_abs_diff: float
  kivi_bytes: int
  fp32_bytes: int


def decode_attention_times(
  key: jax.Array,
  *,
  context: int,
  heads: int,
  head_dim: int,
  bits: int = 2,
  group_size: int = 32,
  residual: int = 128,
  impl: str = "xla",
  repeats: int = 20,
) -> DecodeAttentionTimes:
  """Times one decode step's attention over a KIVI cache of ``context`` tokens and over the float32 cache of the
  same keys and values, interleaved in each repeat so that the machine's load hits both alike (a measured figure,
  never a timed assertion)."""
  if context < residual:
    raise ValueError(f"`context` ({context}) must be at least `residual` ({residual}).")
  if repeats < 1:
    raise ValueError(f"`repeats` must be >= 1, got {repeats}.")
  kq, kk, kv = jax.random.split(key, 3)
  q = jax.random.normal(kq, (heads, head_dim))
  keys = jax.random.normal(kk, (heads, context, head_dim))
  values = jax.random.normal(kv, (heads, context, head_dim))
  cache = kivi.init_cache((heads,), context, head_dim, bits=bits, group_size=group_size, residual=residual)
  cache = kivi.extend(cache, keys, values)
  quantized = jax.jit(lambda q, c: kivi.decode_attention(q, c, impl=impl))

  @jax.jit
  def full(q, k, v):
    scores = jnp.einsum("hc,htc->ht", q, k) / jnp.sqrt(jnp.float32(head_dim))
    return jnp.einsum("ht,htc->hc", jax.nn.softmax(scores, axis=-1), v)

  out_q = quantized(q, cache).block_until_ready()
  out_f = full(q, keys, values).block_until_ready()
  samples = {"kivi": [], "fp32": []}
  for _ in range(repeats):
    for name, run in (("kivi", lambda: quantized(q, cache)), ("fp32", lambda: full(q, keys, values))):
      start = time.perf_counter()
      run().block_until_ready()
      samples[name].append(time.perf_counter() - start)
  kivi_bytes = sum(int(x.nbytes) for x in jax.tree.leaves(cache))
  return DecodeAttentionTimes(
    float(np.median(samples["kivi"])),
    float(np.median(samples["fp32"])),
    float(jnp.max(jnp.abs(out_q - out_f))),
    kivi_bytes,
    int(keys.nbytes + values.nbytes),
  )


__all__ = [
  "OUTLIER_CHANNELS",
  "OUTLIER_OFFSET",
  "CacheBytes",
  "ChannelMagnitudes",
  "DecodeAttentionTimes",
  "OffsetKeys",
  "cache_bytes",
  "channel_magnitudes",
  "decode_attention_times",
  "paired_z_score",
]
