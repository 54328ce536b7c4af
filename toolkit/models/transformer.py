"""A small decoder-only transformer language model with a pluggable KV cache.

The language model shared by the low-bit papers: KIVI (arXiv 2402.02750) swaps its KV cache, ZeroQuant-V2
(arXiv 2303.08302) quantizes its linear layers. The architecture is the pre-norm GPT / LLaMA decoder:

  x₀ = E[tokens];  x ← x + o_proj(MHA(RMSNorm(x)));  x ← x + down_proj(GELU(up_proj(RMSNorm(x))));
  logits = lm_head(RMSNorm(x)),

with causal multi-head attention softmax(q kᵀ / √D) v and rotary position embeddings (RoPE) on q and k (Su et al.,
"RoFormer", arXiv 2104.09864, Eq. 34, in the rotate-half layout of GPT-NeoX and LLaMA). Every linear layer is an
``nn.Dense`` (kernel (in, out), no bias) named ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``, ``up_proj``,
``down_proj`` or ``lm_head``, so a post-training quantizer finds them by walking the params tree:
``params["blocks_<i>"]["attn"]["q_proj"]["kernel"]``, ``params["blocks_<i>"]["mlp"]["up_proj"]["kernel"]``,
``params["lm_head"]["kernel"]``; the embedding is ``params["embed"]["embedding"]``.

KV caches. A cache *strategy* is a hashable static object (a frozen dataclass, passed as a static argument to jit)
with three methods, called once per layer with ``batch_shape = (B, H)`` (the ``KVCache`` protocol below).
During prefill the model computes the prompt's causal attention itself in full precision (as KIVI does) and only
stores the prompt's keys (after RoPE) and values through ``cache.prefill``; each decode step hands the new token's
q, k, v to ``cache.attend``, which appends k, v and returns the attention over every cached token.
``FullPrecisionCache`` is the exact reference strategy.

Training, evaluation and the cached quick-trained model live in ``toolkit.models.lm_training``.

>>> config = TransformerConfig(d_model=32, num_heads=2, num_layers=1, max_len=16)
>>> params = init_params(jax.random.key(0), config)
>>> tokens = jnp.arange(24).reshape(2, 12)
>>> Transformer(config).apply(params, tokens).shape
(2, 12, 256)
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from toolkit import _checks


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Static hyper-parameters (hashable, so a config can be a static argument of jit).

  Attributes:
    vocab_size: V, 256 for the byte-level tokenizer of ``toolkit.data.text``.
    d_model: the residual width; head_dim = d_model / num_heads (64 by default: KIVI's per-channel key groups
      assume realistic head dimensions).
    num_heads: H.
    num_layers: the number of blocks.
    d_ff: the MLP's hidden width; ``None`` means 4 · d_model.
    max_len: the longest sequence the model accepts (RoPE has no position table: this is a guard only, since RoPE
      models degrade past their trained length).
    rope_base: θ of RoPE, the frequencies are θ^(−2i/D).
    dtype: the computation dtype (parameters are float32).
  """

  vocab_size: int = 256
  d_model: int = 256
  num_heads: int = 4
  num_layers: int = 4
  d_ff: int | None = None
  max_len: int = 512
  rope_base: float = 10000.0
  dtype: Any = jnp.float32

  def __post_init__(self):
    for name in ("vocab_size", "d_model", "num_heads", "num_layers", "max_len"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    if self.d_ff is None:
      object.__setattr__(self, "d_ff", 4 * self.d_model)
    elif not isinstance(self.d_ff, int) or self.d_ff < 1:
      raise ValueError(f"`d_ff` must be a positive integer or None, got {self.d_ff!r}.")
    if self.d_model % self.num_heads:
      raise ValueError(f"`d_model` ({self.d_model}) must be divisible by `num_heads` ({self.num_heads}).")
    if self.head_dim % 2:
      raise ValueError(
        f"head_dim = d_model / num_heads must be even for RoPE (it rotates channel pairs), got {self.head_dim}."
      )
    if not self.rope_base > 1.0:
      raise ValueError(f"`rope_base` must be > 1, got {self.rope_base!r}.")
    if not jnp.issubdtype(self.dtype, jnp.floating):
      raise ValueError(f"`dtype` must be a floating dtype, got {self.dtype!r}.")

  @property
  def head_dim(self) -> int:
    return self.d_model // self.num_heads


# ----------------------------------------------------------------------------------------------------------------
# RoPE and attention


def rope(x: jax.Array, positions: jax.Array, base: float = 10000.0) -> jax.Array:
  """Rotary position embedding (RoFormer Eq. 34), rotate-half layout: channel i is paired with i + D/2.

  The pair (x_i, x_{i+D/2}) at position m is rotated by the angle m θ^(−2i/D), so that
  ⟨rope(q, m), rope(k, n)⟩ depends on the positions only through m − n.

  Args:
    x: (..., D) with D even.
    positions: integer positions broadcastable against ``x.shape[:-1]`` (e.g. (T,) for x (B, H, T, D), a scalar for
      one decode step).
    base: θ.
  """
  d = x.shape[-1]
  if d % 2:
    raise ValueError(f"the last axis of `x` must be even for RoPE, got {d}.")
  try:
    jnp.broadcast_shapes(jnp.shape(positions), x.shape[:-1])
  except ValueError:
    raise ValueError(
      f"`positions` {jnp.shape(positions)} must broadcast against x.shape[:-1] = {x.shape[:-1]}."
    ) from None
  inv_freq = base ** (-jnp.arange(0, d // 2, dtype=jnp.float32) * 2.0 / d)
  angles = jnp.asarray(positions, jnp.float32)[..., None] * inv_freq
  cos, sin = jnp.cos(angles).astype(x.dtype), jnp.sin(angles).astype(x.dtype)
  x1, x2 = x[..., : d // 2], x[..., d // 2 :]
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
  """softmax(q kᵀ / √D + causal mask) v for q, k, v (B, H, T, D); the softmax is taken in float32."""
  if q.ndim != 4 or k.shape != q.shape or v.shape[:-1] != q.shape[:-1]:
    raise ValueError(
      f"`q` and `k` must be (B, H, T, D) of one shape and `v` (B, H, T, Dv), got {q.shape}, {k.shape} and {v.shape}."
    )
  t, d = q.shape[-2], q.shape[-1]
  scores = jnp.einsum("bhqd,bhkd->bhqk", q, k).astype(jnp.float32) / math.sqrt(d)
  mask = jnp.tril(jnp.ones((t, t), bool))
  weights = jax.nn.softmax(jnp.where(mask, scores, -jnp.inf), axis=-1)
  return jnp.einsum("bhqk,bhkd->bhqd", weights.astype(v.dtype), v)


# ----------------------------------------------------------------------------------------------------------------
# KV caches


class KVCache(Protocol):
  """A KV-cache strategy: a hashable static object; its state is a pytree, one per layer.

  ``batch_shape`` is (B, H). Keys are stored after RoPE. ``capacity`` is the number of tokens the state must hold.
  """

  def init(self, batch_shape: tuple[int, ...], capacity: int, head_dim: int, dtype) -> Any:
    """An empty state."""

  def prefill(self, state: Any, k: jax.Array, v: jax.Array) -> Any:
    """Appends the prompt's keys and values k, v (B, H, T, D); returns the new state."""

  def attend(self, state: Any, q: jax.Array, k: jax.Array, v: jax.Array) -> tuple[jax.Array, Any]:
    """One decode step: appends k, v (B, H, D), then returns softmax(q·K/√D)·V (B, H, D) over all cached tokens
    (the new one included) and the new state."""


@struct.dataclass
class FullPrecisionState:
  """Buffers k, v (B, H, capacity, D) and the int32 number of filled slots ``length``."""

  k: jax.Array
  v: jax.Array
  length: jax.Array


@dataclasses.dataclass(frozen=True)
class FullPrecisionCache:
  """The exact KV cache: fixed-capacity float buffers, written with ``dynamic_update_slice``.

  Slots at or past ``length`` are masked with −∞ before the softmax. A decode step into a full cache cannot be
  detected at trace time; ``dynamic_update_slice`` would then clamp and overwrite the last slot: size ``capacity``
  for the whole sequence.
  """

  def init(self, batch_shape: tuple[int, ...], capacity: int, head_dim: int, dtype=jnp.float32) -> FullPrecisionState:
    if not isinstance(capacity, int) or capacity < 1:
      raise ValueError(f"`capacity` must be a positive integer, got {capacity!r}.")
    shape = tuple(batch_shape) + (capacity, head_dim)
    return FullPrecisionState(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype), jnp.zeros((), jnp.int32))

  def prefill(self, state: FullPrecisionState, k: jax.Array, v: jax.Array) -> FullPrecisionState:
    if k.shape != v.shape or k.ndim != state.k.ndim or k.shape[-1] != state.k.shape[-1]:
      raise ValueError(
        f"`k` and `v` must both have shape (B, H, T, D={state.k.shape[-1]}), got {k.shape} and {v.shape}."
      )
    if k.shape[-2] > state.k.shape[-2]:
      raise ValueError(f"the prompt ({k.shape[-2]} tokens) does not fit the cache's capacity ({state.k.shape[-2]}).")
    return self._write(state, k, v)

  def attend(
    self, state: FullPrecisionState, q: jax.Array, k: jax.Array, v: jax.Array
  ) -> tuple[jax.Array, FullPrecisionState]:
    state = self._write(state, k[..., None, :], v[..., None, :])
    capacity, d = state.k.shape[-2], state.k.shape[-1]
    scores = jnp.einsum("...d,...td->...t", q, state.k).astype(jnp.float32) / math.sqrt(d)
    weights = jax.nn.softmax(jnp.where(jnp.arange(capacity) < state.length, scores, -jnp.inf), axis=-1)
    return jnp.einsum("...t,...td->...d", weights.astype(state.v.dtype), state.v), state

  @staticmethod
  def _write(state: FullPrecisionState, k: jax.Array, v: jax.Array) -> FullPrecisionState:
    zero = jnp.zeros((), jnp.int32)
    index = (zero,) * (state.k.ndim - 2) + (state.length, zero)
    return FullPrecisionState(
      jax.lax.dynamic_update_slice(state.k, k.astype(state.k.dtype), index),
      jax.lax.dynamic_update_slice(state.v, v.astype(state.v.dtype), index),
      state.length + k.shape[-2],
    )


class DecodeState(NamedTuple):
  """The per-layer cache states (a tuple, one per block) and the int32 position of the next token."""

  caches: tuple[Any, ...]
  position: jax.Array


# ----------------------------------------------------------------------------------------------------------------
# The model


def _dense(features: int, name: str, dtype, std: float = 0.02) -> nn.Dense:
  return nn.Dense(features, use_bias=False, dtype=dtype, kernel_init=nn.initializers.normal(std), name=name)


class Attention(nn.Module):
  """Multi-head attention with RoPE; ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj`` are (d_model, d_model)."""

  config: TransformerConfig

  def setup(self):
    c = self.config
    # GPT-2's residual scaling: each residual branch's output layer is initialised 1/√(2L) smaller.
    out_std = 0.02 / math.sqrt(2 * c.num_layers)
    self.q_proj, self.k_proj, self.v_proj = (_dense(c.d_model, n, c.dtype) for n in ("q_proj", "k_proj", "v_proj"))
    self.o_proj = _dense(c.d_model, "o_proj", c.dtype, out_std)

  def _heads(self, h: jax.Array, positions: jax.Array):
    """(..., d_model) → q, k, v (..., H, D), q and k rotated; the caller moves the head axis."""
    c = self.config
    split = lambda x: x.reshape(*x.shape[:-1], c.num_heads, c.head_dim)
    q, k, v = split(self.q_proj(h)), split(self.k_proj(h)), split(self.v_proj(h))
    return rope(q, positions, c.rope_base), rope(k, positions, c.rope_base), v

  def __call__(self, h: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Causal self-attention over h (B, T, d_model); returns the output and the keys (after RoPE) and values
    (B, H, T, D) for a cache."""
    b, t, _ = h.shape
    positions = jnp.arange(t)[:, None]  # broadcasts against the (T, H) axes of q, k
    q, k, v = (jnp.swapaxes(x, 1, 2) for x in self._heads(h, positions))
    out = causal_attention(q, k, v)
    return self.o_proj(jnp.swapaxes(out, 1, 2).reshape(b, t, -1)), k, v

  def decode(self, h: jax.Array, position: jax.Array, cache: KVCache, state: Any) -> tuple[jax.Array, Any]:
    """One token h (B, d_model) at ``position``: attention through the cache."""
    q, k, v = self._heads(h, position)
    out, state = cache.attend(state, q, k, v)
    return self.o_proj(out.reshape(h.shape[0], -1)), state


class FeedForward(nn.Module):
  """``down_proj(GELU(up_proj(x)))`` with up (d_model, d_ff) and down (d_ff, d_model); a block holds it as ``mlp``
  (its parameters are ``params["blocks_<i>"]["mlp"]``)."""

  config: TransformerConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = self.config
    h = nn.gelu(_dense(c.d_ff, "up_proj", c.dtype)(x))
    return _dense(c.d_model, "down_proj", c.dtype, 0.02 / math.sqrt(2 * c.num_layers))(h)


class Block(nn.Module):
  """A pre-norm block: x + attn(norm(x)), then x + mlp(norm(x))."""

  config: TransformerConfig

  def setup(self):
    self.attn_norm = nn.RMSNorm(epsilon=1e-6, dtype=self.config.dtype)
    self.attn = Attention(self.config)
    self.mlp_norm = nn.RMSNorm(epsilon=1e-6, dtype=self.config.dtype)
    self.mlp = FeedForward(self.config)  # the attribute name, "mlp", names the parameters

  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    a, k, v = self.attn(self.attn_norm(x))
    x = x + a
    return x + self.mlp(self.mlp_norm(x)), k, v

  def decode(self, x: jax.Array, position: jax.Array, cache: KVCache, state: Any) -> tuple[jax.Array, Any]:
    a, state = self.attn.decode(self.attn_norm(x), position, cache, state)
    x = x + a
    return x + self.mlp(self.mlp_norm(x)), state


def _check_tokens(tokens, ndim: int, what: str, vocab_size: int, max_len: int | None = None) -> jax.Array:
  """Shape, dtype and range checks; a traced id outside [0, V) is sent to V, which ``nn.Embed`` fills with NaN.

  Without that, a negative traced id would wrap around to a real row and give finite logits.
  """
  shape, dtype = jnp.shape(tokens), jnp.result_type(tokens)
  if not jnp.issubdtype(dtype, jnp.integer):
    raise TypeError(f"`{what}` must be an integer array of token ids, got dtype {dtype}.")
  if len(shape) != ndim or 0 in shape:
    raise ValueError(f"`{what}` must have shape {'(B, T)' if ndim == 2 else '(B,)'} with non-zero sizes, got {shape}.")
  if max_len is not None and shape[1] > max_len:
    raise ValueError(f"`{what}` has {shape[1]} tokens, more than the config's max_len ({max_len}).")
  _checks.check_ids(tokens, vocab_size, what, "the vocabulary")
  tokens = jnp.asarray(tokens, jnp.int32)
  return jnp.where((tokens < 0) | (tokens >= vocab_size), vocab_size, tokens)


class Transformer(nn.Module):
  """The decoder-only language model (see the module docstring).

  Entry points (call them through ``model.apply(params, ..., method=...)``):

  - ``__call__(tokens)``: teacher-forced causal forward pass, tokens (B, T) int → logits (B, T, V) float32.
  - ``prefill(tokens, cache, capacity)``: the same logits, plus a ``DecodeState`` whose per-layer caches hold the
    prompt's keys and values (capacity tokens each) and whose position is T.
  - ``decode(token, state, cache)``: one step, token (B,) int at position ``state.position`` → logits (B, V) and
    the advanced state.
  """

  config: TransformerConfig

  def setup(self):
    c = self.config
    self.embed = nn.Embed(c.vocab_size, c.d_model, embedding_init=nn.initializers.normal(0.02), dtype=c.dtype)
    self.blocks = [Block(c) for _ in range(c.num_layers)]
    self.final_norm = nn.RMSNorm(epsilon=1e-6, dtype=c.dtype)
    self.lm_head = _dense(c.vocab_size, "lm_head", c.dtype)

  def _logits(self, x: jax.Array) -> jax.Array:
    return self.lm_head(self.final_norm(x)).astype(jnp.float32)

  def __call__(self, tokens: jax.Array) -> jax.Array:
    tokens = _check_tokens(tokens, 2, "tokens", self.config.vocab_size, self.config.max_len)
    x = self.embed(tokens)
    for block in self.blocks:
      x, _, _ = block(x)
    return self._logits(x)

  def prefill(self, tokens: jax.Array, cache: KVCache, capacity: int) -> tuple[jax.Array, DecodeState]:
    tokens = _check_tokens(tokens, 2, "tokens", self.config.vocab_size, self.config.max_len)
    c = self.config
    if not isinstance(capacity, int) or capacity < tokens.shape[1]:
      raise ValueError(f"`capacity` must be an integer >= the prompt length {tokens.shape[1]}, got {capacity!r}.")
    x = self.embed(tokens)
    states = []
    for block in self.blocks:
      x, k, v = block(x)
      state = cache.init((tokens.shape[0], c.num_heads), capacity, c.head_dim, c.dtype)
      states.append(cache.prefill(state, k, v))
    return self._logits(x), DecodeState(tuple(states), jnp.asarray(tokens.shape[1], jnp.int32))

  def decode(self, token: jax.Array, state: DecodeState, cache: KVCache) -> tuple[jax.Array, DecodeState]:
    token = _check_tokens(token, 1, "token", self.config.vocab_size)
    if len(state.caches) != self.config.num_layers:
      raise ValueError(f"`state` holds {len(state.caches)} layer caches, the model has {self.config.num_layers}.")
    x = self.embed(token)
    states = []
    for block, layer_state in zip(self.blocks, state.caches):
      x, layer_state = block.decode(x, state.position, cache, layer_state)
      states.append(layer_state)
    return self._logits(x), DecodeState(tuple(states), state.position + 1)


def _check_config(config: Any) -> None:
  if not isinstance(config, TransformerConfig):
    raise TypeError(f"`config` must be a TransformerConfig, got {type(config).__name__}.")


def init_params(key: jax.Array, config: TransformerConfig) -> Any:
  """Freshly initialised parameters: N(0, 0.02²) weights (o_proj and down_proj 1/√(2L) smaller), unit norms."""
  _check_config(config)
  return Transformer(config).init(key, jnp.zeros((1, 1), jnp.int32))


# ----------------------------------------------------------------------------------------------------------------
# Teacher-forced decoding through a cache


class DecodeOutput(NamedTuple):
  """``log_probs`` (B, T − P) float32: log p(tokens[:, t] | tokens[:, :t]) for t = P … T − 1;
  ``predictions`` (B, T − P) int32: the argmax of the same distributions."""

  log_probs: jax.Array
  predictions: jax.Array


@functools.partial(jax.jit, static_argnames=("config", "cache", "prompt_len", "capacity"))
def decode_log_probs(
  params: Any,
  config: TransformerConfig,
  tokens: jax.Array,
  cache: KVCache,
  prompt_len: int,
  capacity: int | None = None,
) -> DecodeOutput:
  """Prefills ``tokens[:, :prompt_len]``, then teacher-forces the rest one decode step at a time (``lax.scan``).

  The first target ``tokens[:, P]`` is scored by the prefill's last logits; each later target ``tokens[:, t]`` by
  the decode step fed ``tokens[:, t − 1]``. So two cache strategies can be compared by perplexity
  (exp of −mean log_probs) and next-token agreement (equal predictions) on the same text.

  Args:
    params: the model's variables.
    config: static.
    tokens: (B, T) integer.
    cache: the static cache strategy.
    prompt_len: static P, 1 ≤ P < T.
    capacity: static, the tokens each layer cache must hold (≥ T − 1); ``None`` means T.

  Returns:
    A ``DecodeOutput`` of (B, T − P) log-probabilities and argmax predictions.

  >>> config = TransformerConfig(d_model=32, num_heads=2, num_layers=1, max_len=16)
  >>> params = init_params(jax.random.key(0), config)
  >>> tokens = jnp.arange(24).reshape(2, 12)
  >>> out = decode_log_probs(params, config, tokens, FullPrecisionCache(), 4)
  >>> out.log_probs.shape
  (2, 8)
  >>> bool(jnp.allclose(out.log_probs, sequence_log_probs(params, config, tokens)[:, 3:], atol=1e-5))
  True
  """
  tokens = _check_tokens(tokens, 2, "tokens", config.vocab_size, config.max_len)
  t = tokens.shape[1]
  if not isinstance(prompt_len, int) or not 1 <= prompt_len < t:
    raise ValueError(f"`prompt_len` must be an integer in [1, T) with T = {t}, got {prompt_len!r}.")
  capacity = t if capacity is None else capacity
  if not isinstance(capacity, int) or capacity < t - 1:
    raise ValueError(f"`capacity` must be an integer >= T - 1 = {t - 1}, got {capacity!r}.")
  model = Transformer(config)
  logits, state = model.apply(params, tokens[:, :prompt_len], cache, capacity, method=Transformer.prefill)

  def score(logits, target):
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    return (
      jnp.take_along_axis(log_probs, target[:, None], axis=-1)[:, 0],
      jnp.argmax(logits, axis=-1).astype(jnp.int32),
    )

  def step(state, pair):
    token, target = pair
    logits, state = model.apply(params, token, state, cache, method=Transformer.decode)
    return state, score(logits, target)

  first = score(logits[:, -1], tokens[:, prompt_len])
  pairs = (tokens[:, prompt_len:-1].T, tokens[:, prompt_len + 1 :].T)
  _, rest = jax.lax.scan(step, state, pairs)
  log_probs, predictions = (jnp.concatenate([f[:, None], r.T], axis=1) for f, r in zip(first, rest))
  return DecodeOutput(log_probs, predictions)


def sequence_log_probs(params: Any, config: TransformerConfig, tokens: jax.Array) -> jax.Array:
  """Teacher-forced log p(tokens[:, t] | tokens[:, :t]) for t = 1 … T − 1, (B, T − 1): the no-cache oracle.

  The model reads ``tokens[:, :-1]``, so T may be ``config.max_len + 1``. A traced id outside the vocabulary gives
  NaN: as input (see ``Transformer``) and as target, where ``take_along_axis`` would otherwise wrap a negative id
  around to a real entry.
  """
  _check_config(config)
  # The last column is only a target, which the model never sees: checked here.
  tokens = _check_tokens(tokens, 2, "tokens", config.vocab_size, config.max_len + 1)
  if tokens.shape[1] < 2:
    raise ValueError(f"`tokens` must have T >= 2 (a context and a target), got shape {tokens.shape}.")
  logits = Transformer(config).apply(params, tokens[:, :-1])
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  return jnp.take_along_axis(log_probs, tokens[:, 1:, None], axis=-1)[..., 0]


__all__ = [
  "Attention",
  "Block",
  "DecodeOutput",
  "DecodeState",
  "FeedForward",
  "FullPrecisionCache",
  "FullPrecisionState",
  "KVCache",
  "Transformer",
  "TransformerConfig",
  "causal_attention",
  "decode_log_probs",
  "init_params",
  "rope",
  "sequence_log_probs",
]
