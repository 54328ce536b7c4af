"""The decoder-only transformer and its KV-cache protocol against independent numpy formulations.

Oracles: cached decoding (prefill + one-token steps) must reproduce the teacher-forced forward pass; RoPE against
the complex-number rotation of RoFormer Eq. 34; one attention layer and one cached decode step against a loop-based
numpy softmax attention.
"""

from __future__ import annotations

import dataclasses
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toolkit.data import text
from toolkit.models import lm_training as lt
from toolkit.models.transformer import (
  Attention,
  FullPrecisionCache,
  Transformer,
  TransformerConfig,
  causal_attention,
  decode_log_probs,
  init_params,
  rope,
  sequence_log_probs,
)
from toolkit.quant import zeroquant as zq

SMALL = TransformerConfig(d_model=64, num_heads=2, num_layers=2, max_len=64)
TINY = TransformerConfig(d_model=32, num_heads=1, num_layers=1, d_ff=64, max_len=32)
TINY_RECIPE = lt.TrainRecipe(steps=3, batch_size=2, seq_len=16, warmup_steps=1)


def _sharp_params(key, config=SMALL, gain=20.0):
  """Init weights are N(0, 0.02²): near-uniform logits would make a cache bug invisible, so scale the matrices up."""
  params = jax.jit(init_params, static_argnums=1)(key, config)
  return jax.tree.map(lambda w: w * gain if w.ndim == 2 else w, params)


def _tokens(key, shape=(2, 24)):
  return jax.random.randint(key, shape, 0, SMALL.vocab_size, dtype=jnp.int32)


def _np_rope(x, positions, base=10000.0):
  """RoFormer Eq. 34 as complex multiplication: z_i = x_i + i x_{i+D/2} is multiplied by exp(i m θ_i)."""
  d = x.shape[-1]
  theta = base ** (-np.arange(d // 2) * 2.0 / d)
  z = (x[..., : d // 2] + 1j * x[..., d // 2 :]) * np.exp(1j * np.asarray(positions, np.float64)[..., None] * theta)
  return np.concatenate([z.real, z.imag], axis=-1)


def test_cached_decoding_reproduces_the_forward_pass_at_every_position(key):
  k_params, k_tokens = jax.random.split(key)
  params, tokens = _sharp_params(k_params), _tokens(k_tokens)
  model = Transformer(SMALL)
  full = model.apply(params, tokens)
  assert np.std(np.asarray(full)) > 1.0  # the logits are far from uniform, so the comparison has teeth
  cache = FullPrecisionCache()
  prompt = 5
  logits, state = model.apply(params, tokens[:, :prompt], cache, 24, method=Transformer.prefill)
  np.testing.assert_allclose(logits, full[:, :prompt], atol=1e-4, rtol=1e-4)
  step = jax.jit(lambda p, token, state: model.apply(p, token, state, cache, method=Transformer.decode))
  for t in range(prompt, tokens.shape[1]):
    step_logits, state = step(params, tokens[:, t], state)
    np.testing.assert_allclose(step_logits, full[:, t], atol=1e-4, rtol=1e-4, err_msg=f"position {t}")
  assert int(state.position) == tokens.shape[1] and int(state.caches[0].length) == tokens.shape[1]


@pytest.mark.parametrize("prompt_len", [1, 9, 23])
def test_decode_log_probs_equal_teacher_forced_log_probs(key, prompt_len):
  k_params, k_tokens = jax.random.split(key)
  params, tokens = _sharp_params(k_params), _tokens(k_tokens)
  reference = sequence_log_probs(params, SMALL, tokens)  # log p(tokens[:, t] | :t), t = 1 .. T-1
  full_logits = Transformer(SMALL).apply(params, tokens)
  out = decode_log_probs(params, SMALL, tokens, FullPrecisionCache(), prompt_len)
  assert out.log_probs.shape == out.predictions.shape == (2, 24 - prompt_len)
  np.testing.assert_allclose(out.log_probs, reference[:, prompt_len - 1 :], atol=1e-4)
  np.testing.assert_array_equal(out.predictions, np.argmax(full_logits[:, prompt_len - 1 : -1], -1))


def test_causality(key):
  k_params, k_tokens = jax.random.split(key)
  params, tokens = _sharp_params(k_params), _tokens(k_tokens)
  t = 11
  changed = tokens.at[:, t].set((tokens[:, t] + 1) % SMALL.vocab_size)
  a, b = Transformer(SMALL).apply(params, tokens), Transformer(SMALL).apply(params, changed)
  np.testing.assert_array_equal(a[:, :t], b[:, :t])
  assert np.all(np.abs(np.asarray(a[:, t:] - b[:, t:])).max(axis=-1) > 1e-3)


def test_rope_matches_complex_rotation_and_depends_on_relative_position(key):
  kq, kk = jax.random.split(key)
  q, k = jax.random.normal(kq, (64,)), jax.random.normal(kk, (64,))
  positions = np.array([0, 1, 7, 300])
  rotated = rope(jnp.broadcast_to(q, (4, 64)), positions)
  np.testing.assert_allclose(rotated, _np_rope(np.asarray(q, np.float64), positions), atol=1e-4)
  np.testing.assert_allclose(rotated[0], q, atol=0)  # position 0 is the identity
  np.testing.assert_allclose(np.linalg.norm(rotated, axis=-1), np.linalg.norm(q), rtol=1e-5)  # a rotation

  def score(m, n):
    return float(jnp.dot(rope(q, m), rope(k, n)))

  for m, n, shift in [(5, 2, 40), (0, 9, 123), (31, 31, 7)]:
    np.testing.assert_allclose(score(m + shift, n + shift), score(m, n), rtol=1e-4, atol=1e-4)
  assert abs(score(5, 2) - score(2, 5)) > 1e-3  # not symmetric: the sign of m - n matters


def test_attention_layer_matches_numpy_softmax_attention(key):
  k_params, k_h = jax.random.split(key)
  attn_params = {"params": _sharp_params(k_params, gain=5.0)["params"]["blocks_0"]["attn"]}
  h = jax.random.normal(k_h, (2, 10, SMALL.d_model))
  out, keys, values = Attention(SMALL).apply(attn_params, h)

  w = {name: np.asarray(attn_params["params"][name]["kernel"], np.float64) for name in attn_params["params"]}
  x = np.asarray(h, np.float64)
  heads, d = SMALL.num_heads, SMALL.head_dim
  positions = np.arange(10)
  expected = np.zeros_like(x)
  for b in range(2):
    concat = np.zeros((10, SMALL.d_model))
    for head in range(heads):
      cols = slice(head * d, (head + 1) * d)
      q = _np_rope(x[b] @ w["q_proj"][:, cols], positions)
      k = _np_rope(x[b] @ w["k_proj"][:, cols], positions)
      v = x[b] @ w["v_proj"][:, cols]
      np.testing.assert_allclose(keys[b, head], k, atol=1e-3, rtol=1e-4)
      np.testing.assert_allclose(values[b, head], v, atol=1e-3, rtol=1e-4)
      for t in range(10):
        s = q[t] @ k[: t + 1].T / np.sqrt(d)
        p = np.exp(s - s.max())
        concat[t, cols] = (p / p.sum()) @ v[: t + 1]
    expected[b] = concat @ w["o_proj"]
  np.testing.assert_allclose(out, expected, atol=1e-3, rtol=1e-4)


def test_full_precision_cache_attend_matches_numpy(key):
  kk, kv, kq, kn = jax.random.split(key, 4)
  cache = FullPrecisionCache()
  k, v = jax.random.normal(kk, (2, 3, 7, 16)), jax.random.normal(kv, (2, 3, 7, 16))
  q, new = jax.random.normal(kq, (2, 3, 16)), jax.random.normal(kn, (2, 2, 3, 16))
  state = cache.prefill(cache.init((2, 3), 12, 16, jnp.float32), k, v)
  out, state = cache.attend(state, q, new[0], new[1])
  assert int(state.length) == 8
  keys = np.concatenate([np.asarray(k), np.asarray(new[0])[:, :, None]], axis=2)
  vals = np.concatenate([np.asarray(v), np.asarray(new[1])[:, :, None]], axis=2)
  s = np.einsum("bhd,bhtd->bht", np.asarray(q, np.float64), keys) / 4.0
  p = np.exp(s - s.max(-1, keepdims=True))
  np.testing.assert_allclose(out, np.einsum("bht,bhtd->bhd", p / p.sum(-1, keepdims=True), vals), atol=1e-5)


def test_jit_and_no_jit_agree_and_same_key_same_params(key):
  params, tokens = _sharp_params(key, TINY), _tokens(jax.random.key(1), (2, 7))
  jax.tree.map(np.testing.assert_array_equal, params, _sharp_params(key, TINY))
  model = Transformer(TINY)
  np.testing.assert_allclose(jax.jit(model.apply)(params, tokens), model.apply(params, tokens), atol=1e-5)
  jitted = decode_log_probs(params, TINY, tokens, FullPrecisionCache(), 4)
  eager = decode_log_probs.__wrapped__(params, TINY, tokens, FullPrecisionCache(), 4)  # op by op, no outer jit
  np.testing.assert_allclose(jitted.log_probs, eager.log_probs, atol=1e-5)
  np.testing.assert_array_equal(jitted.predictions, eager.predictions)


def test_linear_layers_are_named_dense_kernels_in_by_out():
  """The contract a post-training quantizer relies on: every matrix is a Dense kernel with a fixed name."""
  config = TransformerConfig(d_model=64, num_heads=2, num_layers=3, d_ff=96)
  params = jax.jit(init_params, static_argnums=1)(jax.random.key(0), config)["params"]
  kernels = {
    "/".join(k.key for k in path): leaf.shape
    for path, leaf in jax.tree_util.tree_leaves_with_path(params)
    if path[-1].key == "kernel"
  }
  expected = {"lm_head/kernel": (64, 256)}
  for i in range(3):
    for name, shape in [
      ("q_proj", (64, 64)),
      ("k_proj", (64, 64)),
      ("v_proj", (64, 64)),
      ("o_proj", (64, 64)),
    ]:
      expected[f"blocks_{i}/attn/{name}/kernel"] = shape
    expected[f"blocks_{i}/mlp/up_proj/kernel"] = (64, 96)
    expected[f"blocks_{i}/mlp/down_proj/kernel"] = (96, 64)
  assert kernels == expected
  assert params["embed"]["embedding"].shape == (256, 64)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))


@pytest.mark.parametrize(
  "kwargs, match",
  [
    ({"d_model": 60, "num_heads": 8}, "divisible"),
    ({"d_model": 36, "num_heads": 4}, "even"),
    ({"num_layers": 0}, "num_layers"),
    ({"d_ff": -1}, "d_ff"),
    ({"rope_base": 1.0}, "rope_base"),
    ({"dtype": jnp.int32}, "dtype"),
  ],
)
def test_bad_config(kwargs, match):
  with pytest.raises(ValueError, match=match):
    TransformerConfig(**kwargs)


def test_default_config():
  c = TransformerConfig()
  assert (c.vocab_size, c.d_model, c.num_heads, c.head_dim, c.num_layers, c.d_ff, c.max_len) == (
    256,
    256,
    4,
    64,
    4,
    1024,
    512,
  )
  assert hash(c) == hash(TransformerConfig())


def test_bad_inputs(key):
  with pytest.raises(ValueError, match="`positions` \\(3,\\) must broadcast"):
    rope(jnp.ones((4, 6)), jnp.arange(3))
  with pytest.raises(ValueError, match="`q` and `k` must be \\(B, H, T, D\\) of one shape"):
    causal_attention(jnp.ones((1, 1, 4, 8)), jnp.ones((1, 1, 5, 8)), jnp.ones((1, 1, 4, 8)))
  params = init_params(key, SMALL)
  model = Transformer(SMALL)
  with pytest.raises(TypeError, match="tokens"):
    model.apply(params, jnp.zeros((1, 4), jnp.float32))
  with pytest.raises(ValueError, match="tokens"):
    model.apply(params, jnp.zeros((4,), jnp.int32))
  with pytest.raises(ValueError, match="max_len"):
    model.apply(params, jnp.zeros((1, 65), jnp.int32))
  tokens = jnp.zeros((1, 8), jnp.int32)
  with pytest.raises(ValueError, match="capacity"):
    model.apply(params, tokens, FullPrecisionCache(), 4, method=Transformer.prefill)
  _, state = model.apply(params, tokens, FullPrecisionCache(), 9, method=Transformer.prefill)
  with pytest.raises(ValueError, match="token"):
    model.apply(params, jnp.zeros((1, 1), jnp.int32), state, FullPrecisionCache(), method=Transformer.decode)
  with pytest.raises(ValueError, match="prompt_len"):
    decode_log_probs(params, SMALL, tokens, FullPrecisionCache(), 8)
  with pytest.raises(ValueError, match="capacity"):
    decode_log_probs(params, SMALL, tokens, FullPrecisionCache(), 2, capacity=6)
  # Ids outside the vocabulary: refused when concrete; under jit all-NaN logits (a negative id used to wrap around
  # to a real row and give finite logits).
  for bad in (-1, SMALL.vocab_size):
    with pytest.raises(ValueError, match=r"`tokens` must lie in \[0, 256\) \(the vocabulary\)"):
      model.apply(params, tokens.at[0, 3].set(bad))
    logits = jax.jit(model.apply)(params, jnp.zeros((2, 8), jnp.int32).at[0, 3].set(bad))
    assert bool(jnp.all(jnp.isnan(logits[0]))) and bool(jnp.all(jnp.isfinite(logits[1])))  # 0 · NaN in attention
  with pytest.raises(ValueError, match="`token` must lie in"):
    model.apply(params, jnp.array([SMALL.vocab_size]), state, FullPrecisionCache(), method=Transformer.decode)


def test_bad_inputs_init_params_and_sequence_log_probs(key):
  with pytest.raises(TypeError, match="`config`"):
    init_params(key, {"d_model": 32})
  params = init_params(key, TINY)
  tokens = jnp.arange(16, dtype=jnp.int32).reshape(2, 8)
  with pytest.raises(TypeError, match="`config`"):
    sequence_log_probs(params, "tiny", tokens)
  with pytest.raises(ValueError, match="`tokens` must have T >= 2"):  # no target: the model got (B, 0) tokens
    sequence_log_probs(params, TINY, tokens[:, :1])
  with pytest.raises(ValueError, match="`tokens` must have shape"):  # was an IndexError
    sequence_log_probs(params, TINY, tokens[0])
  with pytest.raises(TypeError, match="`tokens`"):
    sequence_log_probs(params, TINY, tokens.astype(jnp.float32))
  with pytest.raises(ValueError, match="max_len"):
    sequence_log_probs(params, TINY, jnp.zeros((1, TINY.max_len + 2), jnp.int32))
  # The last column is only a target, which the model never read: a -1 there was wrapped around to the last id of
  # the vocabulary and scored as a finite log-probability.
  for bad in (-1, TINY.vocab_size):
    with pytest.raises(ValueError, match=r"`tokens` must lie in \[0, 256\) \(the vocabulary\)"):
      sequence_log_probs(params, TINY, tokens.at[0, -1].set(bad))
    out = jax.jit(sequence_log_probs, static_argnums=1)(params, TINY, tokens.at[0, -1].set(bad))
    assert (
      bool(jnp.isnan(out[0, -1])) and bool(jnp.all(jnp.isfinite(out[0, :-1]))) and bool(jnp.all(jnp.isfinite(out[1])))
    )
  # T = max_len + 1 is valid: the model reads max_len tokens.
  assert sequence_log_probs(params, TINY, jnp.zeros((1, TINY.max_len + 1), jnp.int32)).shape == (1, TINY.max_len)


# ----------------------------------------------------------------------------------------------------------------
# Training, evaluation and the cached checkpoint


def test_evaluate_equals_a_loop_over_windows(key):
  params, tokens = _sharp_params(key), np.asarray(_tokens(key, (1, 60)))[0]
  expected = np.mean(
    [-np.asarray(sequence_log_probs(params, SMALL, tokens[None, i * 8 : i * 8 + 9])) for i in range(7)]
  )  # (60 - 1) // 8 = 7 windows of 9 tokens, the tail of 3 dropped
  for batch_size in (7, 3):  # 3 pads the last chunk
    np.testing.assert_allclose(
      lt.evaluate(params, SMALL, tokens, seq_len=8, batch_size=batch_size), expected, rtol=1e-5
    )


def test_evaluator_measures_the_kl_to_a_reference(key):
  params, tokens = _sharp_params(key), np.asarray(_tokens(key, (1, 60)))[0]
  other = init_params(jax.random.key(7), SMALL)
  windows = text.consecutive_windows(tokens, 8)
  evaluator = lt.make_evaluator(SMALL, windows, batch_size=3, reference_params=params)
  itself, against = evaluator(params), evaluator(other)
  assert abs(itself.kl) < 1e-6 and np.isnan(lt.make_evaluator(SMALL, windows, batch_size=3)(params).kl)
  np.testing.assert_allclose(itself.loss, lt.evaluate(params, SMALL, tokens, seq_len=8), rtol=1e-5)
  np.testing.assert_allclose(against.perplexity, np.exp(against.loss))
  # KL(p_ref ‖ p) per token, from the full distributions.
  ref = jax.nn.log_softmax(Transformer(SMALL).apply(params, windows[:, :-1]), -1)
  log_p = jax.nn.log_softmax(Transformer(SMALL).apply(other, windows[:, :-1]), -1)
  np.testing.assert_allclose(against.kl, float(jnp.mean(jnp.sum(jnp.exp(ref) * (ref - log_p), -1))), rtol=1e-4)


@pytest.mark.slow
def test_training_beats_the_unigram_model():
  parts = text.split(text.encode(text.load_corpus()))
  params = lt.train(
    TINY,
    parts.train[:200_000],
    num_steps=60,
    batch_size=8,
    seq_len=32,
    learning_rate=1e-2,
    log_every=1000,
  )
  loss = lt.evaluate(params, TINY, parts.valid[:20_000], seq_len=32)
  unigram = -float(text.unigram_log_prob(parts.train, parts.valid[:20_000]))
  assert loss < unigram - 0.3, (
    loss,
    unigram,
  )  # bigram statistics alone give ≈ 2.5 nats vs the unigram's ≈ 3.35


@pytest.mark.slow
def test_pretrained_trains_once_then_loads(tmp_path, monkeypatch):
  first = lt.pretrained(TINY, TINY_RECIPE, cache_dir=tmp_path / "models")
  assert pathlib.Path(first.path).exists() and pathlib.Path(first.path).with_suffix(".json").exists()
  assert first.record.fingerprint == lt.fingerprint(TINY, TINY_RECIPE) and first.record.train_seconds > 0
  assert not list((tmp_path / "models").glob("*.tmp"))  # the atomic writes left no temporary file
  np.testing.assert_allclose(first.record.valid_perplexity, np.exp(first.record.valid_loss))
  # Same recipe, another directory: trains again, to the same parameters (same seed, same result).
  again = lt.pretrained(TINY, TINY_RECIPE, cache_dir=tmp_path / "b")
  jax.tree.map(np.testing.assert_array_equal, first.params, again.params)

  def no_training(*args, **kwargs):
    raise AssertionError("pretrained trained although a checkpoint exists")

  monkeypatch.setattr(lt, "train", no_training)
  loaded = lt.pretrained(TINY, TINY_RECIPE, cache_dir=tmp_path / "models")
  jax.tree.map(np.testing.assert_array_equal, first.params, loaded.params)
  assert loaded.record == first.record and loaded.path == first.path
  np.testing.assert_allclose(
    Transformer(TINY).apply(loaded.params, _tokens(jax.random.key(2), (1, 8))),
    Transformer(TINY).apply(first.params, _tokens(jax.random.key(2), (1, 8))),
  )
  # Another recipe is another fingerprint: it would train.
  with pytest.raises(AssertionError, match="trained"):
    lt.pretrained(TINY, dataclasses.replace(TINY_RECIPE, seed=1), cache_dir=tmp_path / "models")
  monkeypatch.setenv("TOOLKIT_CACHE_DIR", str(tmp_path))  # the default: <cache dir>/models
  assert lt.pretrained(TINY, TINY_RECIPE).path == first.path


def test_evaluator_runs_the_model_under_an_interceptor(key):

  params, tokens = _sharp_params(key), np.asarray(_tokens(key, (1, 60)))[0]
  windows = text.consecutive_windows(tokens, 8)
  evaluator = lt.make_evaluator(SMALL, windows, batch_size=3, reference_params=params)
  a4 = zq.DenseInputQuantizer(4)
  got = evaluator(params, a4)
  # Oracle: the interceptor's model applied directly, scored against the plain model's distributions.
  with nn.intercept_methods(a4):
    log_p = jax.nn.log_softmax(Transformer(SMALL).apply(params, windows[:, :-1]), -1)
  ref = jax.nn.log_softmax(Transformer(SMALL).apply(params, windows[:, :-1]), -1)
  nll = -np.take_along_axis(np.asarray(log_p), windows[:, 1:, None], -1).mean()
  kl = float(jnp.mean(jnp.sum(jnp.exp(ref) * (ref - log_p), -1)))
  np.testing.assert_allclose(got.loss, nll, rtol=1e-5)
  np.testing.assert_allclose(got.kl, kl, rtol=1e-4)
  assert got.kl > 1e-4  # 4-bit activations move the predictions ...
  assert abs(evaluator(params).kl) < 1e-6  # ... and a cached trace with the interceptor does not leak into plain calls
  with pytest.raises(TypeError, match="`intercept`"):
    evaluator(params, "a8")


# ----------------------------------------------------------------------------------------------------------------
# Bad input


def test_lm_training_bad_input_is_refused_before_any_training(monkeypatch):
  def no_training(*args, **kwargs):
    raise AssertionError("the model was initialised although the arguments are invalid")

  monkeypatch.setattr(lt, "init_params", no_training)
  monkeypatch.setattr(text, "load_corpus", no_training)
  tokens = np.arange(100, dtype=np.int32)
  ok = {"num_steps": 2, "batch_size": 2, "seq_len": 8, "learning_rate": 1e-3}
  with pytest.raises(ValueError, match="`batch_size`"):
    lt.train(TINY, tokens, **(ok | {"batch_size": 0}))
  with pytest.raises(ValueError, match="`learning_rate`"):
    lt.train(TINY, tokens, **(ok | {"learning_rate": 0.0}))
  with pytest.raises(ValueError, match="`log_every`"):  # was a ZeroDivisionError after the first step
    lt.train(TINY, tokens, **ok, log_every=0)
  with pytest.raises(TypeError, match="`tokens`"):  # was cast to int32, silently truncating
    lt.train(TINY, tokens / 3.0, **ok)
  with pytest.raises(ValueError, match="`tokens` must lie in"):
    lt.train(TINY, tokens + 200, **ok)
  with pytest.raises(ValueError, match="`num_steps`"):
    lt.train_tiny(0, max_len=32)
  with pytest.raises(ValueError, match="`seq_len`"):
    lt.train_tiny(1, max_len=16, seq_len=32)
  with pytest.raises(ValueError, match="`num_train_steps`"):
    lt.load_model(-1)


def test_lm_training_bad_input_evaluation(key):
  params = init_params(key, TINY)
  windows = np.arange(18, dtype=np.int32).reshape(2, 9)
  with pytest.raises(ValueError, match="`windows`"):  # one window without its batch axis: an IndexError
    lt.next_token_loss(params, TINY, windows[0])
  with pytest.raises(TypeError, match="`windows`"):
    lt.next_token_loss(params, TINY, windows.astype(np.float32))
  with pytest.raises(ValueError, match="`windows` must lie in"):  # gave a NaN loss
    lt.make_evaluator(TINY, windows + 250, batch_size=2)
  with pytest.raises(ValueError, match="`windows`"):  # T = 39 > max_len = 32
    lt.make_evaluator(TINY, np.zeros((2, 40), np.int32), batch_size=2)
  tokens = np.arange(100, dtype=np.int32)
  with pytest.raises(ValueError, match="`seq_len`"):  # was a ZeroDivisionError
    lt.evaluate(params, TINY, tokens, seq_len=0)
  with pytest.raises(TypeError, match="`tokens`"):  # was truncated to integers
    lt.evaluate(params, TINY, tokens / 3.0, seq_len=8)
  with pytest.raises(TypeError, match="`config`"):
    lt.fingerprint("tiny", TINY_RECIPE)
  with pytest.raises(TypeError, match="`recipe`"):
    lt.fingerprint(TINY, dataclasses.asdict(TINY_RECIPE))
