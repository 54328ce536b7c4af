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
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import pathlib
import tempfile
import time
from typing import Any, NamedTuple, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import serialization
from flax import struct

from toolkit.data import text


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
      raise ValueError(f"head_dim = d_model / num_heads must be even for RoPE (it rotates channel pairs), got "
                       f"{self.head_dim}.")
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
  inv_freq = base ** (-jnp.arange(0, d // 2, dtype=jnp.float32) * 2.0 / d)
  angles = jnp.asarray(positions, jnp.float32)[..., None] * inv_freq
  cos, sin = jnp.cos(angles).astype(x.dtype), jnp.sin(angles).astype(x.dtype)
  x1, x2 = x[..., : d // 2], x[..., d // 2:]
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
  """softmax(q kᵀ / √D + causal mask) v for q, k, v (B, H, T, D); the softmax is taken in float32."""
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
      raise ValueError(f"`k` and `v` must both have shape (B, H, T, D={state.k.shape[-1]}), got {k.shape} and "
                       f"{v.shape}.")
    if k.shape[-2] > state.k.shape[-2]:
      raise ValueError(f"the prompt ({k.shape[-2]} tokens) does not fit the cache's capacity ({state.k.shape[-2]}).")
    return self._write(state, k, v)

  def attend(self, state: FullPrecisionState, q: jax.Array, k: jax.Array, v: jax.Array
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
    return FullPrecisionState(jax.lax.dynamic_update_slice(state.k, k.astype(state.k.dtype), index),
                              jax.lax.dynamic_update_slice(state.v, v.astype(state.v.dtype), index),
                              state.length + k.shape[-2])


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


class MLP(nn.Module):
  """``down_proj(GELU(up_proj(x)))`` with up (d_model, d_ff) and down (d_ff, d_model)."""

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
    self.mlp = MLP(self.config)

  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    a, k, v = self.attn(self.attn_norm(x))
    x = x + a
    return x + self.mlp(self.mlp_norm(x)), k, v

  def decode(self, x: jax.Array, position: jax.Array, cache: KVCache, state: Any) -> tuple[jax.Array, Any]:
    a, state = self.attn.decode(self.attn_norm(x), position, cache, state)
    x = x + a
    return x + self.mlp(self.mlp_norm(x)), state


def _check_tokens(tokens, ndim: int, what: str, max_len: int | None = None) -> jax.Array:
  shape, dtype = jnp.shape(tokens), jnp.result_type(tokens)
  if not jnp.issubdtype(dtype, jnp.integer):
    raise TypeError(f"`{what}` must be an integer array of token ids, got dtype {dtype}.")
  if len(shape) != ndim or 0 in shape:
    raise ValueError(f"`{what}` must have shape {'(B, T)' if ndim == 2 else '(B,)'} with non-zero sizes, got "
                     f"{shape}.")
  if max_len is not None and shape[1] > max_len:
    raise ValueError(f"`{what}` has {shape[1]} tokens, more than the config's max_len ({max_len}).")
  return jnp.asarray(tokens, jnp.int32)


class Transformer(nn.Module):
  """The decoder-only language model (see the module docstring).

  Entry points (call them through ``model.apply(params, ..., method=...)``):
    ``__call__(tokens)``: teacher-forced causal forward pass, tokens (B, T) int → logits (B, T, V) float32.
    ``prefill(tokens, cache, capacity)``: the same logits, plus a ``DecodeState`` whose per-layer caches hold the
      prompt's keys and values (capacity tokens each) and whose position is T.
    ``decode(token, state, cache)``: one step, token (B,) int at position ``state.position`` → logits (B, V) and
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
    tokens = _check_tokens(tokens, 2, "tokens", self.config.max_len)
    x = self.embed(tokens)
    for block in self.blocks:
      x, _, _ = block(x)
    return self._logits(x)

  def prefill(self, tokens: jax.Array, cache: KVCache, capacity: int) -> tuple[jax.Array, DecodeState]:
    tokens = _check_tokens(tokens, 2, "tokens", self.config.max_len)
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
    token = _check_tokens(token, 1, "token")
    if len(state.caches) != self.config.num_layers:
      raise ValueError(f"`state` holds {len(state.caches)} layer caches, the model has {self.config.num_layers}.")
    x = self.embed(token)
    states = []
    for block, layer_state in zip(self.blocks, state.caches):
      x, layer_state = block.decode(x, state.position, cache, layer_state)
      states.append(layer_state)
    return self._logits(x), DecodeState(tuple(states), state.position + 1)


def init_params(key: jax.Array, config: TransformerConfig) -> Any:
  """Freshly initialised parameters: N(0, 0.02²) weights (o_proj and down_proj 1/√(2L) smaller), unit norms."""
  return Transformer(config).init(key, jnp.zeros((1, 1), jnp.int32))


# ----------------------------------------------------------------------------------------------------------------
# Teacher-forced decoding through a cache


class DecodeOutput(NamedTuple):
  """``log_probs`` (B, T − P) float32: log p(tokens[:, t] | tokens[:, :t]) for t = P … T − 1;
  ``predictions`` (B, T − P) int32: the argmax of the same distributions."""

  log_probs: jax.Array
  predictions: jax.Array


@functools.partial(jax.jit, static_argnames=("config", "cache", "prompt_len", "capacity"))
def decode_log_probs(params: Any, config: TransformerConfig, tokens: jax.Array, cache: KVCache, prompt_len: int,
                     capacity: int | None = None) -> DecodeOutput:
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
  """
  tokens = _check_tokens(tokens, 2, "tokens", config.max_len)
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
    return (jnp.take_along_axis(log_probs, target[:, None], axis=-1)[:, 0],
            jnp.argmax(logits, axis=-1).astype(jnp.int32))

  def step(state, pair):
    token, target = pair
    logits, state = model.apply(params, token, state, cache, method=Transformer.decode)
    return state, score(logits, target)

  first = score(logits[:, -1], tokens[:, prompt_len])
  pairs = (tokens[:, prompt_len:-1].T, tokens[:, prompt_len + 1:].T)
  _, rest = jax.lax.scan(step, state, pairs)
  log_probs, predictions = (jnp.concatenate([f[:, None], r.T], axis=1) for f, r in zip(first, rest))
  return DecodeOutput(log_probs, predictions)


def sequence_log_probs(params: Any, config: TransformerConfig, tokens: jax.Array) -> jax.Array:
  """Teacher-forced log p(tokens[:, t] | tokens[:, :t]) for t = 1 … T − 1, (B, T − 1): the no-cache oracle."""
  logits = Transformer(config).apply(params, tokens[:, :-1])
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  return jnp.take_along_axis(log_probs, jnp.asarray(tokens[:, 1:], jnp.int32)[..., None], axis=-1)[..., 0]


# ----------------------------------------------------------------------------------------------------------------
# Training and the cached default model


def next_token_loss(params: Any, config: TransformerConfig, windows: jax.Array) -> jax.Array:
  """Mean next-token cross-entropy (nats per token) of windows (B, T + 1): inputs [:, :-1], targets [:, 1:]."""
  return -jnp.mean(sequence_log_probs(params, config, windows))


def train(config: TransformerConfig, tokens, *, steps: int, batch_size: int, seq_len: int, learning_rate: float,
          seed: int = 0, warmup_steps: int | None = None, weight_decay: float = 0.1, log_every: int = 50) -> Any:
  """Trains from scratch on random windows of ``tokens`` with AdamW (β₂ = 0.95, gradient norm clipped at 1) and a
  linear-warmup cosine schedule down to 10 % of ``learning_rate``; norm scales are not decayed.

  Args:
    config: the model.
    tokens: 1-D token ids (the training split).
    steps, batch_size, seq_len: the run; each step sees batch_size windows of seq_len + 1 tokens.
    learning_rate: the peak learning rate.
    seed: initialisation and batch order (same seed, same parameters).
    warmup_steps: ``None`` means 10 % of ``steps``.
    weight_decay: decoupled weight decay of the matrices.
    log_every: log the mean training loss every this many steps (absl logging, INFO).

  Returns:
    The trained variables ``{"params": ...}``.
  """
  if not isinstance(steps, int) or steps < 1:
    raise ValueError(f"`steps` must be a positive integer, got {steps!r}.")
  if seq_len > config.max_len:
    raise ValueError(f"`seq_len` ({seq_len}) must not exceed the config's max_len ({config.max_len}).")
  warmup_steps = max(1, steps // 10) if warmup_steps is None else warmup_steps
  schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup_steps, max(steps, warmup_steps + 1),
                                                end_value=0.1 * learning_rate)
  decay_mask = lambda p: jax.tree.map(lambda w: w.ndim > 1, p)
  optimizer = optax.chain(optax.clip_by_global_norm(1.0),
                          optax.adamw(schedule, b1=0.9, b2=0.95, weight_decay=weight_decay, mask=decay_mask))
  init_key, data_key = jax.random.split(jax.random.key(seed))
  params = init_params(init_key, config)
  opt_state = optimizer.init(params)
  tokens = jnp.asarray(tokens, jnp.int32)

  @jax.jit
  def update(params, opt_state, step, tokens):
    windows = text.batches(jax.random.fold_in(data_key, step), tokens, batch_size, seq_len)
    loss, grads = jax.value_and_grad(next_token_loss)(params, config, windows)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  start, total = time.perf_counter(), 0.0
  for step in range(steps):
    params, opt_state, loss = update(params, opt_state, step, tokens)
    total += float(loss)
    if (step + 1) % log_every == 0 or step + 1 == steps:
      count = (step % log_every) + 1
      logging.info("train step %d/%d: loss %.4f (%.1f s)", step + 1, steps, total / count,
                   time.perf_counter() - start)
      total = 0.0
  return params


@functools.partial(jax.jit, static_argnames="config")
def _weighted_nll(params: Any, config: TransformerConfig, windows: jax.Array, weights: jax.Array) -> jax.Array:
  return -jnp.sum(sequence_log_probs(params, config, windows).sum(-1) * weights)


def train_tiny(steps: int, *, max_len: int, seq_len: int = 64, seed: int = 0, log_every: int = 50
               ) -> tuple[TransformerConfig, Any]:
  """A one-layer, one-head model (d_model 64) trained for ``steps`` steps on the default corpus's training split:
  a stand-in for ``pretrained`` that takes seconds, for tests, smoke runs and notebooks. Returns (config, params)."""
  config = TransformerConfig(d_model=64, num_heads=1, num_layers=1, max_len=max_len)
  corpus = text.split(text.encode(text.load_corpus()))
  return config, train(config, corpus.train, steps=steps, batch_size=8, seq_len=seq_len, learning_rate=3e-3,
                       seed=seed, log_every=log_every)


def evaluate(params: Any, config: TransformerConfig, tokens, *, seq_len: int, batch_size: int | None = None) -> float:
  """Mean next-token cross-entropy (nats per token) over consecutive non-overlapping windows of ``tokens``.

  Window i holds tokens [i·seq_len, (i + 1)·seq_len] and scores its last seq_len tokens, so every token after the
  first is scored once, with a context that restarts at each window; a tail shorter than a window is dropped.
  ``batch_size`` windows are scored per call (``None``: about 8192 tokens' worth).
  """
  tokens = np.asarray(tokens, np.int32)
  windows = text.consecutive_windows(tokens, seq_len)
  n = windows.shape[0]
  if n < 1:
    raise ValueError(f"`tokens` ({tokens.size}) must hold at least seq_len + 1 = {seq_len + 1} tokens.")
  batch_size = max(1, 8192 // seq_len) if batch_size is None else batch_size
  padded = -(-n // batch_size) * batch_size
  # One compiled shape: pad with copies of window 0 and weigh them out.
  windows = np.concatenate([windows, np.repeat(windows[:1], padded - n, axis=0)])
  weights = (np.arange(padded) < n).astype(np.float32)
  total = sum(float(_weighted_nll(params, config, windows[i: i + batch_size], weights[i: i + batch_size]))
              for i in range(0, padded, batch_size))
  return total / (n * seq_len)


@dataclasses.dataclass(frozen=True)
class TrainRecipe:
  """How ``pretrained`` trains (part of the checkpoint's fingerprint): see ``train`` for the fields.

  The default, 400 steps of 4 windows of 512 bytes (0.8 M tokens, under one epoch), trains in about 3 minutes on
  2 CPU cores. It trains at the full ``max_len`` because RoPE models degrade past their trained length and KIVI is
  evaluated with contexts up to 512: measured on 40 k validation bytes, this recipe gives per-byte perplexity 6.77 in
  256-byte windows and 6.71 in 512-byte ones, where 8 windows of 256 (same tokens per step, ~15 % cheaper) give
  6.58 and 7.32.
  """

  corpus: str = "tiny_shakespeare"
  valid_fraction: float = 0.1
  steps: int = 400
  batch_size: int = 4
  seq_len: int = 512
  learning_rate: float = 2e-3
  warmup_steps: int = 40
  weight_decay: float = 0.1
  seed: int = 0


class TrainRecord(NamedTuple):
  """What ``pretrained`` measured when it trained (read back from disk when the checkpoint is reused)."""

  valid_loss: float  # nats per byte on the validation split, windows of recipe.seq_len
  valid_perplexity: float
  unigram_perplexity: float  # add-one smoothed unigram of the training split, on the validation split
  train_seconds: float
  fingerprint: str


class Pretrained(NamedTuple):
  params: Any
  record: TrainRecord
  config: TransformerConfig
  path: str  # the checkpoint (.msgpack; its record is the .json beside it)


# Bump when the architecture or the training code changes what a recipe produces: old checkpoints stop matching.
_CHECKPOINT_VERSION = 1


def fingerprint(config: TransformerConfig, recipe: TrainRecipe) -> str:
  """A 16-hex-digit hash of the config, the recipe and the checkpoint format version."""
  fields = dataclasses.asdict(config) | {"dtype": np.dtype(config.dtype).name}
  blob = json.dumps({"version": _CHECKPOINT_VERSION, "config": fields, "recipe": dataclasses.asdict(recipe)},
                    sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_cache_dir() -> pathlib.Path:
  """``$TOOLKIT_CACHE_DIR`` if set, else ``<repository root>/runs/cache``."""
  env = os.environ.get("TOOLKIT_CACHE_DIR")
  return pathlib.Path(env) if env else pathlib.Path(__file__).resolve().parents[2] / "runs" / "cache"


def _write_atomically(path: pathlib.Path, data: bytes) -> None:
  with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name + ".", suffix=".tmp", delete=False) as f:
    f.write(data)
  os.chmod(f.name, 0o644)  # NamedTemporaryFile creates 0600: make the checkpoint readable like any other file
  os.replace(f.name, path)


def pretrained(config: TransformerConfig | None = None, recipe: TrainRecipe | None = None, *,
               cache_dir: str | os.PathLike | None = None) -> Pretrained:
  """The quick-trained default language model, trained once per (config, recipe) and cached on disk.

  If ``<cache_dir>/transformer_<fingerprint>.msgpack`` exists it is loaded; otherwise the model is trained on the
  corpus's training split (``train``), evaluated on its validation split, and saved atomically (temporary file, then
  rename; the record first, the parameters last, so a present .msgpack means a complete checkpoint).

  Args:
    config: ``None`` means ``TransformerConfig()``.
    recipe: ``None`` means ``TrainRecipe()``.
    cache_dir: ``None`` means ``default_cache_dir()``.
  """
  config = TransformerConfig() if config is None else config
  recipe = TrainRecipe() if recipe is None else recipe
  directory = default_cache_dir() if cache_dir is None else pathlib.Path(cache_dir)
  key = fingerprint(config, recipe)
  params_path, record_path = directory / f"transformer_{key}.msgpack", directory / f"transformer_{key}.json"
  template = jax.eval_shape(functools.partial(init_params, config=config), jax.random.key(0))
  if params_path.exists() and record_path.exists():
    restored = serialization.msgpack_restore(params_path.read_bytes())
    if jax.tree.structure(restored) != jax.tree.structure(template) or any(
        a.shape != b.shape for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(template))):
      raise ValueError(f"checkpoint {params_path} does not match the parameters of {config}.")
    record = json.loads(record_path.read_text())["record"]
    logging.info("loaded the pretrained transformer %s", params_path)
    return Pretrained(jax.tree.map(jnp.asarray, restored), TrainRecord(**record), config, str(params_path))

  corpus = text.split(text.encode(text.load_corpus(recipe.corpus)), recipe.valid_fraction)
  logging.info("training the transformer %s on %s (%d train tokens) into %s", key, recipe.corpus,
               corpus.train.size, params_path)
  start = time.perf_counter()
  params = train(config, corpus.train, steps=recipe.steps, batch_size=recipe.batch_size, seq_len=recipe.seq_len,
                 learning_rate=recipe.learning_rate, seed=recipe.seed, warmup_steps=recipe.warmup_steps,
                 weight_decay=recipe.weight_decay)
  jax.block_until_ready(params)
  seconds = time.perf_counter() - start
  valid_loss = evaluate(params, config, corpus.valid, seq_len=recipe.seq_len)
  unigram = float(text.unigram_log_prob(corpus.train, corpus.valid, config.vocab_size))
  record = TrainRecord(valid_loss, math.exp(valid_loss), math.exp(-unigram), seconds, key)
  logging.info("validation perplexity %.3f per byte (unigram %.3f), trained in %.0f s", record.valid_perplexity,
               record.unigram_perplexity, seconds)
  directory.mkdir(parents=True, exist_ok=True)
  meta = {"record": record._asdict(), "config": dataclasses.asdict(config) | {"dtype": np.dtype(config.dtype).name},
          "recipe": dataclasses.asdict(recipe), "jax": jax.__version__}
  _write_atomically(record_path, json.dumps(meta, indent=2).encode())
  _write_atomically(params_path, serialization.msgpack_serialize(jax.tree.map(np.asarray, params)))
  return Pretrained(params, record, config, str(params_path))


__all__ = [
  "Attention", "Block", "DecodeOutput", "DecodeState", "FullPrecisionCache", "FullPrecisionState", "KVCache", "MLP",
  "Pretrained", "TrainRecipe", "TrainRecord", "Transformer", "TransformerConfig", "causal_attention",
  "decode_log_probs", "default_cache_dir", "evaluate", "fingerprint", "init_params", "next_token_loss",
  "pretrained", "rope", "sequence_log_probs", "train", "train_tiny",
]
