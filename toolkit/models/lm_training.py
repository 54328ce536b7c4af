"""Training, evaluation and the cached quick-trained checkpoint of the byte-level transformer LM.

The model itself is ``toolkit.models.transformer``. Here: ``train`` (AdamW on random windows of a token stream),
``train_tiny`` (a seconds-long stand-in for tests and smoke runs), ``make_evaluator`` / ``evaluate`` (perplexity
over consecutive windows, and optionally the KL divergence to a reference model's predictions), and ``pretrained``,
the quick-trained default model, trained once per (config, recipe) and kept in the user's cache directory
(``toolkit.cache.cache_dir("models")``; ``$TOOLKIT_CACHE_DIR`` overrides it). ``load_model`` gives either.

>>> from toolkit.data import text
>>> config, params = train_tiny(2, max_len=32, seq_len=16)
>>> valid = text.split(text.encode(text.load_corpus())).valid
>>> loss = evaluate(params, config, valid[:1025], seq_len=32)
>>> 4.0 < loss < 6.0  # nats per byte: barely trained, below log(256) = 5.55
True
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import pathlib
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import serialization

from toolkit import _checks, cache
from toolkit.data import text
from toolkit.models.transformer import (
  Transformer,
  TransformerConfig,
  init_params,
  sequence_log_probs,
)

# ----------------------------------------------------------------------------------------------------------------
# Checks


def _check_config(config: Any) -> None:
  if not isinstance(config, TransformerConfig):
    raise TypeError(f"`config` must be a TransformerConfig, got {type(config).__name__}.")


def _dtype(x: Any) -> np.dtype:
  """The dtype of an array, a tracer or a (nested) list, without copying an array."""
  return x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype


def _check_windows(windows: Any, config: TransformerConfig) -> None:
  """Token windows (B, T + 1): integer, T in [1, max_len], ids in the vocabulary when concrete."""
  shape, dtype = np.shape(windows), _dtype(windows)
  if not np.issubdtype(dtype, np.integer):
    raise TypeError(f"`windows` must be an integer array of token ids, got dtype {dtype}.")
  if len(shape) != 2 or shape[0] < 1 or not 2 <= shape[1] <= config.max_len + 1:
    raise ValueError(
      f"`windows` must have shape (n, T + 1) with n >= 1 and 1 <= T <= max_len = {config.max_len}, got {shape}."
    )
  _checks.check_ids(windows, config.vocab_size, "windows", "the vocabulary")


def _check_tokens(tokens: Any, seq_len: int, vocab_size: int) -> None:
  """A 1-D integer token stream of more than ``seq_len`` tokens, ids in the vocabulary."""
  shape, dtype = np.shape(tokens), _dtype(tokens)
  if not np.issubdtype(dtype, np.integer):
    raise TypeError(f"`tokens` must be a 1-D integer array of token ids, got dtype {dtype}.")
  if len(shape) != 1 or shape[0] <= seq_len:
    raise ValueError(f"`tokens` must be 1-D with more than seq_len = {seq_len} tokens, got shape {shape}.")
  _checks.check_ids(tokens, vocab_size, "tokens", "the vocabulary")


# ----------------------------------------------------------------------------------------------------------------
# Training


def next_token_loss(params: Any, config: TransformerConfig, windows: jax.Array) -> jax.Array:
  """Mean next-token cross-entropy (nats per token) of windows (B, T + 1): inputs [:, :-1], targets [:, 1:]."""
  _check_config(config)
  _check_windows(windows, config)
  return -jnp.mean(sequence_log_probs(params, config, windows))


def train(
  config: TransformerConfig,
  tokens,
  *,
  num_steps: int,
  batch_size: int,
  seq_len: int,
  learning_rate: float,
  seed: int = 0,
  num_warmup_steps: int | None = None,
  weight_decay: float = 0.1,
  log_every: int = 50,
) -> Any:
  """Trains from scratch on random windows of ``tokens`` with AdamW (β₂ = 0.95, gradient norm clipped at 1) and a
  linear-warmup cosine schedule down to 10 % of ``learning_rate``; norm scales are not decayed.

  Args:
    config: the model.
    tokens: 1-D token ids (the training split).
    num_steps, batch_size, seq_len: the run; each step sees batch_size windows of seq_len + 1 tokens.
    learning_rate: the peak learning rate.
    seed: initialisation and batch order (same seed, same parameters).
    num_warmup_steps: ``None`` means 10 % of ``num_steps``.
    weight_decay: decoupled weight decay of the matrices.
    log_every: log the mean training loss every this many steps (absl logging, INFO).

  Returns:
    The trained variables ``{"params": ...}``.
  """
  _check_config(config)
  num_steps = _checks.check_int(num_steps, "num_steps", 1)
  batch_size = _checks.check_int(batch_size, "batch_size", 1)
  seq_len = _checks.check_int(seq_len, "seq_len", 1)
  if seq_len > config.max_len:
    raise ValueError(f"`seq_len` ({seq_len}) must not exceed the config's max_len ({config.max_len}).")
  _check_tokens(tokens, seq_len, config.vocab_size)
  _checks.check_positive(learning_rate, "learning_rate")
  log_every = _checks.check_int(log_every, "log_every", 1)
  if num_warmup_steps is not None:
    num_warmup_steps = _checks.check_int(num_warmup_steps, "num_warmup_steps", 0)
  num_warmup_steps = max(1, num_steps // 10) if num_warmup_steps is None else num_warmup_steps
  schedule = optax.warmup_cosine_decay_schedule(
    0.0,
    learning_rate,
    num_warmup_steps,
    max(num_steps, num_warmup_steps + 1),
    end_value=0.1 * learning_rate,
  )
  decay_mask = lambda p: jax.tree.map(lambda w: w.ndim > 1, p)
  optimizer = optax.chain(
    optax.clip_by_global_norm(1.0),
    optax.adamw(schedule, b1=0.9, b2=0.95, weight_decay=weight_decay, mask=decay_mask),
  )
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
  for step in range(num_steps):
    params, opt_state, loss = update(params, opt_state, step, tokens)
    total += float(loss)
    if (step + 1) % log_every == 0 or step + 1 == num_steps:
      count = (step % log_every) + 1
      logging.info(
        "train step %d/%d: loss %.4f (%.1f s)",
        step + 1,
        num_steps,
        total / count,
        time.perf_counter() - start,
      )
      total = 0.0
  return params


def train_tiny(
  num_steps: int, *, max_len: int, seq_len: int = 64, seed: int = 0, log_every: int = 50
) -> tuple[TransformerConfig, Any]:
  """A one-layer, one-head model (d_model 64) trained for ``num_steps`` steps on the default corpus's training
  split: a stand-in for ``pretrained`` that takes seconds, for tests, smoke runs and notebooks. Returns
  (config, params)."""
  config = TransformerConfig(d_model=64, num_heads=1, num_layers=1, max_len=max_len)
  # Refused before the corpus is read (``train`` checks the rest).
  _checks.check_int(num_steps, "num_steps", 1)
  if _checks.check_int(seq_len, "seq_len", 1) > max_len:
    raise ValueError(f"`seq_len` ({seq_len}) must not exceed `max_len` ({max_len}).")
  corpus = text.split(text.encode(text.load_corpus()))
  return config, train(
    config,
    corpus.train,
    num_steps=num_steps,
    batch_size=8,
    seq_len=seq_len,
    learning_rate=3e-3,
    seed=seed,
    log_every=log_every,
  )


# ----------------------------------------------------------------------------------------------------------------
# Evaluation


class Evaluation(NamedTuple):
  """What ``make_evaluator``'s function measures over its windows (every scored token counted once).

  Attributes:
    loss: mean next-token cross-entropy, nats per token.
    perplexity: exp(loss).
    kl: mean over scored tokens of KL(p_ref ‖ p) between the reference model's next-token distributions and the
      evaluated model's; NaN without a reference.
  """

  loss: float
  perplexity: float
  kl: float


def _intercepted(intercept: Callable | None, fn: Callable, *args):
  """``fn(*args)`` with a flax method interceptor active (``None``: plain), e.g. ``zeroquant.DenseInputQuantizer``."""
  if intercept is None:
    return fn(*args)
  import flax.linen as nn

  with nn.intercept_methods(intercept):
    return fn(*args)


# The interceptor acts at trace time, so it is a static argument: a cached trace never serves another interceptor.
@functools.partial(jax.jit, static_argnames=("config", "intercept"))
def _log_probs(
  params: Any, config: TransformerConfig, windows: jax.Array, intercept: Callable | None = None
) -> jax.Array:
  """(B, T, V) next-token log-probabilities of windows (B, T + 1)."""
  logits = _intercepted(intercept, Transformer(config).apply, params, windows[:, :-1])
  return jax.nn.log_softmax(logits, axis=-1)


@functools.partial(jax.jit, static_argnames=("config", "intercept"))
def _weighted_nll(
  params: Any, config: TransformerConfig, windows: jax.Array, weights: jax.Array, intercept: Callable | None = None
) -> jax.Array:
  log_probs = _intercepted(intercept, sequence_log_probs, params, config, windows)
  return -jnp.sum(log_probs.sum(-1) * weights)


@functools.partial(jax.jit, static_argnames=("config", "intercept"))
def _weighted_nll_and_kl(
  params: Any,
  config: TransformerConfig,
  windows: jax.Array,
  weights: jax.Array,
  reference_log_probs: jax.Array,
  intercept: Callable | None = None,
) -> tuple[jax.Array, jax.Array]:
  # The KL needs the whole next-token distribution, so the NLL is read from it too (the same value as
  # ``_weighted_nll``'s, up to float rounding).
  log_probs = _log_probs(params, config, windows, intercept)
  nll = -jnp.take_along_axis(log_probs, windows[:, 1:, None], axis=-1)[..., 0]
  kl = jnp.sum(jnp.exp(reference_log_probs) * (reference_log_probs - log_probs), axis=-1)
  return jnp.sum(nll.sum(-1) * weights), jnp.sum(kl.sum(-1) * weights)


def make_evaluator(
  config: TransformerConfig, windows, *, batch_size: int, reference_params: Any = None
) -> Callable[..., Evaluation]:
  """``(params, intercept=None) -> Evaluation`` over ``windows`` (n, T + 1), scored ``batch_size`` at a time and
  compiled once per interceptor.

  The windows are padded to a multiple of ``batch_size`` with copies of window 0 weighted out, so every batch has
  one compiled shape; ``params`` are an argument of the compiled functions, not constants, so one evaluator
  serves any number of parameter sets (the quantized variants of one model, say). With ``reference_params`` the
  reference model's log-probabilities are computed once, here, and each call also measures the KL divergence of
  the evaluated model's predictions from them (a finer measure of damage than the perplexity, which averages
  gains and losses on individual tokens). ``intercept``, a hashable flax method interceptor, runs the evaluated
  model under ``nn.intercept_methods`` (``zeroquant.DenseInputQuantizer(8)``: 8-bit activations); the reference is
  always the plain model.

  Args:
    config: the model (static).
    windows: (n, T + 1) integer token windows, n ≥ 1 (e.g. ``text.consecutive_windows``).
    batch_size: windows per compiled call.
    reference_params: the model to measure the KL divergence from, or ``None``.
  """
  _check_config(config)
  windows = np.asarray(windows)
  _check_windows(windows, config)
  batch_size = _checks.check_int(batch_size, "batch_size", 1)
  n, seq_len = windows.shape[0], windows.shape[1] - 1
  padded = -(-n // batch_size) * batch_size
  # One compiled shape: pad with copies of window 0 and weigh them out.
  windows = np.concatenate([windows, np.repeat(windows[:1], padded - n, axis=0)])
  weights = (np.arange(padded) < n).astype(np.float32)
  chunks = [(windows[i : i + batch_size], weights[i : i + batch_size]) for i in range(0, padded, batch_size)]
  references = None
  if reference_params is not None:
    references = [np.asarray(_log_probs(reference_params, config, w)) for w, _ in chunks]

  def evaluator(params: Any, intercept: Callable | None = None) -> Evaluation:
    if intercept is not None and not callable(intercept):
      raise TypeError(f"`intercept` must be a flax method interceptor (a callable) or None, got {intercept!r}.")
    nll_total, kl_total = 0.0, 0.0
    for i, (w, wt) in enumerate(chunks):
      if references is None:
        nll_total += float(_weighted_nll(params, config, w, wt, intercept))
      else:
        nll, kl = jax.device_get(_weighted_nll_and_kl(params, config, w, wt, references[i], intercept))
        nll_total, kl_total = nll_total + float(nll), kl_total + float(kl)
    loss = nll_total / (n * seq_len)
    return Evaluation(loss, math.exp(loss), kl_total / (n * seq_len) if references is not None else math.nan)

  return evaluator


def evaluate(params: Any, config: TransformerConfig, tokens, *, seq_len: int, batch_size: int | None = None) -> float:
  """Mean next-token cross-entropy (nats per token) over consecutive non-overlapping windows of ``tokens``.

  Window i holds tokens [i·seq_len, (i + 1)·seq_len] and scores its last seq_len tokens, so every token after the
  first is scored once, with a context that restarts at each window; a tail shorter than a window is dropped.
  ``batch_size`` windows are scored per call (``None``: about 8192 tokens' worth). See ``make_evaluator``.
  """
  _check_config(config)
  seq_len = _checks.check_int(seq_len, "seq_len", 1)
  if seq_len > config.max_len:
    raise ValueError(f"`seq_len` ({seq_len}) must not exceed the config's max_len ({config.max_len}).")
  tokens = np.asarray(tokens)
  if not np.issubdtype(tokens.dtype, np.integer):
    raise TypeError(f"`tokens` must be an integer array of token ids, got dtype {tokens.dtype}.")
  if tokens.ndim != 1:
    raise ValueError(f"`tokens` must be 1-D, got shape {tokens.shape}.")
  tokens = np.asarray(tokens, np.int32)
  windows = text.consecutive_windows(tokens, seq_len)
  if windows.shape[0] < 1:
    raise ValueError(f"`tokens` ({tokens.size}) must hold at least seq_len + 1 = {seq_len + 1} tokens.")
  batch_size = max(1, 8192 // seq_len) if batch_size is None else batch_size
  return make_evaluator(config, windows, batch_size=batch_size)(params).loss


# ----------------------------------------------------------------------------------------------------------------
# The cached default model


@dataclasses.dataclass(frozen=True)
class TrainRecipe:
  """How ``pretrained`` trains (part of the checkpoint's fingerprint): see ``train`` for the fields (``steps`` and
  ``warmup_steps`` are its ``num_steps`` and ``num_warmup_steps``; the field names are part of the fingerprint).

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
  """A trained model: its variables, what training measured (``None`` for ``load_model``'s tiny model), its
  config, and its checkpoint (.msgpack; its record is the .json beside it; ``""`` when not saved)."""

  params: Any
  record: TrainRecord | None
  config: TransformerConfig
  path: str


# Bump when the architecture or the training code changes what a recipe produces: old checkpoints stop matching.
_CHECKPOINT_VERSION = 1


def fingerprint(config: TransformerConfig, recipe: TrainRecipe) -> str:
  """A 16-hex-digit hash of the config, the recipe and the checkpoint format version."""
  _check_config(config)
  if not isinstance(recipe, TrainRecipe):
    raise TypeError(f"`recipe` must be a TrainRecipe, got {type(recipe).__name__}.")
  fields = dataclasses.asdict(config) | {"dtype": np.dtype(config.dtype).name}
  blob = json.dumps(
    {"version": _CHECKPOINT_VERSION, "config": fields, "recipe": dataclasses.asdict(recipe)},
    sort_keys=True,
  )
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_cache_dir() -> pathlib.Path:
  """Where ``pretrained`` keeps its checkpoints: ``toolkit.cache.cache_dir("models")`` (the user's cache directory,
  ``$TOOLKIT_CACHE_DIR/models`` when that is set)."""
  return cache.cache_dir("models")


def pretrained(
  config: TransformerConfig | None = None,
  recipe: TrainRecipe | None = None,
  *,
  cache_dir: str | os.PathLike | None = None,
) -> Pretrained:
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
  params_path, record_path = (
    directory / f"transformer_{key}.msgpack",
    directory / f"transformer_{key}.json",
  )
  template = jax.eval_shape(functools.partial(init_params, config=config), jax.random.key(0))
  if params_path.exists() and record_path.exists():
    restored = serialization.msgpack_restore(params_path.read_bytes())
    if jax.tree.structure(restored) != jax.tree.structure(template) or any(
      a.shape != b.shape for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(template))
    ):
      raise ValueError(f"checkpoint {params_path} does not match the parameters of {config}.")
    record = json.loads(record_path.read_text())["record"]
    logging.info("loaded the pretrained transformer %s", params_path)
    return Pretrained(jax.tree.map(jnp.asarray, restored), TrainRecord(**record), config, str(params_path))

  corpus = text.split(text.encode(text.load_corpus(recipe.corpus)), recipe.valid_fraction)
  logging.info(
    "training the transformer %s on %s (%d train tokens) into %s",
    key,
    recipe.corpus,
    corpus.train.size,
    params_path,
  )
  start = time.perf_counter()
  params = train(
    config,
    corpus.train,
    num_steps=recipe.steps,
    batch_size=recipe.batch_size,
    seq_len=recipe.seq_len,
    learning_rate=recipe.learning_rate,
    seed=recipe.seed,
    num_warmup_steps=recipe.warmup_steps,
    weight_decay=recipe.weight_decay,
  )
  jax.block_until_ready(params)
  seconds = time.perf_counter() - start
  valid_loss = evaluate(params, config, corpus.valid, seq_len=recipe.seq_len)
  unigram = float(text.unigram_log_prob(corpus.train, corpus.valid, config.vocab_size))
  record = TrainRecord(valid_loss, math.exp(valid_loss), math.exp(-unigram), seconds, key)
  logging.info(
    "validation perplexity %.3f per byte (unigram %.3f), trained in %.0f s",
    record.valid_perplexity,
    record.unigram_perplexity,
    seconds,
  )
  meta = {
    "record": record._asdict(),
    "config": dataclasses.asdict(config) | {"dtype": np.dtype(config.dtype).name},
    "recipe": dataclasses.asdict(recipe),
    "jax": jax.__version__,
  }
  cache.write_atomically(record_path, json.dumps(meta, indent=2).encode())
  cache.write_atomically(params_path, serialization.msgpack_serialize(jax.tree.map(np.asarray, params)))
  return Pretrained(params, record, config, str(params_path))


def load_model(num_train_steps: int = 0, *, max_len: int = 512) -> Pretrained:
  """The model the low-bit experiments and notebooks read: ``pretrained()`` (trained on first use, then cached)
  when ``num_train_steps`` is 0, else ``train_tiny(num_train_steps, max_len=max_len)`` (record ``None``, path
  ``""``), a fresh seconds-long stand-in for tests and smoke runs."""
  if not isinstance(num_train_steps, int) or num_train_steps < 0:
    raise ValueError(f"`num_train_steps` must be a non-negative integer, got {num_train_steps!r}.")
  if num_train_steps:
    config, params = train_tiny(num_train_steps, max_len=max_len, log_every=max(1, num_train_steps))
    return Pretrained(params, None, config, "")
  return pretrained()


__all__ = [
  "Evaluation",
  "Pretrained",
  "TrainRecipe",
  "TrainRecord",
  "default_cache_dir",
  "evaluate",
  "fingerprint",
  "load_model",
  "make_evaluator",
  "next_token_loss",
  "pretrained",
  "train",
  "train_tiny",
]
