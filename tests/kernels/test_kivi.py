"""KIVI's quantizer: packing round trip, the s/2 error bound, grouping directions, and per-channel keys beating
per-token keys on keys with outlier channels (the paper's central finding)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.kernels import kivi, kivi_eval
from toolkit.models import transformer


@pytest.mark.parametrize("bits", kivi.SUPPORTED_BITS)
def test_pack_unpack_round_trip_covers_every_code_and_the_sign_bit(bits):
  per_word = 32 // bits
  codes = jnp.arange(per_word * (1 << bits), dtype=jnp.int32) % (1 << bits)  # every value in every field
  codes = jnp.concatenate([codes, jnp.full(per_word, (1 << bits) - 1, jnp.int32)])  # a word with all bits set
  words = kivi.pack(codes, bits)
  assert words.dtype == jnp.int32 and words.shape == (codes.size // per_word,)
  assert int(words[-1]) == -1  # all 32 bits set: the top field went through the sign bit
  np.testing.assert_array_equal(np.asarray(kivi.unpack(words, bits)), np.asarray(codes))
  # Bit layout: field j of a word holds code j (lowest bits first).
  expected = sum(int(c) << (bits * j) for j, c in enumerate(np.asarray(codes[:per_word])))
  assert np.uint32(np.int32(words[0]).view(np.uint32)) == np.uint32(expected)


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from(kivi.SUPPORTED_BITS), st.floats(0.01, 100.0))
def test_dequantization_error_is_at_most_half_a_step(seed, bits, spread):
  x = spread * jax.random.normal(jax.random.key(seed), (2, 64, 32))
  for quantize in (kivi.quantize_keys, kivi.quantize_values):
    q = quantize(x, bits=bits, group_size=16)
    err = jnp.abs(kivi.dequantize(q) - x)
    step = jnp.repeat(q.scale, 16, axis=-1)
    step = step if q.axis == -1 else jnp.swapaxes(step, -1, -2)
    assert bool(jnp.all(err <= 0.5 * step * (1 + 1e-5) + 1e-6 * spread))


def test_grouping_directions():
  x = jax.random.normal(jax.random.key(0), (3, 64, 32))  # (heads, tokens, channels)
  qk = kivi.quantize_keys(x, bits=2, group_size=32)
  qv = kivi.quantize_values(x, bits=2, group_size=32)
  # Keys: one (scale, zero) per channel and group of 32 tokens; values: per token and group of 32 channels.
  assert qk.scale.shape == (3, 32, 2) and qv.scale.shape == (3, 64, 1)
  np.testing.assert_allclose(np.asarray(qk.zero[:, :, 0]), np.asarray(x[:, :32, :].min(axis=1)), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(qv.zero[:, :, 0]), np.asarray(x.min(axis=2)), rtol=1e-6)
  assert kivi.dequantize(qk).shape == x.shape == kivi.dequantize(qv).shape


def test_constant_groups_dequantize_exactly_without_nan():
  x = jnp.concatenate([jnp.full((32, 16), 3.25), jnp.zeros((32, 16))], axis=1)
  for quantize in (kivi.quantize_keys, kivi.quantize_values):
    out = kivi.dequantize(quantize(x, bits=2, group_size=16))
    assert not bool(jnp.any(jnp.isnan(out)))
    np.testing.assert_array_equal(np.asarray(out), np.asarray(x))


def test_more_bits_less_error_and_jit_matches():
  x = jax.random.normal(jax.random.key(1), (128, 64))
  err = {b: float(jnp.mean((kivi.dequantize(kivi.quantize_keys(x, bits=b)) - x) ** 2)) for b in (2, 4, 8)}
  assert err[8] < err[4] < err[2]
  jitted = jax.jit(lambda a: kivi.dequantize(kivi.quantize_values(a, bits=2)))(x)
  # Fused multiply-adds under jit may differ in the last ulp.
  np.testing.assert_allclose(
    np.asarray(jitted),
    np.asarray(kivi.dequantize(kivi.quantize_values(x, bits=2))),
    rtol=1e-6,
    atol=1e-6,
  )


def test_per_channel_keys_beat_per_token_keys_on_outlier_channels():
  """Keys with a few large-magnitude channels (as in LLM key caches): grouping along tokens keeps each channel's own
  range, so the attention output is far closer to exact than with per-token groups mixing outliers and the rest."""
  k_key, q_key, v_key = jax.random.split(jax.random.key(2), 3)
  tokens, dim = 128, 64
  keys = jax.random.normal(k_key, (tokens, dim))
  keys = keys.at[:, :4].mul(15.0).at[:, :4].add(8.0)  # four outlier channels
  queries = jax.random.normal(q_key, (16, dim))
  values = jax.random.normal(v_key, (tokens, dim))

  def attention(k):
    return jax.nn.softmax(queries @ k.T / np.sqrt(dim), axis=-1) @ values

  exact = attention(keys)
  per_channel = attention(kivi.dequantize(kivi.quantize_keys(keys, bits=2, group_size=32)))
  per_token = attention(kivi.dequantize(kivi.quantize_values(keys, bits=2, group_size=32)))
  err_channel = float(jnp.linalg.norm(per_channel - exact) / jnp.linalg.norm(exact))
  err_token = float(jnp.linalg.norm(per_token - exact) / jnp.linalg.norm(exact))
  assert err_channel < 0.5 * err_token


def test_bad_input_is_rejected():
  x = jnp.zeros((64, 32))
  with pytest.raises(ValueError, match="bits"):
    kivi.quantize_keys(x, bits=3)
  with pytest.raises(ValueError, match="group_size"):
    kivi.quantize_keys(x, group_size=24)
  with pytest.raises(ValueError, match="group_size"):
    kivi.quantize_values(x, bits=2, group_size=8)  # fewer than 16 codes per int32 word at 2 bits
  with pytest.raises(TypeError, match="floating"):
    kivi.quantize_values(jnp.zeros((64, 32), jnp.int32))
  with pytest.raises(ValueError, match="tokens, channels"):
    kivi.quantize_values(jnp.zeros(32))


@pytest.mark.parametrize("steps", [5, 32, 40, 73])
def test_streaming_cache_equals_one_shot_quantization(steps):
  """After any number of decode steps the quantized part is the one-shot quantization of the earliest groups and
  the residual holds the remaining tokens exactly."""
  g, r, heads, channels = 16, 32, 2, 32
  keys = jax.random.normal(jax.random.key(3), (heads, steps, channels))
  values = jax.random.normal(jax.random.key(4), (heads, steps, channels))
  cache = kivi.init_cache((heads,), capacity=64, channels=channels, bits=2, group_size=g, residual=r)
  step = jax.jit(kivi.append)
  for t in range(steps):
    cache = step(cache, keys[:, t], values[:, t])
  n_q, n_r = int(cache.n_quantized), int(cache.n_residual)
  assert n_q + n_r == steps and n_q % g == 0 and n_r <= r and (steps < r or n_r >= r - g)
  k_hat, v_hat, mask = kivi.dequantize_cache(cache)
  assert int(mask.sum()) == steps
  if n_q:
    k_ref = kivi.dequantize(kivi.quantize_keys(keys[:, :n_q], bits=2, group_size=g))
    v_ref = kivi.dequantize(kivi.quantize_values(values[:, :n_q], bits=2, group_size=g))
    np.testing.assert_allclose(np.asarray(k_hat[:, :n_q]), np.asarray(k_ref), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(v_hat[:, :n_q]), np.asarray(v_ref), rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(k_hat[:, 64 : 64 + n_r]), np.asarray(keys[:, n_q:]))
  np.testing.assert_array_equal(np.asarray(v_hat[:, 64 : 64 + n_r]), np.asarray(values[:, n_q:]))


def filled_cache(steps, bits, key=5):
  keys = jax.random.normal(jax.random.key(key), (2, steps, 64))
  values = jax.random.normal(jax.random.key(key + 1), (2, steps, 64))
  cache = kivi.init_cache((2,), capacity=128, channels=64, bits=bits, group_size=32, residual=64)
  step = jax.jit(kivi.append)
  for t in range(steps):
    cache = step(cache, keys[:, t], values[:, t])
  return cache, keys, values


@pytest.mark.parametrize("bits", [2, 4])
def test_xla_decode_attention_equals_dequantize_then_einsum(bits):
  cache, _, _ = filled_cache(150, bits)
  q = jax.random.normal(jax.random.key(9), (2, 64))
  np.testing.assert_allclose(
    np.asarray(kivi.decode_attention_xla(q, cache)),
    np.asarray(kivi.decode_attention_reference(q, cache)),
    rtol=1e-5,
    atol=1e-5,
  )


def test_decode_attention_error_shrinks_with_bits():
  q = jax.random.normal(jax.random.key(9), (2, 64))
  errors = {}
  for bits in (2, 4, 8):
    cache, keys, values = filled_cache(150, bits)
    exact = jax.nn.softmax(jnp.einsum("hc,htc->ht", q, keys) / 8.0, axis=-1)
    exact = jnp.einsum("ht,htc->hc", exact, values)
    errors[bits] = float(jnp.linalg.norm(kivi.decode_attention_xla(q, cache) - exact) / jnp.linalg.norm(exact))
  assert errors[8] < errors[4] < errors[2] < 0.5


def streamed_cache(
  steps,
  *,
  bits,
  capacity=128,
  residual=64,
  channels=64,
  per_channel_keys=True,
  scale_dtype=None,
  key=5,
):
  keys = jax.random.normal(jax.random.key(key), (2, 3, steps, channels))
  values = jax.random.normal(jax.random.key(key + 1), (2, 3, steps, channels))
  cache = kivi.init_cache(
    (2, 3),
    capacity=capacity,
    channels=channels,
    bits=bits,
    group_size=32,
    residual=residual,
    scale_dtype=scale_dtype,
    per_channel_keys=per_channel_keys,
  )
  return jax.jit(kivi.extend)(cache, keys, values), keys, values


def exact_attention(q, keys, values):
  weights = jax.nn.softmax(jnp.einsum("...c,...tc->...t", q, keys) / np.sqrt(q.shape[-1]), axis=-1)
  return jnp.einsum("...t,...tc->...c", weights, values)


@pytest.mark.parametrize(
  "bits,steps,block_tokens,scale_dtype",
  [
    (2, 150, 32, None),
    (4, 150, 64, "float16"),
    (2, 70, 32, "float16"),
    (2, 20, None, None),
    (16, 150, 32, None),
  ],
)
def test_pallas_kernel_equals_xla_and_dequantize_then_einsum(bits, steps, block_tokens, scale_dtype):
  # 70 steps fill one of four 32-token blocks, 20 steps none: the kernel skips or masks the empty blocks.
  cache, _, _ = streamed_cache(steps, bits=bits, scale_dtype=scale_dtype)
  q = jax.random.normal(jax.random.key(9), (2, 3, 64))
  reference = kivi.decode_attention_reference(q, cache)
  pallas = jax.jit(lambda q, c: kivi.decode_attention_pallas(q, c, block_tokens=block_tokens, interpret=True))
  np.testing.assert_allclose(np.asarray(pallas(q, cache)), np.asarray(reference), rtol=2e-5, atol=2e-5)
  np.testing.assert_allclose(
    np.asarray(kivi.decode_attention(q, cache, impl="xla")),
    np.asarray(reference),
    rtol=2e-5,
    atol=2e-5,
  )


@pytest.mark.parametrize("impl", ["xla", "pallas"])
def test_sixteen_bits_through_the_cache_is_exact_attention(impl):
  cache, keys, values = streamed_cache(150, bits=16)
  assert int(cache.n_quantized) == 96  # most tokens went through the quantized path
  q = jax.random.normal(jax.random.key(9), (2, 3, 64))
  np.testing.assert_allclose(
    np.asarray(kivi.decode_attention(q, cache, impl=impl)),
    np.asarray(exact_attention(q, keys, values)),
    rtol=1e-5,
    atol=1e-5,
  )


def test_prefill_equals_token_by_token_appends():
  cache, keys, values = streamed_cache(75, bits=2)
  stepped = kivi.init_cache((2, 3), capacity=128, channels=64, bits=2, group_size=32, residual=64)
  for t in range(75):
    stepped = kivi.append(stepped, keys[:, :, t], values[:, :, t])
  for a, b in zip(jax.tree.leaves(cache), jax.tree.leaves(stepped)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_per_token_key_ablation_is_the_naive_quantizer():
  cache, keys, _ = streamed_cache(150, bits=2, per_channel_keys=False)
  n_q = int(cache.n_quantized)
  k_hat, _, _ = kivi.dequantize_cache(cache)
  np.testing.assert_allclose(
    np.asarray(k_hat[..., :n_q, :]),
    np.asarray(kivi.dequantize(kivi.quantize_values(keys[..., :n_q, :], bits=2))),
    rtol=1e-6,
    atol=1e-6,
  )
  q = jax.random.normal(jax.random.key(9), (2, 3, 64))
  np.testing.assert_allclose(
    np.asarray(kivi.decode_attention(q, cache, impl="xla")),
    np.asarray(kivi.decode_attention_reference(q, cache)),
    rtol=2e-5,
    atol=2e-5,
  )
  with pytest.raises(ValueError, match="per-channel keys"):
    kivi.decode_attention(q, cache, impl="pallas")


@pytest.mark.parametrize("bits", [2, 4])
def test_quantized_bytes_per_token_match_the_formula(bits):
  """With fp16 scales and zero points (as in the paper), head dim C and group G, a token costs per head
  2·C·bits/8 bytes of codes, 2·2·C/G for the keys' per-channel (scale, zero) amortised over G tokens, and 2·2·C/G
  for the values' per-token ones: 48 bytes at C = 64, 2 bits, against 256 in fp16 (5.33×)."""
  channels, g, capacity = 64, 32, 256
  cache = kivi.init_cache((1,), capacity=capacity, channels=channels, bits=bits, group_size=g, scale_dtype="float16")
  per_token = cache.quantized_nbytes / capacity
  assert per_token == 2 * channels * bits / 8 + 2 * 2 * channels / g + 2 * 2 * channels / g
  fp16_per_token = 2 * channels * 2
  assert fp16_per_token / per_token == {2: 256 / 48, 4: 256 / 80}[bits]


def test_kivi_strategy_and_bad_arguments():
  strategy = kivi.KIVI(bits=2, group_size=32, residual=64, impl="xla")
  state = strategy.init((2, 3), capacity=100, head_dim=64, dtype=jnp.float32)
  assert state.capacity == 128 and state.keys.scale.dtype == jnp.float16
  keys = jax.random.normal(jax.random.key(1), (2, 3, 90, 64))
  values = jax.random.normal(jax.random.key(2), (2, 3, 90, 64))
  state = strategy.prefill(state, keys[:, :, :89], values[:, :, :89])
  q = jax.random.normal(jax.random.key(3), (2, 3, 64))
  out, state = strategy.attend(state, q, keys[:, :, 89], values[:, :, 89])
  assert int(state.length) == 90
  np.testing.assert_allclose(
    np.asarray(out), np.asarray(kivi.decode_attention_reference(q, state)), rtol=2e-5, atol=2e-5
  )
  with pytest.raises(ValueError, match="`impl`"):
    kivi.KIVI(impl="cuda")
  with pytest.raises(ValueError, match="`bits`"):
    kivi.KIVI(bits=3)
  with pytest.raises(ValueError, match="`impl`"):
    kivi.decode_attention(q, state, impl="triton")
  with pytest.raises(ValueError, match="`q` must have shape"):
    kivi.decode_attention(q[:, :2], state)
  with pytest.raises(ValueError, match="`k` and `v`"):
    kivi.extend(state, keys[:, :2], values[:, :2])
  # Zero and negative sizes are named (group_size=0 used to end in a ZeroDivisionError or pass silently).
  for size in (0, -32):
    with pytest.raises(ValueError, match="`group_size` must be a positive int"):
      kivi.KIVI(group_size=size)
    with pytest.raises(ValueError, match="`group_size` must be a positive int"):
      kivi.init_cache((2,), 64, 32, group_size=size)
  with pytest.raises(ValueError, match="`residual` must be a positive int"):
    kivi.KIVI(residual=0)
  with pytest.raises(ValueError, match="`capacity` must be a positive int"):
    kivi.init_cache((2,), 0, 32)


def test_out_of_range_codes_never_spill_into_neighbours():
  with pytest.raises(ValueError, match=r"`codes` must lie in \[0, 4\)"):
    kivi.pack(jnp.array([5] + [0] * 15), 2)
  with pytest.raises(ValueError, match=r"`codes` must lie in \[0, 16\)"):
    kivi.pack(jnp.array([-1] + [0] * 7), 4)
  with pytest.raises(TypeError, match="integer"):
    kivi.pack(jnp.zeros(16), 2)
  # Under jit the codes cannot be checked: each is masked to its own field, so the neighbours stay 0.
  packed = jax.jit(kivi.pack, static_argnums=1)(jnp.array([5] + [0] * 15), 2)
  np.testing.assert_array_equal(kivi.unpack(packed, 2)[1:], 0)


def test_a_nan_input_dequantizes_to_nan_in_its_group_only():
  # XLA:CPU's min/max reductions drop NaN: without the explicit guard this group would dequantize to finite values.
  x = jnp.ones((2, 64, 32)).at[0, 3, 5].set(jnp.nan)
  for q in (kivi.quantize_keys(x), kivi.quantize_values(x)):
    nan = np.isnan(np.asarray(kivi.dequantize(q)))
    assert nan[0, 3, 5] and nan.sum() == 32  # the group of 32 tokens (keys) or 32 channels (values) holding it


def test_the_cache_refuses_to_overflow_and_flags_an_overflow_under_jit():
  cache = kivi.init_cache((), capacity=32, channels=32, group_size=32, residual=64)
  # The 64th residual token flushes a group: the cache holds capacity + residual - 1 = 95 tokens.
  with pytest.raises(ValueError, match="does not fit the cache"):
    kivi.extend(cache, jnp.ones((96, 32)), jnp.ones((96, 32)))
  with pytest.raises(ValueError, match="`k` and `v` must both have shape"):
    kivi.append(cache, jnp.ones(16), jnp.ones(16))
  full = kivi.extend(cache, jnp.ones((95, 32)), jnp.ones((95, 32)))
  assert (int(full.n_quantized), int(full.n_residual)) == (32, 63)
  assert bool(jnp.all(jnp.isfinite(kivi.decode_attention(jnp.ones(32), full))))
  with pytest.raises(ValueError, match="the cache is full"):
    kivi.append(full, jnp.ones(32), jnp.ones(32))
  over = jax.jit(kivi.append)(full, jnp.ones(32), jnp.ones(32))
  assert bool(kivi.overflowed(over))
  assert bool(jnp.all(jnp.isnan(kivi.decode_attention(jnp.ones(32), over))))


def test_decode_attention_times_measure_the_same_attention_on_both_caches():
  from toolkit.kernels import kivi_eval

  key = jax.random.key(3)
  t = kivi_eval.decode_attention_times(key, context=256, heads=2, head_dim=64, bits=16, repeats=2)
  # 16-bit "codes" store the keys and values exactly: both paths compute one attention (oracle: each other).
  assert t.max_abs_diff < 1e-5 and t.kivi > 0 and t.fp32 > 0
  assert t.fp32_bytes == 2 * 2 * 256 * 64 * 4
  t2 = kivi_eval.decode_attention_times(key, context=256, heads=2, head_dim=64, bits=2, repeats=1)
  assert 1e-3 < t2.max_abs_diff < 1.0 and t2.kivi_bytes < t.kivi_bytes
  with pytest.raises(ValueError, match="`context`"):
    kivi_eval.decode_attention_times(key, context=64, heads=2, head_dim=64)
  with pytest.raises(ValueError, match="`repeats`"):
    kivi_eval.decode_attention_times(key, context=256, heads=2, head_dim=64, repeats=0)


# ---------------------------------------------------------------------------------------------------------------
# Bad input


def test_bad_input_codes_and_quantized_tensors():
  for bits in (3, 16):  # 16-bit caches store values, not packed words
    with pytest.raises(ValueError, match="`bits`"):
      kivi.unpack(jnp.zeros(2, jnp.int32), bits)
  with pytest.raises(TypeError, match="`q`"):
    kivi.dequantize(jnp.zeros((4, 32)))  # the raw array, not its QuantizedTensor (an AttributeError)


def test_bad_input_cache_readers():
  cache = kivi.init_cache((2,), capacity=32, channels=32, group_size=32, residual=32)
  # One of the cache's QuantizedTensors instead of the cache: AttributeErrors.
  with pytest.raises(TypeError, match="`cache`"):
    kivi.overflowed(cache.keys)
  with pytest.raises(TypeError, match="`cache`"):
    kivi.valid_tokens(cache.keys)
  with pytest.raises(TypeError, match="`cache`"):
    kivi.dequantize_cache(cache.values)
  with pytest.raises(TypeError, match="`cache`"):
    kivi.decode_attention_xla(jnp.ones((2, 32)), cache.values)
  # A q without the batch axis was broadcast over it by the reference (a (2, 32) output for a (32,) query) and
  # failed in a reshape on the XLA path; a q of the wrong channels failed in an einsum or a multiply.
  with pytest.raises(ValueError, match="`q`"):
    kivi.decode_attention_reference(jnp.ones(32), cache)
  with pytest.raises(ValueError, match="`q`"):
    kivi.decode_attention_reference(jnp.ones((2, 16)), cache)
  with pytest.raises(ValueError, match="`q`"):
    kivi.decode_attention_xla(jnp.ones(32), cache)
  with pytest.raises(ValueError, match="`q`"):
    kivi.decode_attention_xla(jnp.ones((2, 16)), cache)


def test_kivi_eval_bad_cache_bytes_and_channel_magnitudes(key):
  config = transformer.TransformerConfig(d_model=32, num_heads=2, num_layers=1, max_len=16)
  fp = transformer.FullPrecisionCache()
  for context in (0, 8.0, True):
    with pytest.raises(ValueError, match="`context`"):
      kivi_eval.cache_bytes(fp, config, context)
  with pytest.raises(TypeError, match="`cache`"):
    kivi_eval.cache_bytes("kivi2", config, 8)
  with pytest.raises(TypeError, match="`config`"):
    kivi_eval.cache_bytes(fp, {"num_heads": 2}, 8)
  # k and v (B = 1, H = 2, 8 tokens, D = 16) in float32 and the int32 length; np.int64 is an int too.
  assert kivi_eval.cache_bytes(fp, config, np.int64(8)).residual == 2 * 2 * 8 * 16 * 4 + 4
  params = transformer.init_params(key, config)
  tokens = np.arange(16, dtype=np.int32).reshape(2, 8)
  with pytest.raises(ValueError, match=r"`tokens` must have shape \(B, T\)"):  # was an IndexError
    kivi_eval.channel_magnitudes(params, config, tokens[0])
  with pytest.raises(TypeError, match="`tokens`"):
    kivi_eval.channel_magnitudes(params, config, tokens.astype(np.float32))
  with pytest.raises(ValueError, match="`tokens` must lie in"):
    kivi_eval.channel_magnitudes(params, config, tokens + 250)
  with pytest.raises(TypeError, match="`config`"):
    kivi_eval.channel_magnitudes(params, "small", tokens)
  assert kivi_eval.channel_magnitudes(params, config, tokens).keys.shape == (1, 2, 16)


@pytest.mark.parametrize(
  "worse, better",
  [
    ([2.0, 3.0, 4.0], [1.0, 1.0]),  # unequal lengths
    ([2.0, 3.0, 4.0], [1.0]),  # used to broadcast the one value against every window
    (2.0, 1.0),  # one scalar pair: no standard error
    ([2.0], [1.0]),
    ([[2.0, 3.0], [4.0, 5.0]], [[1.0, 1.0], [1.0, 1.0]]),
  ],
)
def test_kivi_eval_paired_z_score_bad_pairs(worse, better):
  with pytest.raises(ValueError, match="`worse` and `better` must be 1-D of one length >= 2"):
    kivi_eval.paired_z_score(worse, better)
