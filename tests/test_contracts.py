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

from toolkit import losses
from toolkit import optim
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
  with pytest.raises(TypeError, match="`resampler`"):
    resampling.adaptive_resample(key, jnp.zeros(3), resampler=name)  # a name is not a resampler


# ---------------------------------------------------------------------------------------------------------------
# Losses: (logits, labels) -> per-example loss, like optax.losses.

LOSSES = [
  ("stablemax_cross_entropy", losses.stablemax_cross_entropy),
  ("softmax_cross_entropy (optax, the reference)", optax.losses.softmax_cross_entropy_with_integer_labels),
]


def _logits_labels(key, batch=(4,), classes=7, dtype=jnp.float32):
  k1, k2 = jax.random.split(key)
  logits = (3.0 * jax.random.normal(k1, (*batch, classes))).astype(dtype)
  return logits, jax.random.randint(k2, batch, 0, classes)


@pytest.mark.parametrize("name, loss", LOSSES)
def test_loss_jit_equals_no_jit_and_vmap_equals_loop(name, loss, key):
  logits, labels = _logits_labels(key, batch=(3, 4))
  np.testing.assert_allclose(np.asarray(jax.jit(loss)(logits, labels)), np.asarray(loss(logits, labels)),
                             rtol=1e-6)
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
  params = {"w": jax.random.normal(k[0], (*batch, 5, 3), dtype), "b": jax.random.normal(k[1], (*batch, 3), dtype)}
  grads = {"w": jax.random.normal(k[2], (*batch, 5, 3), dtype), "b": jax.random.normal(k[3], (*batch, 3), dtype)}
  return params, grads


def _update(make, grads, params):
  tx = make()
  return tx.update(grads, tx.init(params), params)[0]


@pytest.mark.parametrize("name, make", TRANSFORMS)
def test_transform_jit_equals_no_jit_and_vmap_equals_loop(name, make, key):
  params, grads = _params_grads(key)
  eager = _update(make, grads, params)
  jitted = jax.jit(functools.partial(_update, make))(grads, params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7),
               eager, jitted)
  params_b, grads_b = _params_grads(key, batch=(4,))
  batched = jax.vmap(functools.partial(_update, make))(grads_b, params_b)
  for i in range(4):
    one = _update(make, jax.tree.map(lambda a: a[i], grads_b), jax.tree.map(lambda a: a[i], params_b))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a[i]), np.asarray(b), rtol=1e-5, atol=1e-7),
                 batched, one)


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
