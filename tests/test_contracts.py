"""One battery of contracts over the package's interchangeable pieces (in the style of optax's
``contrib/_common_test.py``): every resampler, loss, gradient transformation, KV-cache strategy and bit width, and
kernel implementation must give the same result under ``jit`` as without it, the same result under ``vmap`` as in
a Python loop, keep its dtype, and refuse bad input with an error that names the argument.

A new paper's interchangeable pieces join the parametrisations below.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from toolkit import losses, optim
from toolkit.kernels import kivi, tmac, tmac_benchmark
from toolkit.models import FullPrecisionCache
from toolkit.smc import resampling

# ---------------------------------------------------------------------------------------------------------------
# Resamplers: (key, weights, num_samples) -> indices.

RESAMPLERS = sorted(resampling.SCHEMES.items())


@pytest.mark.parametrize("name, resampler", RESAMPLERS)
def test_resampler_jit_equals_no_jit(name, resampler, key):
  w = jax.random.dirichlet(key, jnp.ones(16))
  eager = resampler(key, w, 16)
  jitted = jax.jit(resampler, static_argnums=2)(key, w, 16)
  np.testing.assert_array_equal(np.asarray(eager), np.asarray(jitted))


@pytest.mark.parametrize("name, resampler", RESAMPLERS)
def test_resampler_vmap_equals_loop(name, resampler, key):
  keys = jax.random.split(key, 5)
  ws = jax.random.dirichlet(key, jnp.ones(12), (5,))
  batched = jax.vmap(lambda k, w: resampler(k, w, 9))(keys, ws)
  looped = jnp.stack([resampler(k, w, 9) for k, w in zip(keys, ws)])
  np.testing.assert_array_equal(np.asarray(batched), np.asarray(looped))


@pytest.mark.parametrize("name, resampler", RESAMPLERS)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_resampler_indices_are_int32_for_any_float_dtype(name, resampler, dtype, key, x64):
  idx = resampler(key, jnp.full(8, 1 / 8, dtype), 8)
  assert idx.dtype == jnp.int32 and idx.shape == (8,)


@pytest.mark.parametrize("name, resampler", RESAMPLERS)
def test_resampler_refuses_bad_input(name, resampler, key):
  with pytest.raises(ValueError, match="weights"):
    resampler(key, jnp.ones((2, 3)) / 6, 3)
  with pytest.raises(TypeError, match="floating"):
    resampler(key, jnp.ones(3, jnp.int32), 3)
  with pytest.raises(ValueError, match="num_samples"):
    resampler(key, jnp.ones(3) / 3, 0)
  # Concrete weights are checked: NaN, a negative entry or no mass would otherwise give arbitrary indices.
  with pytest.raises(ValueError, match="`weights` contains NaN"):
    resampler(key, jnp.array([0.5, jnp.nan, 0.3, 0.2]), 8)
  with pytest.raises(ValueError, match="`weights` must be non-negative"):
    resampler(key, jnp.array([0.5, -0.1, 0.6]), 8)
  with pytest.raises(ValueError, match="`weights` must have a positive finite sum"):
    resampler(key, jnp.zeros(3), 8)
  # Any integer scalar is a valid count.
  assert resampler(key, jnp.ones(3) / 3, np.int64(4)).shape == (4,)
  with pytest.raises(TypeError, match="`resampler`"):
    resampling.adaptive_resample(key, jnp.zeros(3), resampler=name)  # a name is not a resampler


# ---------------------------------------------------------------------------------------------------------------
# Losses: (logits, labels) -> per-example loss, like optax.losses.

LOSSES = [
  ("stablemax_cross_entropy", losses.stablemax_cross_entropy),
  (
    "softmax_cross_entropy (optax, the reference)",
    optax.losses.softmax_cross_entropy_with_integer_labels,
  ),
]


def _logits_labels(key, batch=(4,), classes=7, dtype=jnp.float32):
  k1, k2 = jax.random.split(key)
  logits = (3.0 * jax.random.normal(k1, (*batch, classes))).astype(dtype)
  return logits, jax.random.randint(k2, batch, 0, classes)


@pytest.mark.parametrize("name, loss", LOSSES)
def test_loss_jit_equals_no_jit_and_vmap_equals_loop(name, loss, key):
  logits, labels = _logits_labels(key, batch=(3, 4))
  np.testing.assert_allclose(np.asarray(jax.jit(loss)(logits, labels)), np.asarray(loss(logits, labels)), rtol=1e-6)
  batched = jax.vmap(loss)(logits, labels)
  looped = jnp.stack([loss(lg, lb) for lg, lb in zip(logits, labels)])
  np.testing.assert_allclose(np.asarray(batched), np.asarray(looped), rtol=1e-6)


@pytest.mark.parametrize("name, loss", LOSSES)
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32, jnp.float64])
def test_loss_keeps_the_logits_dtype(name, loss, dtype, key, x64):
  logits, labels = _logits_labels(key, dtype=dtype)
  out = loss(logits, labels)
  assert out.dtype == dtype and out.shape == labels.shape
  assert jax.grad(lambda z: loss(z, labels).sum())(logits).dtype == dtype


def test_stablemax_loss_refuses_bad_input(key):
  logits, labels = _logits_labels(key)
  with pytest.raises(TypeError, match="`labels`"):
    losses.stablemax_cross_entropy(logits, labels.astype(jnp.float32))
  with pytest.raises(ValueError, match="`labels`"):
    losses.stablemax_cross_entropy(logits, labels[:2])
  with pytest.raises(TypeError, match="`logits`"):
    losses.stablemax_cross_entropy(logits.astype(jnp.int32), labels)


# ---------------------------------------------------------------------------------------------------------------
# Gradient transformations (optax.GradientTransformation).

TRANSFORMS = [
  ("perpgrad", optim.perpgrad),
  ("perpgrad_global", functools.partial(optim.perpgrad, per_leaf=False)),
  ("perp_adamw", functools.partial(optim.perp_adamw, 1e-2)),
]


def _params_grads(key, dtype=jnp.float32, batch=()):
  k = jax.random.split(key, 4)
  params = {
    "w": jax.random.normal(k[0], (*batch, 5, 3), dtype),
    "b": jax.random.normal(k[1], (*batch, 3), dtype),
  }
  grads = {
    "w": jax.random.normal(k[2], (*batch, 5, 3), dtype),
    "b": jax.random.normal(k[3], (*batch, 3), dtype),
  }
  return params, grads


def _update(make, grads, params):
  tx = make()
  return tx.update(grads, tx.init(params), params)[0]


@pytest.mark.parametrize("name, make", TRANSFORMS)
def test_transform_jit_equals_no_jit_and_vmap_equals_loop(name, make, key):
  params, grads = _params_grads(key)
  eager = _update(make, grads, params)
  jitted = jax.jit(functools.partial(_update, make))(grads, params)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7),
    eager,
    jitted,
  )
  params_b, grads_b = _params_grads(key, batch=(4,))
  batched = jax.vmap(functools.partial(_update, make))(grads_b, params_b)
  for i in range(4):
    take = functools.partial(lambda a, index: a[index], index=i)
    one = _update(make, jax.tree.map(take, grads_b), jax.tree.map(take, params_b))
    for a, b in zip(jax.tree.leaves(jax.tree.map(take, batched)), jax.tree.leaves(one)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name, make", TRANSFORMS)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_transform_keeps_the_dtype(name, make, dtype, key, x64):
  params, grads = _params_grads(key, dtype)
  out = _update(make, grads, params)
  assert all(leaf.dtype == dtype for leaf in jax.tree.leaves(out))


@pytest.mark.parametrize("name, make", TRANSFORMS)
def test_transform_refuses_bad_input(name, make, key):
  params, grads = _params_grads(key)
  tx = make()
  state = tx.init(params)
  with pytest.raises(ValueError, match="param"):
    tx.update(grads, state, None)
  with pytest.raises(ValueError, match="structure|shape"):
    tx.update({"w": grads["w"]}, state, params)


# ---------------------------------------------------------------------------------------------------------------
# KV-cache strategies of the transformer LM (init / prefill / attend), every KIVI bit width.

CACHES = [
  ("full_precision", FullPrecisionCache()),
  *[(f"kivi{b}", kivi.KIVI(bits=b, group_size=32, residual=32)) for b in kivi.CACHE_BITS],
  ("kivi2_per_token_keys", kivi.KIVI(bits=2, group_size=32, residual=32, per_channel_keys=False)),
]


def _decode_step(cache, k, v, q, k_new, v_new):
  state = cache.prefill(cache.init(k.shape[:-2], 64, k.shape[-1], k.dtype), k, v)
  return cache.attend(state, q, k_new, v_new)[0]


def _kv(key, batch=(2,), dtype=jnp.float32):
  ks = jax.random.split(key, 5)
  k, v = (jax.random.normal(kk, (*batch, 40, 32), dtype) for kk in ks[:2])
  q, k_new, v_new = (jax.random.normal(kk, (*batch, 32), dtype) for kk in ks[2:])
  return k, v, q, k_new, v_new


@pytest.mark.parametrize("name, cache", CACHES)
def test_cache_jit_equals_no_jit_and_vmap_equals_loop(name, cache, key):
  args = _kv(key)
  eager = _decode_step(cache, *args)
  jitted = jax.jit(functools.partial(_decode_step, cache))(*args)
  np.testing.assert_allclose(np.asarray(eager), np.asarray(jitted), rtol=1e-5, atol=1e-6)
  batched = jax.vmap(functools.partial(_decode_step, cache))(*args)
  looped = jnp.stack([_decode_step(cache, *(a[i][None] for a in args))[0] for i in range(2)])
  np.testing.assert_allclose(np.asarray(batched), np.asarray(looped), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name, cache", CACHES)
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_cache_keeps_the_dtype(name, cache, dtype, key):
  assert _decode_step(cache, *_kv(key, dtype=dtype)).dtype == dtype


@pytest.mark.parametrize("name, cache", CACHES)
def test_cache_refuses_a_prompt_of_the_wrong_shape(name, cache, key):
  k, v, *_ = _kv(key)
  state = cache.init((2,), 64, 32, jnp.float32)
  with pytest.raises(ValueError, match="`k`|`v`|capacity"):
    cache.prefill(state, k[..., :16], v[..., :16])
  with pytest.raises(ValueError, match="capacity|fit"):
    cache.prefill(state, jnp.zeros((2, 200, 32)), jnp.zeros((2, 200, 32)))


# ---------------------------------------------------------------------------------------------------------------
# Kernel implementations: every impl and bit width of KIVI's decode attention and T-MAC's matmul.

IMPLS = [("xla", {}), ("pallas", {"interpret": True})]


def _kivi_cache(key, bits, dtype=jnp.float32):
  k, v, *_ = _kv(key, dtype=dtype)
  cache = kivi.init_cache((2,), 64, 32, bits=bits, group_size=32, residual=32, dtype=dtype)
  return kivi.extend(cache, k, v)


@pytest.mark.parametrize("impl, options", IMPLS)
@pytest.mark.parametrize("bits", kivi.CACHE_BITS)
def test_decode_attention_impls_agree_under_jit_and_vmap(impl, options, bits, key):
  cache = _kivi_cache(key, bits)
  q = jax.random.normal(key, (2, 32))
  attend = functools.partial(kivi.decode_attention, impl=impl, **options)
  reference = kivi.decode_attention_reference(q, cache)
  np.testing.assert_allclose(np.asarray(attend(q, cache)), np.asarray(reference), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(np.asarray(jax.jit(attend)(q, cache)), np.asarray(attend(q, cache)), rtol=1e-6)
  qs = jax.random.normal(key, (3, 2, 32))
  batched = jax.vmap(attend, in_axes=(0, None))(qs, cache)
  looped = jnp.stack([attend(qi, cache) for qi in qs])
  np.testing.assert_allclose(np.asarray(batched), np.asarray(looped), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("impl, options", IMPLS)
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_decode_attention_keeps_the_dtype(impl, options, dtype, key):
  cache = _kivi_cache(key, 2, dtype)
  out = kivi.decode_attention(jnp.ones((2, 32), dtype), cache, impl=impl, **options)
  assert out.dtype == dtype


@pytest.mark.parametrize("impl, options", IMPLS)
def test_decode_attention_refuses_bad_input(impl, options, key):
  cache = _kivi_cache(key, 2)
  with pytest.raises(ValueError, match="impl"):
    kivi.decode_attention(jnp.ones((2, 32)), cache, impl="cuda")
  with pytest.raises((ValueError, TypeError), match="q|shape|channels"):
    kivi.decode_attention(jnp.ones((2, 16)), cache, impl=impl, **options)


def _tmac_weights(key, bits):
  codes, scales, zeros = tmac_benchmark.random_weights(key, 64, 128, bits, 32)
  return tmac.preprocess(codes, scales, zeros, bits=bits, group_size=32)


@pytest.mark.parametrize("impl, options", IMPLS)
@pytest.mark.parametrize("bits", tmac.SUPPORTED_BITS)
def test_tmac_matmul_impls_agree_under_jit_and_vmap(impl, options, bits, key):
  packed = _tmac_weights(key, bits)
  x = jax.random.normal(key, (3, 128))
  matmul = functools.partial(tmac.matmul, impl=impl, **options)
  reference = x @ tmac.dequantize(packed).T
  np.testing.assert_allclose(np.asarray(matmul(x, packed)), np.asarray(reference), rtol=1e-4, atol=1e-4)
  np.testing.assert_array_equal(np.asarray(jax.jit(matmul)(x, packed)), np.asarray(matmul(x, packed)))
  batched = jax.vmap(matmul, in_axes=(0, None))(x, packed)
  looped = jnp.stack([matmul(xi, packed) for xi in x])
  np.testing.assert_allclose(np.asarray(batched), np.asarray(looped), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl, options", IMPLS)
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_tmac_matmul_keeps_the_dtype(impl, options, dtype, key):
  out = tmac.matmul(jnp.ones((2, 128), dtype), _tmac_weights(key, 2), impl=impl, **options)
  assert out.dtype == dtype


@pytest.mark.parametrize("impl, options", IMPLS)
def test_tmac_matmul_refuses_bad_input(impl, options, key):
  packed = _tmac_weights(key, 2)
  with pytest.raises(ValueError, match="impl"):
    tmac.matmul(jnp.ones((2, 128)), packed, impl="cuda")
  with pytest.raises(ValueError, match="x|K|128"):
    tmac.matmul(jnp.ones((2, 64)), packed, impl=impl, **options)


# ---------------------------------------------------------------------------------------------------------------
# Preference (direct-alignment) losses: (policy_chosen, policy_rejected, reference_chosen, reference_rejected; β)
# -> per-example loss.

PREFERENCE_LOSSES = [
  ("dpo_loss", losses.dpo_loss),
  ("ipo_loss", losses.ipo_loss),
  ("hinge_loss", losses.hinge_loss),
]


def _sequence_log_probs(key, batch=(4,), dtype=jnp.float32):
  return tuple((-jnp.abs(4.0 * jax.random.normal(k, batch))).astype(dtype) for k in jax.random.split(key, 4))


@pytest.mark.parametrize("name, loss", PREFERENCE_LOSSES)
def test_preference_loss_jit_equals_no_jit_and_vmap_equals_loop(name, loss, key):
  args = _sequence_log_probs(key, (5, 3))
  eager = loss(*args, beta=0.2)
  jitted = jax.jit(functools.partial(loss, beta=0.2))(*args)
  np.testing.assert_allclose(np.asarray(eager), np.asarray(jitted), rtol=1e-6, atol=1e-7)
  batched = jax.vmap(functools.partial(loss, beta=0.2))(*args)
  looped = jnp.stack([loss(*(a[i] for a in args), beta=0.2) for i in range(5)])
  np.testing.assert_allclose(np.asarray(batched), np.asarray(looped), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name, loss", PREFERENCE_LOSSES)
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32, jnp.float64])
def test_preference_loss_keeps_the_dtype(name, loss, dtype, key, x64):
  args = _sequence_log_probs(key, dtype=dtype)
  out = loss(*args, beta=0.5)
  assert out.dtype == dtype and out.shape == (4,)
  assert jax.grad(lambda pc: loss(pc, *args[1:], beta=0.5).sum())(args[0]).dtype == dtype


@pytest.mark.parametrize("name, loss", PREFERENCE_LOSSES)
def test_preference_loss_refuses_bad_input(name, loss, key):
  args = _sequence_log_probs(key)
  with pytest.raises(ValueError, match="`beta`"):
    loss(*args, beta=-1.0)
  with pytest.raises(ValueError, match="same shape"):
    loss(args[0][:2], *args[1:], beta=0.1)
  with pytest.raises(TypeError, match="`reference_rejected`"):
    loss(*args[:3], args[3].astype(jnp.int32), beta=0.1)


# ---------------------------------------------------------------------------------------------------------------
# Concrete checks on constants closed over by a jitted function. Inside a jit trace a closed-over array is concrete
# (not a Tracer), but jnp reductions of it are traced: a value check written with jnp raised JAX's
# ConcretizationTypeError there (likelihood_displacement's experiment hit it). The checks run in numpy, so the
# constant is checked like an argument: a good one gives the eager result, a bad one the eager ValueError.


def _transformer_logits(tokens):
  from toolkit.models.transformer import Transformer, TransformerConfig, init_params

  config = TransformerConfig(d_model=16, num_heads=1, num_layers=1, d_ff=32, max_len=8, vocab_size=12)
  params = init_params(jax.random.key(0), config)
  return Transformer(config).apply(params, tokens)


def _presto_problem(y):
  from toolkit.stats import presto

  x = jnp.asarray(np.random.default_rng(0).normal(size=(6, 2)), jnp.float32)
  return presto.make_problem(x, y, lam=0.1).penalty_factors


def _sns_cost(b):
  from ott.geometry import pointcloud

  from toolkit import ot

  x = jnp.linspace(0.0, 1.0, 4)[:, None]
  out = ot.solve_sinkhorn_newton_sparse(pointcloud.PointCloud(x, x, epsilon=0.5), jnp.full(4, 0.25), b)
  return out.reg_ot_cost


def _bridge(t):
  from toolkit.ot import light_sb as lsb

  params = lsb.init_params(jax.random.key(0), jnp.ones((3, 2)), 2, epsilon=0.1)
  return lsb.sample_bridge(jax.random.key(1), params, jnp.zeros((3, 2)), t, 0.1)


_CODES = jnp.tile(jnp.arange(4), (2, 4))  # 16 two-bit codes per row: one packed word

CLOSED_OVER_CHECKS = [
  ("transformer tokens", _transformer_logits, jnp.array([[1, 2, 3]]), jnp.array([[1, 12, 3]]), "must lie in"),
  ("kivi.pack codes", lambda c: kivi.pack(c, 2), _CODES, _CODES.at[1, 5].set(4), "codes"),
  ("presto labels", _presto_problem, jnp.array([0, 1, 2, 0, 1, 2]), jnp.array([0, 1, 2, 0, 1, -1]), "`y`"),
  ("SNS marginal", _sns_cost, jnp.full(4, 0.25), jnp.array([0.5, -0.1, 0.3, 0.3]), "marginal `b`"),
  ("LightSB bridge time", _bridge, jnp.array([0.0, 0.5, 1.0]), jnp.array([0.0, 0.5, 1.5]), "`t`"),
  (
    "resampler weights",
    lambda w: resampling.systematic(jax.random.key(0), w, 4),
    jnp.full(3, 1 / 3),
    jnp.array([0.5, -0.1, 0.6]),
    "`weights`",
  ),
  (
    "stablemax labels",
    lambda y: losses.stablemax_cross_entropy(jnp.zeros((2, 3)), y),
    jnp.array([0, 2]),
    jnp.array([0, 3]),
    "`labels`",
  ),
]


@pytest.mark.parametrize("name, fn, good, bad, match", CLOSED_OVER_CHECKS, ids=[c[0] for c in CLOSED_OVER_CHECKS])
def test_closed_over_constants_are_checked_under_jit(name, fn, good, bad, match):
  np.testing.assert_allclose(np.asarray(jax.jit(lambda: fn(good))()), np.asarray(fn(good)), rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match=match):
    fn(bad)
  with pytest.raises(ValueError, match=match):
    jax.jit(lambda: fn(bad))()
