"""RTN, GPTQ and LoRC against oracles: brute-force nearest grid points, the s/2 bound, an independent numpy GPTQ
(the OBQ inverse-Hessian elimination recalled in GPTQ Sec. 3: no Cholesky, no lazy blocks), GPTQ = RTN when XᵀX ∝ I,
Eckart–Young for LoRC, and the model-level wrapper against per-layer calls on a small flax model."""

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.quant import zeroquant as zq

# One XLA compilation per shape and static configuration (an eager call compiles each of its loops separately).
gptq = jax.jit(zq.gptq, static_argnames=("bits", "group_size", "block_size", "symmetric"))


# ------------------------------------------------------------------------------------------------------------------
# numpy oracles


def np_params(g, bits, symmetric):
  """Scale and zero point of each row of g (the formulas of the module docstring)."""
  if symmetric:
    scale = np.abs(g).max(-1) / (2 ** (bits - 1) - 1)
    zero = np.zeros_like(scale)
  else:
    lo, hi = np.minimum(g.min(-1), 0), np.maximum(g.max(-1), 0)
    scale = (hi - lo) / (2**bits - 1)
  scale = np.where(scale > 0, scale, 1.0)
  if not symmetric:
    zero = np.round(-lo / scale)
  return scale, zero


def np_codes(bits, symmetric):
  return np.arange(-(2 ** (bits - 1)), 2 ** (bits - 1)) if symmetric else np.arange(2**bits)


def np_quant(col, scale, zero, bits, symmetric):
  codes = np_codes(bits, symmetric)
  return scale * (np.clip(np.round(col / scale) + zero, codes[0], codes[-1]) - zero)


def np_gptq_obs(w, x, bits, group_size=None, damp=0.01, symmetric=False):
  """GPTQ one column at a time with the explicit inverse Hessian of the remaining columns (the OBQ update of GPTQ
  Sec. 3): δ = −(w_q − q)/[H⁻¹]_qq · H⁻¹[q, :], then q is eliminated from H⁻¹ (Gaussian elimination)."""
  w = np.array(w, np.float64)
  x = np.array(x, np.float64).reshape(-1, w.shape[1])
  _, cols = w.shape
  h = 2 * x.T @ x / x.shape[0]
  if group_size is None:
    scale, zero = np_params(w, bits, symmetric)
  dead = np.diag(h) == 0
  h[dead, dead] = 1
  w[:, dead] = 0
  h += damp * np.mean(np.diag(h)) * np.eye(cols)
  h_inv = np.linalg.inv(h)
  q = np.zeros_like(w)
  for c in range(cols):
    if group_size is not None and c % group_size == 0:
      scale, zero = np_params(w[:, c : c + group_size], bits, symmetric)
    q[:, c] = np_quant(w[:, c], scale, zero, bits, symmetric)
    d = h_inv[c, c]
    w[:, c + 1 :] -= np.outer((w[:, c] - q[:, c]) / d, h_inv[c, c + 1 :])
    h_inv = h_inv - np.outer(h_inv[:, c], h_inv[c, :]) / d
  return q


def correlated_inputs(key, n, d):
  """Inputs with strongly correlated channels of uneven scale, as LLM activations have."""
  k1, k2, k3 = jax.random.split(key, 3)
  mix = jax.random.normal(k1, (d, d)) / np.sqrt(d)
  x = jax.random.normal(k2, (n, d)) @ mix + 0.1 * jax.random.normal(k3, (n, d))
  return x * jnp.exp(jax.random.normal(k3, (d,)))


def output_error(w, w_hat, x):
  return float(jnp.linalg.norm(x @ w.T - x @ w_hat.T))


# ------------------------------------------------------------------------------------------------------------------
# RTN


@pytest.mark.parametrize("bits,symmetric", [(2, False), (3, False), (4, True), (3, True), (8, False)])
def test_rtn_is_the_nearest_point_of_the_brute_force_grid(bits, symmetric):
  w = np.asarray(jax.random.normal(jax.random.key(bits), (4, 12))) + np.array([0, 0, 2, -1.5], np.float32)[:, None]
  params = zq.rtn_params(w, bits=bits, group_size=4, symmetric=symmetric)
  scale, zero = np_params(w.reshape(4, 3, 4), bits, symmetric)
  np.testing.assert_allclose(np.asarray(params.scale), scale, rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(params.zero), zero)
  if not symmetric:
    assert zero.min() >= 0 and zero.max() <= 2**bits - 1  # the zero point fits in b bits
  w_hat = np.asarray(zq.rtn(w, bits=bits, group_size=4, symmetric=symmetric))
  for i, j in itertools.product(range(4), range(12)):
    s, z = scale[i, j // 4], zero[i, j // 4]
    grid = s * (np_codes(bits, symmetric) - z)
    # Neighbouring grid points are s apart: a tolerance of s/1000 tells the right point from any other.
    assert abs(w_hat[i, j] - grid[np.argmin(np.abs(grid - w[i, j]))]) <= 1e-3 * s
  # The grid's extremes: symmetric reaches ±max|g| (−2^{b−1} s is unused headroom); asymmetric spans [min, max].
  if symmetric:
    np.testing.assert_allclose(np.abs(w_hat.reshape(4, 3, 4)).max(-1), np.abs(w.reshape(4, 3, 4)).max(-1), rtol=1e-6)


@settings(max_examples=25, deadline=None)
@given(
  st.integers(0, 2**31 - 1),
  st.sampled_from(zq.SUPPORTED_BITS),
  st.booleans(),
  st.floats(1e-3, 1e3),
  st.floats(-3.0, 3.0),
)
def test_rtn_error_is_at_most_half_a_step(seed, bits, symmetric, spread, offset):
  # The offset makes all-positive or all-negative groups, where the asymmetric range is widened to contain 0.
  w = spread * (jax.random.normal(jax.random.key(seed), (8, 32)) + offset)
  params = zq.rtn_params(w, bits=bits, group_size=16, symmetric=symmetric)
  err = jnp.abs(zq.rtn(w, bits=bits, group_size=16, symmetric=symmetric) - w)
  step = jnp.repeat(params.scale, 16, axis=1)
  assert bool(jnp.all(err <= 0.5 * step * (1 + 1e-5)))


def test_rtn_all_zero_group_and_exact_zero():
  w = jnp.concatenate([jnp.zeros((3, 8)), jax.random.normal(jax.random.key(0), (3, 8))], axis=1)
  for symmetric in (False, True):
    out = zq.rtn(w, bits=3, group_size=8, symmetric=symmetric)
    assert bool(jnp.all(jnp.isfinite(out)))
    np.testing.assert_array_equal(np.asarray(out[:, :8]), 0.0)


def test_per_group_beats_per_row_and_more_bits_beat_fewer():
  w = jax.random.normal(jax.random.key(1), (64, 128))
  w = w.at[:, ::37].mul(8.0)  # a few outlier input channels per row, as in LLM weights
  err = {(b, g): float(jnp.sum((zq.rtn(w, bits=b, group_size=g) - w) ** 2)) for b in (3, 4, 8) for g in (None, 64, 16)}
  for b in (3, 4, 8):
    assert err[(b, 16)] < err[(b, 64)] < err[(b, None)]
  for g in (None, 64, 16):
    assert err[(8, g)] < err[(4, g)] < err[(3, g)]


def test_rtn_jit_and_vmap_agree():
  ws = jax.random.normal(jax.random.key(2), (3, 16, 32))
  loop = jnp.stack([zq.rtn(w, bits=4, group_size=8) for w in ws])
  vmapped = jax.vmap(lambda w: zq.rtn(w, bits=4, group_size=8))(ws)
  jitted = jax.jit(zq.rtn, static_argnames=("bits", "group_size", "symmetric"))(ws[0], bits=4, group_size=8)
  np.testing.assert_allclose(np.asarray(vmapped), np.asarray(loop), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(np.asarray(jitted), np.asarray(loop[0]), rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------------------------------------
# Input checks


@pytest.mark.parametrize("bits", [0, 1, 9, 16, 4.0, True, "4"])
def test_unsupported_bits_raise(bits):
  w = jnp.ones((4, 8))
  with pytest.raises(ValueError, match="`bits`"):
    zq.rtn(w, bits=bits)
  with pytest.raises(ValueError, match="`bits`"):
    zq.gptq(w, jnp.ones((16, 8)), bits=bits)
  with pytest.raises(ValueError, match="`bits`"):
    zq.lorc(w, w, rank=1, factor_bits=bits)


def test_bad_shapes_and_arguments_raise():
  w = jnp.ones((4, 8))
  with pytest.raises(ValueError, match="`x` must have shape .* in = 8"):
    zq.gptq(w, jnp.ones((16, 6)), bits=4)
  with pytest.raises(ValueError, match="`w` must be a 2-D"):
    zq.rtn(jnp.ones(8), bits=4)
  with pytest.raises(TypeError, match="`w` must be a floating"):
    zq.rtn(jnp.ones((4, 8), jnp.int32), bits=4)
  with pytest.raises(ValueError, match="`group_size`"):
    zq.rtn(w, bits=4, group_size=3)
  with pytest.raises(ValueError, match="`group_size`"):
    zq.gptq(w, jnp.ones((16, 8)), bits=4, group_size=16)
  with pytest.raises(ValueError, match="`block_size`"):
    zq.gptq(w, jnp.ones((16, 8)), bits=4, block_size=0)
  with pytest.raises(ValueError, match="`h` must be"):
    zq.gptq_from_hessian(w, jnp.eye(6), bits=4)
  with pytest.raises(ValueError, match="`rank`"):
    zq.lorc(w, w, rank=5)
  with pytest.raises(ValueError, match="`w_hat`"):
    zq.lorc(w, jnp.ones((8, 4)), rank=2)
  with pytest.raises(TypeError, match="`algorithm`"):
    zq.quantize_dense_layers({"params": {"d": {"kernel": w}}}, algorithm="awq", bits=4)
  # A bare string used to exclude nothing (its characters name no layer).
  with pytest.raises(TypeError, match="`exclude` must be a sequence of layer names"):
    zq.quantize_dense_layers({"params": {"d": {"kernel": w}}}, algorithm=zq.RTNQuantizer(), bits=4, exclude="d")
  # The checks run at trace time, under jit too.
  with pytest.raises(ValueError, match="`bits`"):
    jax.jit(lambda a: zq.rtn(a, bits=1))(w)


# ------------------------------------------------------------------------------------------------------------------
# GPTQ


@pytest.mark.parametrize(
  "bits,group_size,block_size,symmetric",
  [
    (3, None, 8, False),  # several lazy blocks, per-row grid
    (4, 8, 8, True),  # one group per block
    (2, 8, 16, False),  # two groups per block
    (3, 8, 12, False),  # block rounded up to a multiple of the group
    (4, None, 20, False),  # 32 columns padded to 40
  ],
)
def test_gptq_matches_the_independent_numpy_obs_formulation(x64, bits, group_size, block_size, symmetric):
  k1, k2 = jax.random.split(jax.random.key(bits))
  w = jax.random.normal(k1, (16, 32), jnp.float64)
  x = correlated_inputs(k2, 96, 32).astype(jnp.float64)
  x = x.at[:, 5].set(0.0)  # a dead input channel
  got = gptq(w, x, bits=bits, group_size=group_size, block_size=block_size, symmetric=symmetric)
  assert got.dtype == jnp.float64
  want = np_gptq_obs(w, x, bits, group_size, symmetric=symmetric)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-9, atol=1e-9)
  assert np.all(np.asarray(got)[:, 5] == 0)


def test_gptq_does_not_depend_on_block_size(x64):
  k1, k2 = jax.random.split(jax.random.key(3))
  w = jax.random.normal(k1, (8, 48), jnp.float64)
  x = correlated_inputs(k2, 128, 48).astype(jnp.float64)
  ref = gptq(w, x, bits=3, group_size=16, block_size=128)
  for block_size in (1, 24, 40):
    np.testing.assert_allclose(
      np.asarray(gptq(w, x, bits=3, group_size=16, block_size=block_size)),
      np.asarray(ref),
      rtol=1e-10,
      atol=1e-10,
    )


@pytest.mark.parametrize("bits,group_size", [(4, None), (3, None), (4, 32), (3, 32)])
def test_gptq_beats_rtn_on_correlated_inputs(bits, group_size):
  k1, k2 = jax.random.split(jax.random.key(4))
  w = jax.random.normal(k1, (64, 128))
  x = correlated_inputs(k2, 512, 128)
  rtn_err = output_error(w, zq.rtn(w, bits=bits, group_size=group_size), x)
  gptq_err = output_error(w, gptq(w, x, bits=bits, group_size=group_size), x)
  assert gptq_err < 0.9 * rtn_err


@pytest.mark.parametrize("group_size,symmetric", [(None, False), (32, False), (None, True)])
def test_gptq_is_rtn_when_the_hessian_is_a_multiple_of_identity(group_size, symmetric):
  # X = √n · (orthonormal columns): XᵀX/n = I, the inverse Hessian is diagonal and no error is propagated.
  q, _ = np.linalg.qr(np.asarray(jax.random.normal(jax.random.key(5), (256, 128)), np.float64))
  x = jnp.asarray(np.sqrt(256) * q, jnp.float32)
  w = jax.random.normal(jax.random.key(6), (64, 128))
  np.testing.assert_allclose(
    np.asarray(gptq(w, x, bits=3, group_size=group_size, symmetric=symmetric)),
    np.asarray(zq.rtn(w, bits=3, group_size=group_size, symmetric=symmetric)),
    atol=1e-6,
  )


def test_gptq_float32_jit_no_jit_and_float64_agree():
  k1, k2 = jax.random.split(jax.random.key(7))
  w = jax.random.normal(k1, (32, 64))
  x = correlated_inputs(k2, 256, 64)
  eager = zq.gptq(w, x, bits=4, group_size=16, block_size=32)
  jitted = gptq(w, x, bits=4, group_size=16, block_size=32)
  assert eager.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), atol=1e-5)
  # float32 rounding can move a value across a rounding boundary and change the path of the rest of its row;
  # nearly all entries still agree with the float64 oracle.
  want = np_gptq_obs(w, x, 4, 16)
  assert np.mean(np.isclose(np.asarray(eager), want, atol=1e-4)) > 0.97


# ------------------------------------------------------------------------------------------------------------------
# LoRC


@pytest.mark.parametrize("shape", [(64, 128), (128, 64)])  # both Gram-matrix branches
def test_lorc_error_is_the_svd_tail_and_decreases_with_rank(shape):
  k1, k2 = jax.random.split(jax.random.key(8))
  w = jax.random.normal(k1, shape)
  w_hat = gptq(w, correlated_inputs(k2, 256, shape[1]), bits=3)
  sigma = np.linalg.svd(np.asarray(w - w_hat, np.float64), compute_uv=False)
  errors = []
  for rank in (1, 4, 8, 32):
    f = zq.lorc(w, w_hat, rank=rank)
    assert f.u.shape == (shape[0], rank) and f.v.shape == (rank, shape[1])
    err = float(jnp.sum((w - w_hat - f.u @ f.v) ** 2))
    np.testing.assert_allclose(err, np.sum(sigma[rank:] ** 2), rtol=1e-4)
    # Û = U_m Σ^½ and V̂ = Σ^½ V_mᵀ: both Gram matrices are diag(σ_1..σ_m).
    np.testing.assert_allclose(np.asarray(f.u.T @ f.u), np.diag(sigma[:rank]), atol=1e-4 * sigma[0])
    np.testing.assert_allclose(np.asarray(f.v @ f.v.T), np.diag(sigma[:rank]), atol=1e-4 * sigma[0])
    errors.append(err)
  assert errors == sorted(errors, reverse=True) and errors[-1] < errors[0]


def test_lorc_with_8_bit_factors_stays_close_to_float_factors():
  w = jax.random.normal(jax.random.key(9), (64, 128))
  w_hat = zq.rtn(w, bits=3)
  e = w - w_hat
  f = zq.lorc(w, w_hat, rank=8)
  float_err = float(jnp.linalg.norm(e - f.u @ f.v))
  f8 = zq.lorc(w, w_hat, rank=8, factor_bits=8)
  q_err = float(jnp.linalg.norm(e - f8.u @ f8.v))
  assert float_err <= q_err < float_err * 1.01 < float(jnp.linalg.norm(e))
  # Each column of Û and each row of V̂ lies on its own symmetric 8-bit grid.
  for vec in list(f8.u.T) + list(f8.v):
    s = float(jnp.max(jnp.abs(vec))) / 127
    np.testing.assert_allclose(np.asarray(vec) / s, np.round(np.asarray(vec) / s), atol=1e-3)


# ------------------------------------------------------------------------------------------------------------------
# Whole models


class TwoBranch(nn.Module):
  """Two Dense layers reading the same input (like q/k/v), then one reading their product, then a head."""

  @nn.compact
  def __call__(self, x):
    a = nn.Dense(32, name="a")(x)
    b = nn.Dense(32, use_bias=False, name="b")(x)
    h = nn.gelu(a * b)
    h = nn.Dense(16, name="c")(h)
    return nn.Dense(8, name="head")(jnp.tanh(h))


@pytest.fixture(scope="module")
def small_model():
  model = TwoBranch()
  params = model.init(jax.random.key(0), jnp.ones((1, 16)))
  batches = [correlated_inputs(jax.random.key(i), 64, 16) for i in range(3)]
  return model, params, batches


def test_dense_input_hessians_match_the_recorded_inputs(small_model):
  model, params, batches = small_model
  hs = zq.dense_input_hessians(model.apply, params, batches)
  assert list(hs) == [("a",), ("b",), ("c",), ("head",)]  # call order
  x = jnp.concatenate(batches)
  np.testing.assert_allclose(np.asarray(hs[("a",)]), np.asarray(zq.hessian(x)), rtol=1e-4, atol=1e-4)
  p = params["params"]
  hidden = nn.gelu((x @ p["a"]["kernel"] + p["a"]["bias"]) * (x @ p["b"]["kernel"]))
  np.testing.assert_allclose(np.asarray(hs[("c",)]), np.asarray(zq.hessian(hidden)), rtol=1e-4, atol=1e-4)


def test_quantize_model_rtn_is_per_layer_rtn_and_the_size_report_adds_up(small_model):
  model, params, _ = small_model
  out = zq.quantize_model(
    model.apply,
    params,
    algorithm=zq.RTNQuantizer(),
    bits=4,
    group_size=8,
    lorc_rank=2,
    lorc_bits=8,
    exclude=("head",),
  )
  assert out.layers == (("a",), ("b",), ("c",))
  for name in ("a", "b", "c"):
    kernel = params["params"][name]["kernel"]
    w_hat = zq.rtn(kernel.T, bits=4, group_size=8)
    f = zq.lorc(kernel.T, w_hat, rank=2, factor_bits=8)
    np.testing.assert_allclose(
      np.asarray(out.params["params"][name]["kernel"]), np.asarray((w_hat + f.u @ f.v).T), atol=1e-6
    )
  np.testing.assert_array_equal(
    np.asarray(out.params["params"]["head"]["kernel"]),
    np.asarray(params["params"]["head"]["kernel"]),
  )
  np.testing.assert_array_equal(
    np.asarray(out.params["params"]["a"]["bias"]), np.asarray(params["params"]["a"]["bias"])
  )
  s = out.size
  quantized = 3 * 16 * 32
  total = quantized + 32 + 16 + (16 * 8 + 8)  # + the biases of a and c, and the whole head
  assert (s.quantized_params, s.other_params) == (quantized, total - quantized)
  assert s.weight_bytes == 4 * quantized / 8
  assert s.scale_bytes == (32 * 2 + 32 * 2 + 16 * 4) * (16 + 4) / 8  # groups × (fp16 scale + 4-bit zero)
  assert s.lorc_params == 2 * (32 + 16) * 2 + 2 * (16 + 32)
  assert s.lorc_bytes == (s.lorc_params * 8 + 3 * 2 * 2 * 16) / 8
  assert s.fp32_bytes == 4 * total and s.fp16_bytes == 2 * total
  assert s.total_bytes == s.weight_bytes + s.scale_bytes + s.lorc_bytes + 2 * (total - quantized)
  assert s.lorc_fraction == s.lorc_params / quantized


def test_quantize_model_gptq_is_sequential(small_model):
  model, params, batches = small_model
  out = zq.quantize_model(model.apply, params, batches, algorithm=zq.GPTQQuantizer(block_size=8), bits=3)
  p, q = params["params"], out.params["params"]
  x = jnp.concatenate(batches)
  quantize = lambda k, inputs: gptq(k.T, inputs, bits=3, block_size=8).T
  # a and b read the model input, the same before and after quantization.
  for name in ("a", "b"):
    np.testing.assert_allclose(np.asarray(q[name]["kernel"]), np.asarray(quantize(p[name]["kernel"], x)), atol=1e-5)
  # c is calibrated on the output of the already-quantized a and b, not on the full-precision one.
  hidden_q = nn.gelu((x @ q["a"]["kernel"] + p["a"]["bias"]) * (x @ q["b"]["kernel"]))
  np.testing.assert_allclose(np.asarray(q["c"]["kernel"]), np.asarray(quantize(p["c"]["kernel"], hidden_q)), atol=1e-4)
  one_shot = zq.quantize_model(
    model.apply, params, batches, algorithm=zq.GPTQQuantizer(block_size=8), bits=3, sequential=False
  )
  hidden = nn.gelu((x @ p["a"]["kernel"] + p["a"]["bias"]) * (x @ p["b"]["kernel"]))
  np.testing.assert_allclose(
    np.asarray(one_shot.params["params"]["c"]["kernel"]),
    np.asarray(quantize(p["c"]["kernel"], hidden)),
    atol=1e-4,
  )
  assert not np.allclose(np.asarray(one_shot.params["params"]["c"]["kernel"]), np.asarray(q["c"]["kernel"]))
  # The quantized model is closer to the full-precision one than RTN's.
  ref = model.apply(params, x)
  rtn_params = zq.quantize_model(model.apply, params, algorithm=zq.RTNQuantizer(), bits=3).params
  assert float(jnp.linalg.norm(model.apply(out.params, x) - ref)) < float(
    jnp.linalg.norm(model.apply(rtn_params, x) - ref)
  )


def rtn_as_plain_function(w, h, *, bits, group_size, symmetric):
  del h
  return zq.rtn(w, bits=bits, group_size=group_size, symmetric=symmetric)


rtn_as_plain_function.uses_hessian = False


def test_a_plain_function_is_a_weight_quantizer():
  kernel = jax.random.normal(jax.random.key(3), (32, 8))
  params = {"params": {"a": {"kernel": kernel}, "b": {"kernel": kernel[:8]}}}
  by_object = zq.quantize_dense_layers(params, algorithm=zq.RTNQuantizer(), bits=3, group_size=8)
  by_function = zq.quantize_dense_layers(params, algorithm=rtn_as_plain_function, bits=3, group_size=8)
  jax.tree.map(np.testing.assert_array_equal, by_object.params, by_function.params)
  # A quantizer that does not say whether it needs the Hessians is given them.
  with pytest.raises(ValueError, match="needs `hessians`"):
    zq.quantize_dense_layers(params, algorithm=lambda w, h, **grid: w, bits=3)


# ------------------------------------------------------------------------------------------------------------------
# Activations


def _numpy_token_quant(x, bits):
  """Token-wise symmetric fake quantization written out in numpy, token by token."""
  qmax = 2 ** (bits - 1) - 1
  out = np.empty_like(x)
  for idx in np.ndindex(x.shape[:-1]):
    row = x[idx]
    s = np.abs(row).max() / qmax
    s = s if s > 0 else 1.0
    out[idx] = s * np.clip(np.round(row / s), -qmax - 1, qmax)
  return out


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_quantize_activations_matches_a_token_by_token_loop(bits, key):
  x = np.array(jax.random.normal(key, (3, 5, 24)) * jnp.exp(jax.random.normal(key, (24,))))
  x[0, 0] = 0.0  # an all-zero token stays zero
  got = np.asarray(zq.quantize_activations(jnp.asarray(x), bits=bits))
  np.testing.assert_allclose(got, _numpy_token_quant(x, bits), rtol=1e-6, atol=1e-7)
  step = np.abs(x).max(-1, keepdims=True) / (2 ** (bits - 1) - 1)
  assert np.all(np.abs(got - x) <= step / 2 + 1e-6)
  assert np.all(got[0, 0] == 0.0)


def test_an_outlier_channel_coarsens_its_tokens_only(key):
  # ZeroQuant-V2's point: one large channel widens the whole token's step.
  x = jax.random.normal(key, (64, 32))
  spiked = x.at[:32, 5].set(50.0)
  err = lambda y: np.asarray(jnp.abs(zq.quantize_activations(y, bits=8) - y).mean(-1))
  assert err(spiked)[:32].mean() > 10 * err(x)[:32].mean()
  np.testing.assert_array_equal(err(spiked)[32:], err(x)[32:])


def test_quantize_activations_keeps_nan_dtype_and_refuses_bad_input():
  x = jnp.ones((2, 32)).at[0, 3].set(jnp.nan)
  out = zq.quantize_activations(x, bits=8)
  assert bool(jnp.all(jnp.isnan(out[0]))) and bool(jnp.all(out[1] == 1.0))
  assert zq.quantize_activations(jnp.ones((2, 4), jnp.bfloat16), bits=8).dtype == jnp.bfloat16
  with pytest.raises(ValueError, match="bits"):
    zq.quantize_activations(jnp.ones((2, 4)), bits=1)
  with pytest.raises(TypeError, match="`x` must be a floating"):
    zq.quantize_activations(jnp.ones((2, 4), jnp.int32), bits=8)
  with pytest.raises(ValueError, match="`x` must have a channel axis"):
    zq.quantize_activations(jnp.float32(1.0), bits=8)
  with pytest.raises(ValueError, match="bits"):
    zq.DenseInputQuantizer(9)
  with pytest.raises(TypeError, match="`exclude`"):
    zq.DenseInputQuantizer(8, exclude="head")


def test_dense_input_quantizer_quantizes_each_dense_input(small_model):
  model, params, batches = small_model
  x = batches[0]
  with nn.intercept_methods(zq.DenseInputQuantizer(4, exclude=("head",))):
    got = model.apply(params, x)
  # The same network written out, with the inputs of a, b and c quantized and the head's left alone.
  p, q = params["params"], lambda y: zq.quantize_activations(y, bits=4)
  h = nn.gelu((q(x) @ p["a"]["kernel"] + p["a"]["bias"]) * (q(x) @ p["b"]["kernel"]))
  h = q(h) @ p["c"]["kernel"] + p["c"]["bias"]
  expected = jnp.tanh(h) @ p["head"]["kernel"] + p["head"]["bias"]
  np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-5, atol=1e-5)
  # Equal settings hash equal (a static jit argument compiles once per setting).
  assert zq.DenseInputQuantizer(4) == zq.DenseInputQuantizer(4) and hash(zq.DenseInputQuantizer(4)) == hash(
    zq.DenseInputQuantizer(4, ())
  )


# ------------------------------------------------------------------------------------------------------------------
# Bad input of the grid, the Hessians and the whole-model functions


def test_rtn_params_bad_input_and_a_nan_group():
  w = jnp.ones((4, 8))
  for bits in (1, 9, 4.0):
    with pytest.raises(ValueError, match="`bits`"):
      zq.rtn_params(w, bits=bits)
  with pytest.raises(ValueError, match="`w` must be a 2-D"):
    zq.rtn_params(jnp.ones(8), bits=4)
  with pytest.raises(TypeError, match="`w` must be a floating"):
    zq.rtn_params(jnp.ones((4, 8), jnp.int32), bits=4)
  with pytest.raises(ValueError, match="`group_size`"):
    zq.rtn_params(w, bits=4, group_size=3)
  # A NaN gave its group a step of 1 (the all-zero-group fallback), which rounded the group's other entries to
  # finite wrong values on the symmetric grid; now the group's step is NaN and so is the group, the other alone.
  w = jnp.array([[0.0, jnp.nan, 0.61, 1.5, 0.1, 0.2, 0.3, 0.4]])
  for symmetric in (False, True):
    params = zq.rtn_params(w, bits=2, group_size=4, symmetric=symmetric)
    assert bool(jnp.isnan(params.scale[0, 0])) and bool(jnp.isfinite(params.scale[0, 1]))
    w_hat = zq.rtn(w, bits=2, group_size=4, symmetric=symmetric)
    assert bool(jnp.all(jnp.isnan(w_hat[0, :4])))
    np.testing.assert_array_equal(w_hat[0, 4:], zq.rtn(w[:, 4:], bits=2, symmetric=symmetric)[0])


def test_hessian_and_dense_kernels_bad_input():
  with pytest.raises(ValueError, match="`x` must have shape"):
    zq.hessian(jnp.ones(8))
  with pytest.raises(TypeError, match="`x` must be a floating"):
    zq.hessian(jnp.ones((4, 8), jnp.int32))
  with pytest.raises(ValueError, match="`x` must hold at least one sample"):  # was 0 / 0: a NaN Hessian
    zq.hessian(jnp.ones((0, 8)))
  # Anything but a Mapping held no kernel: every quantizer then had nothing to quantize.
  for params in ([{"kernel": jnp.ones((4, 8))}], jnp.ones((4, 8))):
    with pytest.raises(TypeError, match="`params` must be a flax params dict"):
      zq.dense_kernels(params)


def test_whole_model_functions_bad_input(small_model):
  model, params, batches = small_model
  with pytest.raises(TypeError, match="`apply_fn`"):
    zq.dense_input_hessians(params, model.apply, batches)  # the arguments swapped
  with pytest.raises(ValueError, match="`batches`"):
    zq.dense_input_hessians(model.apply, params, [])
  gptq = zq.GPTQQuantizer(block_size=16)
  with pytest.raises(TypeError, match="`algorithm`"):
    zq.quantize_model(model.apply, params, batches, algorithm="gptq", bits=4)
  for algorithm in (gptq, zq.RTNQuantizer()):
    with pytest.raises(ValueError, match="`bits`"):
      zq.quantize_model(model.apply, params, batches, algorithm=algorithm, bits=9)
  with pytest.raises(ValueError, match="`calibration`"):
    zq.quantize_model(model.apply, params, [], algorithm=gptq, bits=4)
  with pytest.raises(TypeError, match="`apply_fn`"):
    zq.quantize_model(None, params, batches, algorithm=gptq, bits=4)
  with pytest.raises(TypeError, match="`exclude`"):
    zq.quantize_model(model.apply, params, batches, algorithm=zq.RTNQuantizer(), bits=4, exclude="head")
  layers = [("a",), ("head",)]
  with pytest.raises(ValueError, match="`bits`"):
    zq.size_report(params, layers, bits=1)
  with pytest.raises(ValueError, match="`layers`"):
    zq.size_report(params, [("nope",)], bits=4)
  with pytest.raises(ValueError, match="`group_size`"):
    zq.size_report(params, layers, bits=4, group_size=5)
  # A negative rank used to count negative LoRC bytes.
  for rank in (-1, 2.0):
    with pytest.raises(ValueError, match="`lorc_rank`"):
      zq.size_report(params, layers, bits=4, lorc_rank=rank)
  with pytest.raises(ValueError, match="`lorc_bits`"):
    zq.size_report(params, layers, bits=4, lorc_rank=2, lorc_bits=16)
  assert zq.size_report(params, layers, bits=4, lorc_rank=0) == zq.size_report(params, layers, bits=4)
