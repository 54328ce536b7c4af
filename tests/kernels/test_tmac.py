"""T-MAC's table-lookup mixed-precision matmul against numpy oracles: exact integer agreement with
dequantize-then-matmul for 1–4 bits, the table identities (mirror, ±1 vs {0, 1}), the int8-table error bound,
Pallas (interpret) == XLA, and clear errors for bad inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.kernels import dispatch, tmac, tmac_benchmark

XLA_METHODS = (tmac.lut_gather, tmac.bitserial_matmul, tmac.onehot_lut)


def random_weights(rng, m, k, bits, group_size, kind="float"):
  """Codes, scales and zeros. ``kind="integer"``: integer scales and zeros, so Ŵ is an integer matrix;
  ``"unit"``: unit scales and zero zeros, so Ŵ is the codes; ``"float"``: float scales and fractional zeros."""
  codes = rng.integers(0, 2**bits, (m, k)).astype(np.int32)
  g = k // group_size
  if kind == "unit":
    return codes, np.ones((m, g), np.float32), np.zeros((m, g), np.float32)
  if kind == "integer":
    return (
      codes,
      rng.integers(1, 4, (m, g)).astype(np.float32),
      rng.integers(0, 2**bits, (m, g)).astype(np.float32),
    )
  scales = rng.uniform(0.01, 0.1, (m, g)).astype(np.float32)
  zeros = rng.uniform(0, 2**bits - 1, (m, g)).astype(np.float32)  # fractional, as a float minimum
  return codes, scales, zeros


def dequantized(codes, scales, zeros, group_size):
  """The oracle: Ŵ[m, k] = s[m, k // g]·(w[m, k] − z[m, k // g]) in float64."""
  return np.repeat(scales, group_size, 1).astype(np.float64) * (codes - np.repeat(zeros, group_size, 1))


# (M, K, N, group_size): M = 20 and 44 are not multiples of 8 (padded rows); K = 256, N = 1 is where jaxlib 0.10.2's
# XLA:CPU "ynn" fusion miscompiled a broadcast-multiply-sum table build under jit.
SHAPES = [(20, 64, 3, 16), (44, 96, 5, 32), (32, 256, 1, 128)]


@pytest.mark.parametrize("bits", tmac.SUPPORTED_BITS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_xla_paths_equal_dequantize_then_matmul_exactly_in_integers(bits, shape):
  m, k, n, gs = shape
  rng = np.random.default_rng(bits * 100 + m)
  codes, scales, zeros = random_weights(rng, m, k, bits, gs, kind="integer")
  w = dequantized(codes, scales, zeros, gs).astype(np.int64)
  x = rng.integers(-8, 9, (n, k)).astype(np.float32)  # integer activations: every sum is exact in float32
  expected = x.astype(np.int64) @ w.T
  packed = tmac.preprocess(codes, scales, zeros, bits=bits, group_size=gs)
  for method in XLA_METHODS:
    y = jax.jit(lambda a, p, method=method: tmac.matmul(a, p, impl="xla", algorithm=method))(x, packed)
    np.testing.assert_array_equal(np.asarray(y), expected, err_msg=method.__name__)
  np.testing.assert_array_equal(np.asarray(tmac.dequantize(packed)), w)


@pytest.mark.parametrize("bits", tmac.SUPPORTED_BITS)
def test_float_weights_match_dequantize_then_matmul(bits):
  m, k, n, gs = 44, 256, 3, 64
  rng = np.random.default_rng(bits)
  codes, scales, zeros = random_weights(rng, m, k, bits, gs)
  x = rng.normal(size=(n, k)).astype(np.float32)
  w = dequantized(codes, scales, zeros, gs)
  expected = x.astype(np.float64) @ w.T
  packed = tmac.preprocess(codes, scales, zeros, bits=bits, group_size=gs)
  np.testing.assert_allclose(np.asarray(tmac.dequantize(packed)), w, rtol=1e-6, atol=1e-7)
  for method in XLA_METHODS:
    y = np.asarray(tmac.matmul(x, packed, impl="xla", algorithm=method))
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max(), err_msg=method.__name__)


@pytest.mark.parametrize("bits", tmac.SUPPORTED_BITS)
def test_pallas_interpret_is_exact_in_integers(bits):
  """Integer activations, scales and zero points: the Pallas kernel (interpret mode) equals x·Ŵᵀ exactly."""
  m, k, n, gs = 20, 64, 3, 16
  rng = np.random.default_rng(bits)
  codes, scales, zeros = random_weights(rng, m, k, bits, gs, kind="integer")
  x = rng.integers(-8, 9, (n, k)).astype(np.float32)
  packed = tmac.preprocess(codes, scales, zeros, bits=bits, group_size=gs)
  y = tmac.matmul(x, packed, impl="pallas")
  np.testing.assert_array_equal(np.asarray(y), x.astype(np.int64) @ dequantized(codes, scales, zeros, gs).T)


def test_pallas_int8_tables_equal_xla():
  m, k, n, gs, bits = 20, 64, 3, 32, 3
  rng = np.random.default_rng(11)
  codes, scales, zeros = random_weights(rng, m, k, bits, gs)
  x = rng.normal(size=(n, k)).astype(np.float32)
  packed = tmac.preprocess(codes, scales, zeros, bits=bits, group_size=gs)
  y_xla = np.asarray(tmac.matmul(x, packed, impl="xla", int8_tables=True))
  # Both sum the same int8 lookups in int32 and rescale once per group.
  np.testing.assert_allclose(
    np.asarray(tmac.matmul(x, packed, impl="pallas", int8_tables=True)),
    y_xla,
    rtol=1e-5,
    atol=1e-6 * np.abs(y_xla).max(),
  )


@pytest.mark.slow
def test_pallas_grid_with_several_blocks_and_padding_equals_xla():
  """N = 80 (two activation-row blocks of 64), M = 520 (three weight-row blocks, the last one padded), float and
  int8 tables; about 12 s of interpret-mode compilation."""
  m, k, n, gs, bits = 520, 128, 80, 64, 3
  rng = np.random.default_rng(7)
  codes, scales, zeros = random_weights(rng, m, k, bits, gs)
  x = rng.normal(size=(n, k)).astype(np.float32)
  packed = tmac.preprocess(codes, scales, zeros, bits=bits, group_size=gs)
  expected = x.astype(np.float64) @ dequantized(codes, scales, zeros, gs).T
  for int8_tables in (False, True):
    y_pallas = np.asarray(tmac.matmul(x, packed, impl="pallas", int8_tables=int8_tables))
    y_xla = np.asarray(tmac.matmul(x, packed, impl="xla", algorithm=tmac.lut_gather, int8_tables=int8_tables))
    np.testing.assert_allclose(y_pallas, y_xla, rtol=1e-5, atol=1e-5 * np.abs(y_xla).max())
    if not int8_tables:
      np.testing.assert_allclose(y_pallas, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_tables_against_brute_force_and_the_mirror_property():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 12)).astype(np.float32)
  signed = np.asarray(tmac.build_tables(x))
  zero_one = np.asarray(tmac.build_tables(x, signed=False))
  assert signed.shape == zero_one.shape == (2, 3, 16)
  for n in range(2):
    for j in range(3):
      for p in range(16):
        bits = [(p >> t) & 1 for t in range(4)]
        quad = x[n, 4 * j : 4 * j + 4].astype(np.float64)
        np.testing.assert_allclose(zero_one[n, j, p], sum(b * v for b, v in zip(bits, quad)), atol=1e-6)
        np.testing.assert_allclose(signed[n, j, p], sum((2 * b - 1) * v for b, v in zip(bits, quad)), atol=1e-6)
  # T'[15 − p] = −T'[p], and T' = 2T − Σ_t x_t.
  np.testing.assert_allclose(signed[..., ::-1], -signed, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(signed, 2 * zero_one - x.reshape(2, 3, 4).sum(-1, keepdims=True), atol=1e-6)
  half = tmac.build_tables(x, mirrored=True)
  assert half.shape == (2, 3, 8)
  # XLA may sum the four terms of the 8- and 16-row contractions in different orders (ulp-level differences).
  np.testing.assert_allclose(np.asarray(half), signed[..., 1::2], rtol=1e-6, atol=1e-6)
  # With integer-valued activations every table entry is exact, so the mirror rebuild is bit-exact.
  x_int = rng.integers(-50, 50, size=(2, 12)).astype(np.float32)
  signed_int = np.asarray(tmac.build_tables(x_int))
  half_int = tmac.build_tables(x_int, mirrored=True)
  np.testing.assert_array_equal(signed_int[..., ::-1], -signed_int)
  np.testing.assert_array_equal(np.asarray(half_int), signed_int[..., 1::2])
  np.testing.assert_array_equal(np.asarray(tmac.expand_mirrored(half_int)), signed_int)
  np.testing.assert_allclose(np.asarray(tmac.expand_mirrored(half)), signed, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("bits", tmac.SUPPORTED_BITS)
def test_pm1_form_plus_bias_equals_zero_one_form(bits):
  """Σ_i 2^i Σ_j T_j[idx_i] = Σ_i 2^{i−1} Σ_j T'_j[idx_i] + (2^b − 1)/2 · Σ_k x_k = Σ_k x_k w_k."""
  m, k = 16, 32
  rng = np.random.default_rng(bits)
  codes, scales, zeros = random_weights(rng, m, k, bits, k, kind="unit")
  x = rng.integers(-8, 9, (k,)).astype(np.float32)
  idx = np.asarray(tmac.unpack_indices(tmac.preprocess(codes, scales, zeros, bits=bits, group_size=k)))[:, :m]
  signed, zero_one = (
    np.asarray(tmac.build_tables(x)),
    np.asarray(tmac.build_tables(x, signed=False)),
  )
  j = np.arange(k // 4)
  zero_one_form = sum(2**i * zero_one[j, idx[i]].sum(-1) for i in range(bits))
  lut_bias = signed[:, 0].sum()  # T-MAC's lut bias, Σ_j T'_j[0] = −Σ x
  pm1_form = sum(2.0 ** (i - 1) * signed[j, idx[i]].sum(-1) for i in range(bits)) - (2**bits - 1) / 2 * lut_bias
  np.testing.assert_array_equal(zero_one_form, pm1_form)
  np.testing.assert_array_equal(pm1_form, codes @ x.astype(np.int64))


def test_index_layout_and_weight_bytes():
  m, k, bits, gs = 16, 8, 2, 8
  codes = np.zeros((m, k), np.int32)
  codes[9, 4:8] = [1, 0, 1, 1]  # plane 0 of row 9, group 1: index 0b1101 = 13; plane 1: 0
  codes[2, 0:4] = [2, 2, 0, 0]  # plane 1 of row 2, group 0: index 0b0011 = 3
  packed = tmac.preprocess(codes, np.ones((m, 1), np.float16), np.zeros((m, 1), np.float16), bits=bits, group_size=gs)
  words = np.asarray(packed.indices).view(np.uint32)  # (bits, M/8, K/4)
  assert words.shape == (2, 2, 2)
  # Row 9 = slot t = 4 of word row r = 1 (rows t·M/8 + r); row 2 = slot 1 of word row 0.
  assert words[0, 1, 1] == 13 << 16 and words[1, 0, 0] == 3 << 4 and words.sum() == (13 << 16) + (3 << 4)
  # Exactly b bits per weight, plus the fp16 scales and zeros.
  assert packed.nbytes == bits * m * k // 8 + 2 * 2 * m


def test_lookup_count_is_linear_in_bits():
  counts = [
    tmac.lookup_count(
      tmac.preprocess(np.zeros((24, 64), np.int32), np.ones((24, 2)), np.zeros((24, 2)), bits=b, group_size=32),
      num_rows=5,
    )
    for b in tmac.SUPPORTED_BITS
  ]
  assert counts == [b * 5 * 24 * 16 for b in tmac.SUPPORTED_BITS]


@pytest.mark.parametrize("bits", tmac.SUPPORTED_BITS)
def test_int8_tables_error_is_within_half_a_table_step_per_lookup(bits):
  m, k, n, gs = 24, 256, 4, 64
  rng = np.random.default_rng(bits)
  codes, scales, zeros = random_weights(rng, m, k, bits, gs)
  x = rng.normal(size=(n, k)).astype(np.float32)
  tables = tmac.build_tables(x)
  q, lut_scale = tmac.quantize_tables(tables, gs)
  assert q.dtype == jnp.int8 and lut_scale.shape == (n, k // gs)
  step = np.repeat(np.asarray(lut_scale), gs // 4, axis=1)[..., None]
  assert np.all(np.abs(np.asarray(q) * step - np.asarray(tables)) <= step / 2 * (1 + 1e-6))
  packed = tmac.preprocess(codes, scales, zeros, bits=bits, group_size=gs)
  exact = np.asarray(tmac.matmul(x, packed, impl="xla"), np.float64)
  approx = np.asarray(tmac.matmul(x, packed, impl="xla", int8_tables=True), np.float64)
  # Per output: (gs/4 lookups)·(lut_scale/2) per group and plane, times the weights Σ_i 2^{i−1} and |s|.
  bound = (gs // 4) * np.asarray(lut_scale, np.float64) / 2 @ np.abs(scales.T) * (2**bits - 1) / 2
  assert np.all(np.abs(approx - exact) <= bound * (1 + 1e-4) + 1e-6)
  assert 0 < np.mean((approx - exact) ** 2) / np.mean(exact**2) < 5e-4  # the reference code's NMSE threshold


def test_int8_tables_per_plane_bound_before_weight_scale():
  """1 bit, unit scales, zero zeros, one group: y = ½ Σ_j T'_j[idx] + ½ Σx, so |Δy| ≤ ½·(K/4)·lut_scale/2."""
  m, k = 32, 128
  rng = np.random.default_rng(3)
  codes, scales, zeros = random_weights(rng, m, k, 1, k, kind="unit")
  x = rng.normal(size=(2, k)).astype(np.float32)
  packed = tmac.preprocess(codes, scales, zeros, bits=1, group_size=k)
  _, lut_scale = tmac.quantize_tables(tmac.build_tables(x), k)
  err = np.abs(np.asarray(tmac.matmul(x, packed, int8_tables=True)) - x.astype(np.float64) @ codes.T)
  per_plane = 2 * err  # the plane's lookup sum, before its weight ½
  assert np.all(per_plane <= (k // 4) * np.asarray(lut_scale) / 2 * (1 + 1e-4) + 1e-5)


def test_jit_vmap_grad_and_batch_axes():
  m, k, gs, bits = 24, 64, 32, 2
  rng = np.random.default_rng(5)
  codes, scales, zeros = random_weights(rng, m, k, bits, gs)
  x = rng.normal(size=(2, 3, k)).astype(np.float32)
  packed = jax.jit(tmac.preprocess, static_argnames=("bits", "group_size"))(
    codes, scales, zeros, bits=bits, group_size=gs
  )
  eager = np.asarray(tmac.matmul(x, packed))
  assert eager.shape == (2, 3, m)
  np.testing.assert_allclose(np.asarray(jax.jit(tmac.matmul)(x, packed)), eager, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(
    np.asarray(jax.vmap(tmac.matmul, in_axes=(0, None))(x, packed)), eager, rtol=1e-6, atol=1e-7
  )
  # d/dx Σ_m (x Ŵᵀ)_m = Σ_m Ŵ[m, :].
  grad = jax.grad(lambda a: tmac.matmul(a, packed, algorithm=tmac.lut_gather).sum())(x[0, 0])
  np.testing.assert_allclose(np.asarray(grad), dequantized(codes, scales, zeros, gs).sum(0), rtol=1e-5, atol=1e-6)
  assert dispatch.default_impl() == "xla"  # CPU


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from(tmac.SUPPORTED_BITS))
def test_random_codes_are_exact_in_integers(seed, bits):
  rng = np.random.default_rng(seed)
  codes, scales, zeros = random_weights(rng, 16, 32, bits, 16, kind="integer")
  x = rng.integers(-100, 101, (2, 32)).astype(np.float32)
  packed = tmac.preprocess(codes, scales, zeros, bits=bits, group_size=16)
  expected = x.astype(np.int64) @ dequantized(codes, scales, zeros, 16).T
  np.testing.assert_array_equal(np.asarray(tmac.matmul(x, packed, algorithm=tmac.lut_gather)), expected)


def test_bad_inputs_raise_clear_errors():
  codes = np.zeros((8, 32), np.int32)
  ones, zeros = np.ones((8, 2), np.float32), np.zeros((8, 2), np.float32)
  for bits in (0, 5, 2.0, True):
    with pytest.raises(ValueError, match="`bits` must be one of"):
      tmac.preprocess(codes, ones, zeros, bits=bits, group_size=16)
  with pytest.raises(ValueError, match="multiple of 4"):
    tmac.preprocess(np.zeros((8, 30), np.int32), np.ones((8, 2)), np.zeros((8, 2)), bits=2, group_size=15)
  with pytest.raises(ValueError, match="`group_size` must be a multiple of 4"):
    tmac.preprocess(codes, np.ones((8, 4)), np.zeros((8, 4)), bits=2, group_size=6)
  with pytest.raises(ValueError, match="multiple of `group_size`"):
    tmac.preprocess(codes, ones, zeros, bits=2, group_size=12)
  too_big = codes.copy()
  too_big[3, 5] = 4
  with pytest.raises(ValueError, match=r"`codes` must lie in \[0, 4\)"):
    tmac.preprocess(too_big, ones, zeros, bits=2, group_size=16)
  with pytest.raises(ValueError, match=r"`codes` must lie in"):
    tmac.preprocess(codes - 1, ones, zeros, bits=2, group_size=16)
  with pytest.raises(TypeError, match="`codes` must be an integer array"):
    tmac.preprocess(codes.astype(np.float32), ones, zeros, bits=2, group_size=16)
  with pytest.raises(ValueError, match=r"`scales` must have shape \(M, K / group_size\) = \(8, 2\)"):
    tmac.preprocess(codes, np.ones((8, 4)), zeros, bits=2, group_size=16)
  with pytest.raises(ValueError, match="`zeros` must have shape"):
    tmac.preprocess(codes, ones, np.zeros((2, 8)), bits=2, group_size=16)
  with pytest.raises(TypeError, match="`scales` must be a floating array"):
    tmac.preprocess(codes, np.ones((8, 2), np.int32), zeros, bits=2, group_size=16)
  packed = tmac.preprocess(codes, ones, zeros, bits=2, group_size=16)
  with pytest.raises(ValueError, match="must equal K = 32"):
    tmac.matmul(np.ones((3, 16), np.float32), packed)
  with pytest.raises(TypeError, match="`x` must be a floating array"):
    tmac.matmul(np.ones((3, 32), np.int32), packed)
  with pytest.raises(ValueError, match="`impl` must be one of"):
    tmac.matmul(np.ones((3, 32), np.float32), packed, impl="triton")
  with pytest.raises(TypeError, match="`algorithm` must be None or a function"):
    tmac.matmul(np.ones((3, 32), np.float32), packed, algorithm="gather")
  with pytest.raises(ValueError, match="needs algorithm=lut_gather"):
    tmac.matmul(np.ones((3, 32), np.float32), packed, int8_tables=True, algorithm=tmac.bitserial_matmul)
  with pytest.raises(ValueError, match="must be None with impl='pallas'"):
    tmac.matmul(np.ones((3, 32), np.float32), packed, impl="pallas", algorithm=tmac.lut_gather)
  with pytest.raises(TypeError, match="`packed` must be the TMACWeights"):
    tmac.matmul(np.ones((3, 32), np.float32), {"indices": None})


@pytest.mark.parametrize("shape", [(0, 32), (3, 0, 32)])
def test_an_empty_batch_gives_the_empty_product(shape):
  # Oracle: numpy's (…, 0, K) @ (K, M) is an empty (…, 0, M) array; every path used to divide by N = 0.
  rng = np.random.default_rng(0)
  codes, scales, zeros = random_weights(rng, 20, 32, 3, 16)
  packed = tmac.preprocess(codes, scales, zeros, bits=3, group_size=16)
  x = np.ones(shape, np.float16)
  expected = x @ dequantized(codes, scales, zeros, 16).T
  for kwargs in ({}, {"int8_tables": True}, {"impl": "pallas", "interpret": True}) + tuple(
    {"algorithm": a} for a in XLA_METHODS
  ):
    y = tmac.matmul(x, packed, **kwargs)
    assert y.shape == expected.shape and y.dtype == jnp.float16, kwargs
    assert jax.jit(lambda x, kw=kwargs: tmac.matmul(x, packed, **kw))(x).shape == expected.shape


# ---------------------------------------------------------------------------------------------------------------
# Bad input


def tiny_packed():
  """2-bit (8, 32) weights in groups of 16, the shapes of ``test_bad_inputs_raise_clear_errors``."""
  codes = np.zeros((8, 32), np.int32)
  return tmac.preprocess(codes, np.ones((8, 2), np.float32), np.zeros((8, 2), np.float32), bits=2, group_size=16)


def test_bad_input_tables():
  with pytest.raises(ValueError, match="`x`"):
    tmac.build_tables(np.ones((2, 6), np.float32))  # K not a multiple of 4
  with pytest.raises(TypeError, match="`x`"):
    tmac.build_tables(np.ones((2, 8), np.int32))
  with pytest.raises(ValueError, match="`mirrored=True`"):
    tmac.build_tables(np.ones((2, 8), np.float32), signed=False, mirrored=True)
  with pytest.raises(ValueError, match="`half`"):
    tmac.expand_mirrored(np.ones((2, 16), np.float32))  # a full table, not its 8 odd entries
  tables = np.ones((2, 8, 16), np.float32)  # K = 32
  # 0 ended in a ZeroDivisionError, -4 and 8.0 in cryptic reshape errors.
  for group_size in (0, -4, 8.0, 12):
    with pytest.raises(ValueError, match="`group_size`"):
      tmac.quantize_tables(tables, group_size)
  with pytest.raises(ValueError, match="`tables`"):
    tmac.quantize_tables(np.ones(16, np.float32), 16)  # one table without its K/4 axis (an IndexError)


def test_bad_input_packed_weights():
  packed = tiny_packed()
  # The raw index words instead of the TMACWeights: AttributeErrors or "too many values to unpack".
  with pytest.raises(TypeError, match="`packed`"):
    tmac.unpack_indices(packed.indices)
  with pytest.raises(TypeError, match="`packed`"):
    tmac.dequantize(packed.indices)
  with pytest.raises(TypeError, match="`packed`"):
    tmac.lookup_count(packed.indices, 1)
  # An integer dtype truncated the fractional zero points: wrong weights, silently.
  with pytest.raises(TypeError, match="`dtype`"):
    tmac.dequantize(packed, jnp.int32)
  # A negative or fractional row count was multiplied in.
  for num_rows in (-1, 2.5):
    with pytest.raises(ValueError, match="`num_rows`"):
      tmac.lookup_count(packed, num_rows)


def test_bad_input_xla_formulations():
  packed = tiny_packed()
  x2 = np.ones((3, 32), np.float32)
  # A K that is not the weights' or a missing N axis failed in a reshape deep inside.
  with pytest.raises(ValueError, match="`x2`"):
    tmac.lut_gather(np.ones((3, 16), np.float32), packed)
  with pytest.raises(ValueError, match="`x2`"):
    tmac.bitserial_matmul(np.ones((3, 16), np.float32), packed)
  with pytest.raises(ValueError, match="`x2`"):
    tmac.onehot_lut(np.ones(32, np.float32), packed)
  with pytest.raises(TypeError, match="`x2`"):
    tmac.bitserial_matmul(np.ones((3, 32), np.int32), packed)
  with pytest.raises(TypeError, match="`packed`"):
    tmac.lut_gather(x2, packed.indices)
  with pytest.raises(ValueError, match="`int8_tables=True`"):
    tmac.bitserial_matmul(x2, packed, int8_tables=True)
  with pytest.raises(ValueError, match="`int8_tables=True`"):
    tmac.onehot_lut(x2, packed, int8_tables=True)


# ---------------------------------------------------------------------------------------------------------------
# The benchmark's constructions and tables (toolkit.kernels.tmac_benchmark): only the checks, which fire before
# anything is compiled or timed.

SIZES = {"m": 8, "k": 64, "group_size": 32}
BAD_SIZES = [
  ({"m": 0}, "`m`"),
  ({"k": 48}, "`k` \\(48\\) must be a multiple of `group_size`"),  # the last 16 columns had no scale
  ({"group_size": 0}, "`group_size`"),
  ({"k": 64.0}, "`k`"),
]


@pytest.mark.parametrize("sizes, match", BAD_SIZES + [({"bits": 5}, "`bits`"), ({"bits": True}, "`bits`")])
def test_tmac_benchmark_random_weights_bad_sizes(key, sizes, match):
  kwargs = {**SIZES, "bits": 2, **sizes}
  with pytest.raises(ValueError, match=match):
    tmac_benchmark.random_weights(key, **kwargs)


def test_tmac_benchmark_bad_bandwidth_and_method():
  with pytest.raises(ValueError, match="`mib`"):  # an empty array: a bandwidth of 0 / ~0 s
    tmac_benchmark.measure_bandwidth(0)
  with pytest.raises(ValueError, match="`num_repeats`"):  # the median of no times
    tmac_benchmark.measure_bandwidth(1, num_repeats=0)
  with pytest.raises(ValueError, match="`method` must be one of"):
    tmac_benchmark.method_fn("int8")


@pytest.mark.parametrize(
  "args, match",
  [(sizes, match) for sizes, match in BAD_SIZES]
  + [
    ({"n": 0}, "`n`"),
    ({"num_repeats": 0}, "`num_repeats`"),
    ({"bits_list": ()}, "`bits_list`"),
    ({"bits_list": (2, 5)}, "`bits_list`"),  # 5 used to fail only after 2 was compiled
    ({"methods": "lut"}, "`methods`"),  # a bare string was the methods "l", "u", "t"
    ({"methods": ("lut", "gemm")}, "`methods`"),
    ({"methods": ()}, "`methods`"),
  ],
)
def test_tmac_benchmark_time_sweep_bad_arguments(key, args, match):
  kwargs = {**SIZES, "n": 1, "bits_list": (1, 2), "methods": ("lut",), "num_repeats": 1, **args}
  with pytest.raises(ValueError, match=match):
    tmac_benchmark.time_sweep(key, **kwargs)


@pytest.mark.parametrize(
  "args, match",
  [(sizes, match) for sizes, match in BAD_SIZES]
  + [
    ({"n": 0}, "`n`"),
    ({"bits_list": []}, "`bits_list`"),  # was max() of an empty sequence
    ({"pallas_bits": (3,)}, "`pallas_bits` must be a subset of `bits_list`"),  # 3 was silently never run
  ],
)
def test_tmac_benchmark_exact_check_bad_arguments(key, args, match):
  kwargs = {**SIZES, "n": 2, "bits_list": (2,), "pallas_bits": (2,), **args}
  with pytest.raises(ValueError, match=match):
    tmac_benchmark.exact_check(key, **kwargs)


@pytest.mark.parametrize(
  "bits, times, match",
  [
    ([1, 2, 3], [1.0, 2.0], "`bits` and `times`"),
    ([2], [1.0], "`bits` and `times`"),
    ([2, 2, 2], [1.0, 2.0, 3.0], "`bits` must hold at least two distinct values"),  # an undetermined slope
    ([1, 2, 3], [1.0, np.nan, 3.0], "`times` must be finite"),  # was a NaN fit
    ([1, np.inf], [1.0, 2.0], "`bits` must be finite"),
  ],
)
def test_tmac_benchmark_linear_fit_bad_points(bits, times, match):
  with pytest.raises(ValueError, match=match):
    tmac_benchmark.linear_fit(bits, times)


ROW = {
  "n": 1,
  "bits": 2,
  "m": 8,
  "k": 64,
  "ms": {"lut": 1.0, "dequant": 2.0},
  "weight_bytes": 160,
  "fp16_bytes": 1024,
  "lookups": 32,
}


def test_tmac_benchmark_bad_rows_and_bandwidth():
  for bandwidth in (0.0, -1.0, np.nan):
    with pytest.raises(ValueError, match="`bandwidth_gbs`"):
      tmac_benchmark.with_bounds(ROW, bandwidth)
    with pytest.raises(ValueError, match="`bandwidth_gbs`"):
      tmac_benchmark.table_lines([tmac_benchmark.with_bounds(ROW, 10.0)], bandwidth)
  with pytest.raises(ValueError, match="`result`"):
    tmac_benchmark.with_bounds({"m": 8, "k": 64}, 10.0)
  for results in ([], {"n": 1}, [{"n": 1, "bits": 2}]):  # [] used to give no fits at all, silently
    with pytest.raises(ValueError, match="`results`"):
      tmac_benchmark.fits(results)
    with pytest.raises(ValueError, match="`results`"):
      tmac_benchmark.table_lines(results, 10.0)
  with pytest.raises(ValueError, match="`results`.*bandwidth_bound_ms"):  # a row that skipped with_bounds
    tmac_benchmark.table_lines([ROW], 10.0)
  with pytest.raises(ValueError, match="`bits`"):  # one bit width per N: no line to fit
    tmac_benchmark.fits([ROW])
  rows = [tmac_benchmark.with_bounds({**ROW, "bits": b, "ms": {"lut": float(b)}}, 10.0) for b in (1, 2)]
  assert tmac_benchmark.fits(rows)[1, "lut"]["slope_ms_per_bit"] == pytest.approx(1.0)
  assert len(tmac_benchmark.table_lines(rows, 10.0)) == 2 + 2 + 5 + 1
