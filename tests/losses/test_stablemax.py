"""StableMax and Softmax Collapse against formulas written independently in numpy, and float32 absorption."""

import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from toolkit.losses import (
  log_stablemax,
  softmax_collapse_fraction,
  stablemax,
  stablemax_collapse_fraction,
  stablemax_cross_entropy,
)


def np_stablemax(x):
  """Eq. 7 of arXiv 2501.04697 in float64, branch by branch."""
  x = np.asarray(x, np.float64)
  s = np.empty_like(x)
  pos = x >= 0
  s[pos] = x[pos] + 1.0
  s[~pos] = 1.0 / (1.0 - x[~pos])
  return s / s.sum(axis=-1, keepdims=True)


finite_logits = hnp.arrays(np.float32, (4, 7), elements=st.floats(-50, 50, width=32))


@settings(deadline=None, max_examples=30)
@given(finite_logits)
def test_stablemax_matches_numpy_float64_and_sums_to_one(logits):
  probs = jax.jit(stablemax)(logits)
  np.testing.assert_allclose(probs, np_stablemax(logits), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(np.sum(probs, axis=-1), 1.0, rtol=1e-6)


@settings(deadline=None, max_examples=30)
@given(finite_logits, hnp.arrays(np.int32, (4,), elements=st.integers(0, 6)))
def test_cross_entropy_is_minus_log_of_numpy_probability(logits, labels):
  expected = -np.log(np_stablemax(logits)[np.arange(4), labels])
  np.testing.assert_allclose(jax.jit(stablemax_cross_entropy)(logits, labels), expected, rtol=2e-5, atol=1e-6)


def test_ramp_values_and_slopes(x64):
  # s(0) = 1, s(1) = 2, s(-1) = 1/2: read off the ratio to a reference class held at 0 (s = 1).
  x = jnp.array([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
  p = stablemax(x)
  np.testing.assert_allclose(p[:, 0] / p[:, 1], [1.0, 2.0, 0.5], rtol=1e-12)
  # s is C^1 at 0 with slope 1 on both sides: d/dx log s(x) at 0 is 1 from either side.
  d = jax.grad(lambda t: log_stablemax(jnp.array([t, 0.0]))[0] - log_stablemax(jnp.array([t, 0.0]))[1])
  np.testing.assert_allclose([d(-1e-9), d(0.0), d(1e-9)], 1.0, rtol=1e-6)


def test_log_stablemax_is_log_of_stablemax(x64, key):
  logits = 10 * jax.random.normal(key, (5, 9))
  np.testing.assert_allclose(log_stablemax(logits), np.log(np_stablemax(logits)), rtol=1e-12)


def test_loss_gradients_check_grads(x64, key):
  logits = 3 * jax.random.normal(key, (3, 6))
  # Keep points away from the kink at 0, where the second derivative jumps.
  logits = jnp.where(jnp.abs(logits) < 0.1, 0.5, logits)
  labels = jnp.array([0, 3, 5])
  f = lambda z: jnp.sum(stablemax_cross_entropy(z, labels))
  jax.test_util.check_grads(f, (logits,), order=2, modes=("fwd", "rev"), eps=1e-4)


def test_float32_softmax_loss_collapses_in_the_predicted_window_but_stablemax_does_not():
  """Logits [z, 0, ..., 0] over 113 classes: exp(-z) is absorbed by 1 once z > ln(2^24) ≈ 16.6 and certainly
  once (C-1) e^{-z} < 2^-24, z > ln(112 · 2^24) ≈ 21.4 (arXiv 2501.04697, Sec. 3)."""
  zs = np.arange(14.0, 24.0, 0.05, dtype=np.float32)
  logits = np.zeros((zs.size, 113), np.float32)
  logits[:, 0] = zs
  labels = np.zeros(zs.size, np.int32)
  softmax_loss = np.asarray(optax.losses.softmax_cross_entropy_with_integer_labels(logits, labels))
  stable_loss = np.asarray(stablemax_cross_entropy(logits, labels))
  first_zero = zs[np.argmax(softmax_loss == 0)]
  assert np.any(softmax_loss == 0)
  assert 16.6 <= first_zero <= 21.4, first_zero
  assert np.all(softmax_loss[zs > 21.4] == 0)
  assert np.all(stable_loss > 0)
  # At the collapse the gradient on the correct logit is exactly zero for softmax, not for StableMax.
  z = jnp.zeros(113).at[0].set(22.0)
  g_soft = jax.grad(lambda z: optax.losses.softmax_cross_entropy_with_integer_labels(z, jnp.asarray(0)))(z)
  g_stable = jax.grad(lambda z: stablemax_cross_entropy(z, jnp.asarray(0)))(z)
  assert g_soft[0] == 0.0 and g_stable[0] < 0.0
  # StableMax stays positive far beyond: the wrong classes decay like 1/z, not e^{-z}.
  for z0, loss in [(1e3, 0.106), (1e6, 1.1e-4)]:
    z = jnp.zeros(113).at[0].set(z0)
    np.testing.assert_allclose(stablemax_cross_entropy(z, jnp.asarray(0)), loss, rtol=0.02)


def test_collapse_fractions_against_numpy():
  rng = np.random.default_rng(0)
  n, c = 40, 113
  logits = rng.normal(size=(n, c)).astype(np.float32)
  labels = rng.integers(0, c, size=n).astype(np.int32)
  big = rng.uniform(0, 30, size=n).astype(np.float32)
  logits[np.arange(n), labels] += big
  logits[:5, (labels[:5] + 1) % c] += 60.0  # confidently wrong: sum is 1 but the sample is not collapsed
  shifted = logits - logits.max(axis=1, keepdims=True)
  total = np.exp(shifted).sum(axis=1, dtype=np.float32)
  expected = np.mean((total == 1.0) & (logits.argmax(1) == labels))
  got = float(softmax_collapse_fraction(logits, labels))
  # XLA may sum in another order than numpy; rows at the edge of absorption can flip.
  assert abs(got - expected) <= 2 / n
  assert 0 < got < 1
  assert float(stablemax_collapse_fraction(logits, labels)) == 0.0


def test_stablemax_collapse_needs_astronomical_logits():
  logits = np.zeros((2, 113), np.float32)
  logits[0, 0] = 1e6  # s = 1e6 + 1: 112 ones are not absorbed in float32
  logits[1, 0] = 1e12  # ulp(1e12) = 2^16 in float32: they are
  fractions = [float(stablemax_collapse_fraction(logits[i : i + 1], np.zeros(1, np.int32))) for i in range(2)]
  assert fractions == [0.0, 1.0]


def test_jit_vmap_and_eager_agree(key):
  logits = 5 * jax.random.normal(key, (8, 10))
  labels = jnp.arange(8) % 10
  eager = stablemax_cross_entropy(logits, labels)
  np.testing.assert_array_equal(jax.jit(stablemax_cross_entropy)(logits, labels), eager)
  np.testing.assert_allclose(jax.vmap(stablemax_cross_entropy)(logits, labels), eager, rtol=1e-6)


@pytest.mark.parametrize(
  "logits, labels, error, match",
  [
    (np.zeros((2, 3), np.int32), np.zeros(2, np.int32), TypeError, "logits"),
    (np.zeros((2, 3), np.float32), np.zeros(2, np.float32), TypeError, "labels"),
    (np.zeros((2, 3), np.float32), np.array([0, 3]), ValueError, r"\[0, 3\)"),
    (np.zeros((2, 3), np.float32), np.array([0, -1]), ValueError, "labels"),
    (np.zeros((2, 3), np.float32), np.zeros(3, np.int32), ValueError, "shape"),
    (np.float32(1.0), np.zeros((), np.int32), ValueError, "at least one"),
  ],
)
def test_bad_input_raises_clear_errors(logits, labels, error, match):
  with pytest.raises(error, match=match):
    stablemax_cross_entropy(logits, labels)
  if error is TypeError or "shape" in match:  # also at trace time under jit
    with pytest.raises(error, match=match):
      jax.jit(stablemax_cross_entropy)(logits, labels)


@pytest.mark.parametrize(
  "logits, axis, error, match",
  [
    (np.zeros((2, 3), np.int32), -1, TypeError, "`logits`"),
    (np.float32(1.0), -1, ValueError, "`logits`"),
    (np.zeros((2, 3), np.float32), 2, ValueError, "`axis`"),
    (np.zeros((2, 3), np.float32), -3, ValueError, "`axis`"),
    (np.zeros((2, 3), np.float32), 1.0, ValueError, "`axis`"),
  ],
)
def test_stablemax_bad_input(logits, axis, error, match):
  with pytest.raises(error, match=match):
    stablemax(logits, axis=axis)
  with pytest.raises(error, match=match):
    log_stablemax(logits, axis=axis)


@pytest.mark.parametrize(
  "logits, labels, error, match",
  [
    (np.zeros((2, 3), np.int32), np.zeros(2, np.int32), TypeError, "`logits`"),
    (np.zeros((2, 3), np.float32), np.zeros(2, np.float32), TypeError, "`labels`"),
    (np.zeros((2, 3), np.float32), np.zeros(3, np.int32), ValueError, "`labels`"),
    # An out-of-range label would read a NaN or a wrapped-around class and miscount collapsed samples.
    (np.zeros((2, 3), np.float32), np.array([0, 3]), ValueError, r"`labels` must lie in \[0, 3\)"),
    (np.zeros((2, 3), np.float32), np.array([-1, 0]), ValueError, "`labels`"),
  ],
)
def test_collapse_fractions_bad_input(logits, labels, error, match):
  with pytest.raises(error, match=match):
    softmax_collapse_fraction(logits, labels)
  with pytest.raises(error, match=match):
    stablemax_collapse_fraction(logits, labels)
