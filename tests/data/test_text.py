"""The shipped corpus, the byte tokenizer, the split, the batches and the unigram baseline, against numpy counts."""

from __future__ import annotations

import collections
import gzip
import hashlib

import jax
import numpy as np
import pytest

from toolkit.data import text


def test_corpus_ships_and_matches_its_recorded_hash():
  corpus = text.load_corpus()
  assert len(corpus) == 1_115_394 and corpus.startswith("First Citizen:\nBefore we proceed any further")
  raw = gzip.decompress((text.CORPORA_DIR / "tiny_shakespeare.txt.gz").read_bytes())
  assert hashlib.sha256(raw).hexdigest() == text.CORPORA["tiny_shakespeare"][1]
  assert (text.CORPORA_DIR / "SOURCE.md").exists()
  with pytest.raises(ValueError, match="name"):
    text.load_corpus("war_and_peace")


def test_encode_decode_round_trip_on_non_ascii_text():
  sample = "Ça va? Grüße, 東京 🎭 — “quoted”\n\ttab"
  tokens = text.encode(sample)
  assert tokens.dtype == np.int32 and tokens.min() >= 0 and tokens.max() < text.VOCAB_SIZE
  assert tokens.tolist() == list(sample.encode("utf-8"))  # bytes, so multi-byte characters take several tokens
  assert len(tokens) > len(sample)
  assert text.decode(tokens) == sample
  assert text.decode(jax.numpy.asarray(tokens)) == sample
  assert text.decode(np.array([0xE6], np.int32)) == "\ufffd"  # a truncated character does not raise
  with pytest.raises(ValueError, match="tokens"):
    text.decode(np.array([256]))
  with pytest.raises(TypeError, match="text"):
    text.encode(b"bytes")


def test_split_is_contiguous_disjoint_and_deterministic():
  tokens = np.arange(1000, dtype=np.int32)
  parts = text.split(tokens, valid_fraction=0.1)
  np.testing.assert_array_equal(parts.train, np.arange(900))
  np.testing.assert_array_equal(parts.valid, np.arange(900, 1000))
  assert not set(parts.train.tolist()) & set(parts.valid.tolist())
  corpus = text.encode(text.load_corpus())
  a, b = text.split(corpus), text.split(corpus)
  np.testing.assert_array_equal(a.valid, b.valid)
  np.testing.assert_array_equal(np.concatenate([a.train, a.valid]), corpus)
  assert a.valid.size == round(0.1 * corpus.size)
  for bad in (0.0, 1.0):
    with pytest.raises(ValueError, match="valid_fraction"):
      text.split(tokens, valid_fraction=bad)


def test_batches_are_windows_of_the_stream(key):
  tokens = np.arange(50, dtype=np.int32)  # token value == its index, so a window is an arithmetic run
  windows = np.asarray(jax.jit(text.batches, static_argnums=(2, 3))(key, tokens, 2000, 9))
  assert windows.shape == (2000, 10) and windows.dtype == np.int32
  np.testing.assert_array_equal(windows - windows[:, :1], np.broadcast_to(np.arange(10), (2000, 10)))
  starts = windows[:, 0]
  assert starts.min() == 0 and starts.max() == 40  # every start in [0, n - seq_len - 1] is reachable
  np.testing.assert_array_equal(windows, text.batches(key, tokens, 2000, 9))  # jit == no jit, same key same batch
  assert not np.array_equal(windows, text.batches(jax.random.key(1), tokens, 2000, 9))
  with pytest.raises(ValueError, match="seq_len"):
    text.batches(key, tokens, 2, 50)


def test_unigram_log_prob_equals_numpy_count():
  rng = np.random.default_rng(0)
  train, evaluation = (
    rng.integers(0, 40, 3000),
    rng.integers(0, 60, 500),
  )  # some eval bytes never seen in train
  counts = collections.Counter(train.tolist())
  expected = np.mean([np.log((counts.get(t, 0) + 1) / (train.size + 256)) for t in evaluation.tolist()])
  np.testing.assert_allclose(text.unigram_log_prob(train, evaluation), expected, rtol=1e-5)


def test_unigram_perplexity_of_shakespeare():
  parts = text.split(text.encode(text.load_corpus()))
  perplexity = float(np.exp(-text.unigram_log_prob(parts.train, parts.valid)))
  assert 25.0 < perplexity < 32.0  # char-level English: entropy ≈ 4.8 bits per byte


def test_evenly_spaced_windows():
  tokens = np.arange(100, dtype=np.int32)
  windows = text.evenly_spaced_windows(tokens, 10, 4)
  np.testing.assert_array_equal(windows[:, 0], [0, 30, 60, 90])
  np.testing.assert_array_equal(windows[-1], np.arange(90, 100))
  assert windows.dtype == np.int32
  with pytest.raises(ValueError, match="seq_len"):
    text.evenly_spaced_windows(tokens, 101, 2)
  with pytest.raises(ValueError, match="num_windows"):
    text.evenly_spaced_windows(tokens, 10, 0)


@pytest.mark.parametrize(
  ("tokens", "seq_len", "match"),
  [
    (np.arange(20), 0, "`seq_len` must be an int >= 1"),
    (np.arange(20), 2.5, "`seq_len` must be an int >= 1"),
    (np.arange(20).reshape(4, 5), 2, "`tokens` must be 1-D"),
  ],
)
def test_bad_input_consecutive_windows(tokens, seq_len, match):
  with pytest.raises(ValueError, match=match):
    text.consecutive_windows(tokens, seq_len)


def test_bad_input_unigram_log_prob():
  train, evaluation = np.arange(10), np.arange(5)
  with pytest.raises(ValueError, match="`vocab_size` must be an int >= 1"):
    text.unigram_log_prob(train, evaluation, 0)
  with pytest.raises(ValueError, match="`train_tokens` must lie in \\[0, 8\\)"):
    text.unigram_log_prob(train, evaluation, 8)
  with pytest.raises(ValueError, match="`eval_tokens` must lie in \\[0, 256\\)"):
    text.unigram_log_prob(train, np.array([3, 256]))
  with pytest.raises(ValueError, match="`train_tokens` must lie in"):
    text.unigram_log_prob(np.array([-1, 2]), evaluation)
  with pytest.raises(TypeError, match="`eval_tokens` must hold integer token ids"):
    text.unigram_log_prob(train, np.array([1.5, 2.0]))
