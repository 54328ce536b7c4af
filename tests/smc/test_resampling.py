"""Resampling schemes: unbiased offspring counts, the variance ordering, log-space safety, adaptive rule."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.smc import resampling

SCHEMES = sorted(resampling.SCHEMES)
WEIGHTS = np.array([0.02, 0.3, 0.05, 0.13, 0.001, 0.2, 0.099, 0.2])


def offspring_counts(scheme, weights, num_samples, n_runs, seed=0):
  keys = jax.random.split(jax.random.key(seed), n_runs)
  fn = jax.jit(jax.vmap(lambda k: resampling.SCHEMES[scheme](k, jnp.asarray(weights), num_samples)))
  idx = np.asarray(fn(keys))
  return np.stack([np.bincount(row, minlength=len(weights)) for row in idx])


@pytest.mark.parametrize("scheme", SCHEMES)
def test_offspring_counts_are_unbiased(scheme):
  n_runs, m = 4000, 8
  counts = offspring_counts(scheme, WEIGHTS, m, n_runs)
  assert np.all(counts.sum(1) == m)
  # E[counts_i] = M w_i; the multinomial standard error bounds every scheme's (they all have lower variance).
  se = np.sqrt(m * WEIGHTS * (1 - WEIGHTS) / n_runs)
  np.testing.assert_array_less(np.abs(counts.mean(0) - m * WEIGHTS), 5 * se + 1e-12)


def test_systematic_has_the_lowest_variance():
  total_var = {s: offspring_counts(s, WEIGHTS, 8, 4000, seed=1).var(0).sum() for s in SCHEMES}
  assert total_var["systematic"] <= min(total_var["stratified"], total_var["residual"])
  assert max(total_var["stratified"], total_var["residual"]) < total_var["multinomial"]
  # Multinomial's total variance is Σ M w_i (1 - w_i) in closed form.
  assert total_var["multinomial"] == pytest.approx(8 * np.sum(WEIGHTS * (1 - WEIGHTS)), rel=0.1)


def test_residual_keeps_the_deterministic_copies():
  w = np.array([0.5, 0.25, 0.125, 0.125])  # M w is an integer vector: no randomness left
  counts = offspring_counts("residual", w, 8, 50)
  np.testing.assert_array_equal(counts, np.tile([4, 2, 1, 1], (50, 1)))


@settings(max_examples=25, deadline=None)
@given(
  st.lists(st.floats(0.0, 1.0), min_size=6, max_size=6).filter(lambda v: sum(v) > 1e-3),
  st.integers(0, 2**31 - 1),
  st.sampled_from(SCHEMES),
)
def test_indices_are_valid_and_only_point_at_positive_weights(values, seed, scheme):
  w = np.asarray(values)
  idx = np.asarray(resampling.SCHEMES[scheme](jax.random.key(seed), jnp.asarray(w / w.sum()), 6))
  assert idx.shape == (6,) and idx.min() >= 0 and idx.max() < 6
  assert np.all(w[idx] > 0)


def test_ess_closed_forms():
  assert float(resampling.ess(jnp.zeros(10))) == pytest.approx(10.0)
  assert float(resampling.ess(jnp.array([0.0, -jnp.inf, -jnp.inf]))) == pytest.approx(1.0)
  w = np.array([0.5, 0.3, 0.2])
  assert float(resampling.ess(jnp.log(jnp.asarray(w)))) == pytest.approx(1.0 / np.sum(w**2), rel=1e-6)


def test_log_weights_that_underflow_stay_finite(key):
  lw = jnp.array([-1e4, -1e4 + 1.0, -1e4 + 3.0, -2e4], jnp.float32)  # exp() underflows to 0 for every entry
  norm = resampling.normalize_log_weights(lw)
  assert np.all(np.isfinite(np.asarray(norm[:3])))
  # float32 spacing near 1e4 is ~1e-3, which bounds how well the sum can come back to 1.
  np.testing.assert_allclose(np.exp(np.asarray(norm)).sum(), 1.0, rtol=2e-3)
  idx = resampling.resample_log(key, lw, 1000)
  assert set(np.unique(np.asarray(idx))) <= {0, 1, 2}
  assert np.isfinite(float(resampling.ess(lw)))
  # All -inf (every particle impossible): uniform, not NaN.
  np.testing.assert_allclose(np.asarray(resampling.normalize_log_weights(jnp.full(4, -jnp.inf))), np.log(0.25))


def test_adaptive_rule(key):
  lw = jnp.log(jnp.array([0.7, 0.1, 0.1, 0.1]))  # ESS = 1 / 0.52 ≈ 1.92
  never = resampling.adaptive_resample(key, lw, ess_threshold=0.0)
  assert not bool(never.resampled)
  np.testing.assert_array_equal(np.asarray(never.ancestors), np.arange(4))
  np.testing.assert_allclose(np.asarray(never.log_weights), np.asarray(lw))
  assert float(never.log_normalizer_increment) == 0.0
  low = resampling.adaptive_resample(key, lw, ess_threshold=0.4)  # 1.92 >= 1.6: keep
  high = resampling.adaptive_resample(key, lw, ess_threshold=0.5)  # 1.92 < 2: resample
  assert not bool(low.resampled) and bool(high.resampled)
  np.testing.assert_allclose(np.asarray(high.log_weights), 0.0)
  assert float(high.log_normalizer_increment) == pytest.approx(float(jax.nn.logsumexp(lw) - np.log(4)), abs=1e-6)


def test_same_key_same_result_and_jit_matches(key):
  w = jnp.asarray(WEIGHTS, jnp.float32)
  for scheme in SCHEMES:
    fn = resampling.SCHEMES[scheme]
    a, b = fn(key, w, 8), jax.jit(fn, static_argnums=2)(key, w, 8)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_bad_input_is_rejected(key):
  with pytest.raises(ValueError, match="`log_weights` must be a 1-D array over at least one particle"):
    resampling.normalize_log_weights(jnp.zeros(0))
  with pytest.raises(ValueError, match="weights"):
    resampling.systematic(key, jnp.ones((2, 3)), 3)
  with pytest.raises(ValueError, match="num_samples"):
    resampling.multinomial(key, jnp.ones(3) / 3, 0)
  with pytest.raises(TypeError, match="floating"):
    resampling.stratified(key, jnp.ones(3, jnp.int32), 3)
  with pytest.raises(TypeError, match="`resampler`"):
    resampling.adaptive_resample(key, jnp.zeros(3), resampler="ssp")
  with pytest.raises(ValueError, match="ess_threshold"):
    resampling.adaptive_resample(key, jnp.zeros(3), ess_threshold=2.0)


@pytest.mark.parametrize("threshold", [0.0, 0.5, 0.9, 1.0])
def test_a_traced_threshold_decides_as_a_concrete_one(key, threshold):
  # A traced threshold used to raise TracerBoolConversionError.
  log_weights = jnp.log(jnp.array([0.7, 0.1, 0.1, 0.1]))  # ESS = 1 / 0.52 ≈ 1.92 of 4
  traced = jax.jit(lambda t: resampling.adaptive_resample(key, log_weights, ess_threshold=t))(threshold)
  concrete = resampling.adaptive_resample(key, log_weights, ess_threshold=threshold)
  assert bool(traced.resampled) == bool(concrete.resampled) == (threshold > 1.92 / 4)
  np.testing.assert_array_equal(traced.ancestors, concrete.ancestors)


@pytest.mark.parametrize(
  ("weights", "error", "match"),
  [
    (np.array([0.5, np.nan, 0.5]), ValueError, "`weights` contains NaN"),
    (np.array([0.5, -0.1, 0.6]), ValueError, "`weights` must be non-negative"),
    (np.zeros(3), ValueError, "`weights` must have a positive finite sum"),
    (np.ones((2, 3)), ValueError, "`weights` must be a 1-D array"),
    (np.ones(3, np.int32), TypeError, "`weights` must be a floating array"),
  ],
)
def test_residual_bad_weights(key, weights, error, match):
  with pytest.raises(error, match=match):
    resampling.residual(key, jnp.asarray(weights), 3)


def test_residual_bad_num_samples(key):
  for num_samples in (0, 2.0, None):
    with pytest.raises(ValueError, match="`num_samples`"):
      resampling.residual(key, jnp.ones(3) / 3, num_samples)


@pytest.mark.parametrize(
  ("log_weights", "error"),
  [
    (jnp.zeros(0), ValueError),
    (jnp.zeros((2, 3)), ValueError),
    (jnp.zeros(()), ValueError),
    (jnp.zeros(3, int), TypeError),
  ],
)
def test_ess_and_log_ess_bad_log_weights(log_weights, error):
  with pytest.raises(error, match="`log_weights`"):
    resampling.ess(log_weights)
  with pytest.raises(error, match="`log_weights`"):
    resampling.log_ess(log_weights)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_resample_log_bad_log_weights(key, bad):
  # Either value used to reach the resampler as all-NaN weights, reported as NaN at every index of `weights`.
  with pytest.raises(ValueError, match="`log_weights` must be free of NaN and \\+inf, got .* at indices \\[1\\]"):
    resampling.resample_log(key, jnp.array([0.0, bad, -1.0]))
  with pytest.raises(ValueError, match="`log_weights` must be a 1-D array"):
    resampling.resample_log(key, jnp.zeros(()))
  with pytest.raises(TypeError, match="`resampler`"):
    resampling.resample_log(key, jnp.zeros(3), resampler="systematic")
  with pytest.raises(ValueError, match="`num_samples`"):
    resampling.resample_log(key, jnp.zeros(3), 0)
  # -inf is a zero weight, not an error; all -inf is uniform (normalize_log_weights).
  assert set(np.asarray(resampling.resample_log(key, jnp.array([-jnp.inf, 0.0, -jnp.inf]), 4)).tolist()) == {1}


@pytest.mark.parametrize("resampler", ["systematic", None, 3])
def test_check_resampler_bad_resampler(resampler):
  with pytest.raises(TypeError, match="`resampler`"):
    resampling.check_resampler(resampler)
  assert resampling.check_resampler(resampling.residual) is resampling.residual
