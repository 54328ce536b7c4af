"""The synthetic design of PRESTO's §4 and its metrics, against direct numpy computations and scipy."""

import jax
import numpy as np
import pytest
import scipy.special
import scipy.stats

from toolkit.stats import ordinal_data


def test_sparse_design_truth_and_labels(key):
  data = ordinal_data.sparse_differences(key, intercepts=(0.0, 3.0, 5.0), num_samples=4000)
  x, coef = np.asarray(data.x), np.asarray(data.coef)
  assert bool(data.valid) and x.min() >= -1 and x.max() <= 1
  # β_0 entries in {0, 0.5}; differences in {0, ±0.5}.
  assert set(np.unique(coef[:, 0])) <= {0.0, 0.5}
  assert set(np.unique(np.diff(coef, axis=1))) <= {-0.5, 0.0, 0.5}
  cum = scipy.special.expit(np.asarray(data.intercepts) + x @ coef)
  probs = np.diff(np.concatenate([np.zeros((4000, 1)), cum, np.ones((4000, 1))], 1), axis=1)
  np.testing.assert_allclose(np.asarray(data.probs), probs, atol=1e-6)
  # Label frequencies agree with the mean class probabilities (multinomial standard errors).
  freq = np.bincount(np.asarray(data.y), minlength=4) / 4000
  se = np.sqrt(probs.mean(0) * (1 - probs.mean(0)) / 4000)
  assert np.all(np.abs(freq - probs.mean(0)) < 4 * se + 1e-3)
  assert np.all(np.bincount(np.asarray(data.y), minlength=4) > 0)


def test_dense_design_and_rejection(key):
  data = ordinal_data.dense_differences(key, intercepts=(0.0, 2.5, 4.5), num_samples=500)
  assert bool(data.valid) and float(data.probs.min()) >= 0
  steps = np.diff(np.concatenate([np.zeros((10, 1)), np.asarray(data.coef)], 1), axis=1)
  assert np.abs(steps).max() <= 0.5
  # Adjacent intercepts too close for the slopes: negative probabilities are unavoidable, the draw is invalid.
  bad = ordinal_data.sparse_differences(key, intercepts=(0.0, 0.0, 0.01), num_samples=500, max_tries=3)
  assert not bool(bad.valid)


def test_rare_mse_and_paired_interval():
  rng = np.random.default_rng(0)
  p_true = rng.dirichlet(np.ones(3), size=(2, 50))
  p_hat = rng.dirichlet(np.ones(3), size=(2, 50))
  np.testing.assert_allclose(
    np.asarray(ordinal_data.rare_probability_mse(p_hat, p_true)),
    ((p_hat[..., -1] - p_true[..., -1]) ** 2).mean(-1),
    rtol=1e-6,
  )
  a, b = rng.normal(size=30), rng.normal(size=30) + 0.3
  ci = ordinal_data.paired_t_interval(a, b, level=0.9)
  ref = scipy.stats.ttest_rel(a, b).confidence_interval(0.9)
  np.testing.assert_allclose([ci.low, ci.high], [ref.low, ref.high], rtol=1e-10)
  assert abs(ci.p_value - scipy.stats.ttest_rel(a, b).pvalue) < 1e-12
  with pytest.raises(ValueError, match="`level`"):
    ordinal_data.paired_t_interval(a, b, level=1.5)


def test_bad_inputs(key):
  with pytest.raises(ValueError, match="`num_samples`"):
    ordinal_data.sparse_differences(key, num_samples=0)
  with pytest.raises(ValueError, match="`intercepts`"):
    ordinal_data.sparse_differences(key, intercepts=(0.0,))
  with pytest.raises(ValueError, match="`draw_coef` must return"):
    ordinal_data.simulate(key, lambda k: jax.numpy.zeros((3, 3)), (0.0, 1.0), num_features=2)


def test_class_probabilities_bad_shapes():
  x, coef, alpha = np.zeros((5, 3)), np.zeros((3, 2)), np.zeros(2)
  with pytest.raises(ValueError, match="`x` must be \\(n, p\\) and `coef` \\(p, K-1\\)"):
    ordinal_data.class_probabilities(alpha, np.zeros(3), x)
  with pytest.raises(ValueError, match="`x` must be \\(n, p\\) and `coef` \\(p, K-1\\)"):
    ordinal_data.class_probabilities(alpha, np.zeros((4, 2)), x)
  with pytest.raises(ValueError, match="`intercepts` must have shape \\(2,\\)"):
    ordinal_data.class_probabilities(np.zeros(3), coef, x)


def test_coef_designs_bad_inputs(key):
  with pytest.raises(ValueError, match="`dev_prob` must be a probability"):
    ordinal_data.sparse_coef(key, 10, 4, dev_prob=1.5)
  with pytest.raises(ValueError, match="`dev_size` must be >= 0"):
    ordinal_data.sparse_coef(key, 10, 4, dev_size=-0.5)
  with pytest.raises(ValueError, match="`num_features` must be an int >= 1"):
    ordinal_data.sparse_coef(key, 0, 4)
  with pytest.raises(ValueError, match="`num_classes` must be an int >= 2"):
    ordinal_data.dense_coef(key, 10, 1)
  with pytest.raises(ValueError, match="`dev_size` must be >= 0"):
    ordinal_data.dense_coef(key, 10, 4, dev_size=-0.5)  # U[0.5, -0.5]: bounds reversed
  with pytest.raises(ValueError, match="`dev_size` must be >= 0"):
    ordinal_data.dense_differences(key, dev_size=float("nan"))
  with pytest.raises(ValueError, match="`num_samples`"):
    ordinal_data.dense_differences(key, num_samples=0)
  with pytest.raises(ValueError, match="`intercepts`"):
    ordinal_data.dense_differences(key, intercepts=())


def test_rare_probability_mse_bad_shapes():
  p = np.full((50, 3), 1 / 3)
  with pytest.raises(ValueError, match="`probs_hat` and `probs_true` must have one shape"):
    ordinal_data.rare_probability_mse(p[:1], p)  # (1, K) would broadcast over the n points
  with pytest.raises(ValueError, match="`probs_hat` and `probs_true` must have one shape"):
    ordinal_data.rare_probability_mse(p[:, 0], p[:, 0])
