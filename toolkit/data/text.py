"""A small text corpus that ships with the toolkit, a byte-level tokenizer, and language-model batches.

The corpus is Tiny Shakespeare (Karpathy's char-rnn, ``data/tinyshakespeare/input.txt``; public-domain text), stored
gzip-compressed in ``toolkit/data/corpora`` (see ``corpora/SOURCE.md``): nothing is downloaded at run time.
Tokens are UTF-8 bytes (vocabulary 256), so every text round-trips and perplexities are per byte.
"""

from __future__ import annotations

import gzip
import hashlib
import pathlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from toolkit import _checks

VOCAB_SIZE = 256
CORPORA_DIR = pathlib.Path(__file__).resolve().parent / "corpora"
# name -> (file under CORPORA_DIR, SHA-256 of the uncompressed bytes).
CORPORA = {
  "tiny_shakespeare": (
    "tiny_shakespeare.txt.gz",
    "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
  ),
}


def load_corpus(name: str = "tiny_shakespeare") -> str:
  """The whole text of a shipped corpus (its SHA-256 is checked, so a damaged file fails loudly)."""
  if name not in CORPORA:
    raise ValueError(f"`name` must be one of {sorted(CORPORA)}, got {name!r}.")
  filename, sha256 = CORPORA[name]
  raw = gzip.decompress((CORPORA_DIR / filename).read_bytes())
  if hashlib.sha256(raw).hexdigest() != sha256:
    raise ValueError(f"corpus {name!r} ({CORPORA_DIR / filename}) does not match its recorded SHA-256.")
  return raw.decode("utf-8")


def encode(text: str) -> np.ndarray:
  """UTF-8 bytes of ``text`` as int32 token ids in [0, 256)."""
  if not isinstance(text, str):
    raise TypeError(f"`text` must be a str, got {type(text).__name__}.")
  return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32)


def decode(tokens) -> str:
  """Inverse of ``encode``; a byte sequence that is not valid UTF-8 (a sampled one may not be) decodes with U+FFFD."""
  tokens = np.asarray(tokens)
  if not np.issubdtype(tokens.dtype, np.integer) or tokens.ndim != 1:
    raise TypeError(f"`tokens` must be a 1-D integer array, got dtype {tokens.dtype} and shape {tokens.shape}.")
  if tokens.size and (tokens.min() < 0 or tokens.max() >= VOCAB_SIZE):
    raise ValueError(f"`tokens` must lie in [0, {VOCAB_SIZE}), got range [{tokens.min()}, {tokens.max()}].")
  return tokens.astype(np.uint8).tobytes().decode("utf-8", errors="replace")


class TextSplit(NamedTuple):
  """Contiguous train (first part) and validation (last part) token arrays."""

  train: np.ndarray
  valid: np.ndarray


def split(tokens, valid_fraction: float = 0.1) -> TextSplit:
  """Deterministic contiguous split: the last ``round(valid_fraction · n)`` tokens are the validation set."""
  tokens = np.asarray(tokens)
  if tokens.ndim != 1:
    raise ValueError(f"`tokens` must be 1-D, got shape {tokens.shape}.")
  if not 0.0 < valid_fraction < 1.0:
    raise ValueError(f"`valid_fraction` must lie in (0, 1), got {valid_fraction!r}.")
  n_valid = round(valid_fraction * tokens.size)
  if not 0 < n_valid < tokens.size:
    raise ValueError(f"`valid_fraction` {valid_fraction} leaves an empty part of {tokens.size} tokens.")
  return TextSplit(tokens[: tokens.size - n_valid], tokens[tokens.size - n_valid :])


def batches(key: jax.Array, tokens: jax.Array, batch_size: int, seq_len: int) -> jax.Array:
  """``batch_size`` windows of ``seq_len + 1`` consecutive tokens at uniform random starts: (B, seq_len + 1) int32.

  Inputs are ``w[:, :-1]`` and next-token targets ``w[:, 1:]``. Pure and jit-able (``batch_size`` and ``seq_len``
  static); every start in [0, n − seq_len − 1] is equally likely.
  """
  n = jnp.shape(tokens)[0] if jnp.ndim(tokens) == 1 else None
  if n is None:
    raise ValueError(f"`tokens` must be 1-D, got shape {jnp.shape(tokens)}.")
  if not isinstance(seq_len, int) or seq_len < 1 or n <= seq_len:
    raise ValueError(f"`seq_len` must be a positive integer smaller than len(tokens) = {n}, got {seq_len!r}.")
  if not isinstance(batch_size, int) or batch_size < 1:
    raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
  starts = jax.random.randint(key, (batch_size,), 0, n - seq_len)
  return jnp.asarray(tokens, jnp.int32)[starts[:, None] + jnp.arange(seq_len + 1)]


def consecutive_windows(tokens, seq_len: int) -> np.ndarray:
  """Non-overlapping windows of ``seq_len + 1`` tokens, (n, seq_len + 1): window i holds tokens
  [i·seq_len, (i + 1)·seq_len], so as inputs and next-token targets each token after the first is scored once;
  a tail shorter than a window is dropped (n may be 0)."""
  tokens = np.asarray(tokens)
  if tokens.ndim != 1:
    raise ValueError(f"`tokens` must be 1-D, got shape {tokens.shape}.")
  seq_len = _checks.check_int(seq_len, "seq_len", 1)
  n = (tokens.size - 1) // seq_len
  return tokens[np.arange(n)[:, None] * seq_len + np.arange(seq_len + 1)]


def evenly_spaced_windows(tokens, seq_len: int, num_windows: int) -> np.ndarray:
  """``num_windows`` windows of ``seq_len`` tokens whose starts are evenly spaced from the first token to the last
  possible start (they may overlap): (num_windows, seq_len) int32.

  >>> evenly_spaced_windows(np.arange(10), 4, 3)
  array([[0, 1, 2, 3],
         [3, 4, 5, 6],
         [6, 7, 8, 9]], dtype=int32)
  """
  tokens = np.asarray(tokens)
  if tokens.ndim != 1 or not isinstance(seq_len, int) or not 1 <= seq_len <= tokens.size:
    raise ValueError(
      f"`seq_len` must be an integer in [1, len(tokens)] for 1-D `tokens`, got {seq_len!r} and shape {tokens.shape}."
    )
  if not isinstance(num_windows, int) or num_windows < 1:
    raise ValueError(f"`num_windows` must be a positive integer, got {num_windows!r}.")
  starts = np.linspace(0, tokens.size - seq_len, num_windows).astype(int)
  return np.stack([tokens[s : s + seq_len] for s in starts]).astype(np.int32)


def unigram_log_prob(train_tokens: jax.Array, eval_tokens: jax.Array, vocab_size: int = VOCAB_SIZE) -> jax.Array:
  """Mean log-probability (nats per token) of ``eval_tokens`` under the add-one smoothed unigram of the training set.

  p(v) = (count_train(v) + 1) / (n_train + V); the unigram perplexity baseline is exp(−result).
  """
  vocab_size = _checks.check_int(vocab_size, "vocab_size", 1)
  for name, tokens in (("train_tokens", train_tokens), ("eval_tokens", eval_tokens)):
    dtype = tokens.dtype if hasattr(tokens, "dtype") else np.asarray(tokens).dtype
    if not jnp.issubdtype(dtype, jnp.integer):
      raise TypeError(f"`{name}` must hold integer token ids, got dtype {dtype}.")
    # Out-of-range ids would be dropped by the count or clamped by the lookup without a word.
    _checks.check_ids(tokens, vocab_size, name, "the vocabulary")
  counts = jnp.bincount(jnp.asarray(train_tokens, jnp.int32), length=vocab_size).astype(jnp.float32)
  log_p = jnp.log(counts + 1.0) - jnp.log(jnp.sum(counts) + vocab_size)
  return jnp.mean(log_p[jnp.asarray(eval_tokens, jnp.int32)])


__all__ = [
  "CORPORA",
  "VOCAB_SIZE",
  "TextSplit",
  "batches",
  "consecutive_windows",
  "decode",
  "encode",
  "evenly_spaced_windows",
  "load_corpus",
  "split",
  "unigram_log_prob",
]
