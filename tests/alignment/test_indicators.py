"""Top-k probability mass and top-k entropy against one-hot and uniform closed forms, numpy brute force and
invariances."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from toolkit.alignment.indicators import masked_sequence_mean, topk_entropy, topk_probability_mass


def _np_topk(logits, k, renormalize):
  logits = np.asarray(logits, np.float64)
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  top = -np.sort(-p, axis=-1)[..., :k]
  mass = top.sum(-1)
  q = top / mass[..., None] if renormalize else top
  return mass, -np.sum(np.where(q > 0, q * np.log(np.where(q > 0, q, 1)), 0), axis=-1)


@pytest.mark.parametrize("k", [1, 3, 8])
def test_one_hot_has_unit_mass_and_zero_entropy(k):
  logits = jnp.full((2, 8), -1e4).at[0, 3].set(0.0).at[1, 7].set(0.0)
  np.testing.assert_allclose(topk_probability_mass(logits, k), 1.0)
  np.testing.assert_allclose(topk_entropy(logits, k), 0.0, atol=1e-6)
  np.testing.assert_allclose(topk_entropy(logits, k, renormalize=False), 0.0, atol=1e-6)


@pytest.mark.parametrize("k", [1, 2, 5, 10])
def test_uniform_has_mass_k_over_v_and_entropy_log_k(k):
  logits = jnp.full((3, 10), 0.7)
  np.testing.assert_allclose(topk_probability_mass(logits, k), k / 10, rtol=1e-6)
  np.testing.assert_allclose(topk_entropy(logits, k), np.log(k), rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(topk_entropy(logits, k, renormalize=False), k / 10 * np.log(10), rtol=1e-6)


finite = hnp.arrays(np.float32, (3, 9), elements=st.floats(-20, 20, width=32))


@settings(deadline=None, max_examples=12)
@given(finite, st.integers(1, 9), st.floats(-50, 50, width=32))
def test_matches_numpy_monotone_in_k_and_shift_invariant(logits, k, shift):
  mass, entropy = topk_probability_mass(logits, k), topk_entropy(logits, k)
  np_mass, np_entropy = _np_topk(logits, k, True)
  np.testing.assert_allclose(mass, np_mass, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(entropy, np_entropy, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(topk_entropy(logits, k, renormalize=False), _np_topk(logits, k, False)[1], atol=1e-5)
  if k < 9:
    assert np.all(np.asarray(topk_probability_mass(logits, k + 1)) >= np.asarray(mass) - 1e-6)
  np.testing.assert_allclose(topk_probability_mass(logits + shift, k), mass, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(topk_entropy(logits + shift, k), entropy, rtol=1e-4, atol=1e-5)
  assert np.all(np.asarray(entropy) <= np.log(k) + 1e-5)


def test_jit_vmap_dtype_and_bad_input(key):
  logits = jax.random.normal(key, (4, 5, 11))
  for fn in (topk_probability_mass, topk_entropy):
    eager = fn(logits, 3)
    assert eager.shape == (4, 5)
    np.testing.assert_allclose(jax.jit(fn, static_argnums=1)(logits, 3), eager, rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(lambda x, f=fn: f(x, 3))(logits), eager, rtol=1e-6)
    assert fn(logits.astype(jnp.bfloat16), 3).dtype == jnp.bfloat16
    with pytest.raises(ValueError, match="k"):
      fn(logits, 12)
    with pytest.raises(ValueError, match="k"):
      fn(logits, 0)
    with pytest.raises(TypeError, match="logits"):
      fn(jnp.ones((2, 3), jnp.int32), 1)


@pytest.mark.parametrize(
  "logits, k, error, match",
  [
    (jnp.zeros((2, 5)), 0, ValueError, "`k`"),
    (jnp.zeros((2, 5)), 6, ValueError, r"`k` must be an int in \[1, V = 5\]"),
    (jnp.zeros((2, 5)), 2.0, ValueError, "`k`"),
    (jnp.zeros((2, 5)), True, ValueError, "`k`"),
    (jnp.zeros((2, 5), jnp.int32), 1, TypeError, "`logits`"),
    (jnp.float32(0.0), 1, ValueError, "`logits`"),
    (jnp.zeros((2, 0)), 1, ValueError, "`logits`"),
  ],
)
def test_indicators_bad_input(logits, k, error, match):
  with pytest.raises(error, match=match):
    topk_probability_mass(logits, k)
  with pytest.raises(error, match=match):
    topk_entropy(logits, k)


def test_topk_entropy_bad_renormalize_and_numpy_int_k():
  logits = jnp.log(jnp.array([0.5, 0.3, 0.1, 0.1]))
  with pytest.raises(TypeError, match="`renormalize`"):
    topk_entropy(logits, 2, renormalize=1)
  # A numpy integer is an int (CONTRIBUTING.md, "Bad input").
  np.testing.assert_allclose(topk_entropy(logits, np.int64(2)), topk_entropy(logits, 2))
  np.testing.assert_allclose(topk_probability_mass(logits, np.int64(2)), 0.8, rtol=1e-6)


def test_masked_sequence_mean_averages_positions_then_sequences():
  values = jnp.array([[[1.0, 2.0, 3.0], [10.0, 0.0, 0.0], [5.0, 5.0, 5.0]]])
  mask = jnp.array([[[1, 1, 1], [1, 0, 0], [0, 0, 0]]])
  np.testing.assert_allclose(masked_sequence_mean(values, mask), [(2.0 + 10.0) / 2])
  np.testing.assert_allclose(masked_sequence_mean(values), [(2.0 + 10 / 3 + 5.0) / 3], rtol=1e-6)
  assert np.isnan(float(masked_sequence_mean(values, jnp.zeros_like(mask))[0]))
  with pytest.raises(ValueError, match="mask"):
    masked_sequence_mean(values, mask[..., :2])
