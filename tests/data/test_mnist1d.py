"""MNIST-1D against the reference construction written again with numpy and scipy, and against the paper's
logistic-regression accuracy.

The oracle ``reference_transform`` follows github.com/greydanus/mnist1d (``mnist1d/transform.py``) step by step with
scipy's ``interp1d`` and ``gaussian_filter``, the ``x != 0`` mask after adding ``eps`` and ``np.roll``; fed numpy's
``seed=42`` draws in the reference's order it reproduced the package's published ``mnist1d_data.pkl`` to 1e-15
(checked once during development; the pickle is not shipped).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.interpolate import interp1d
from scipy.ndimage import gaussian_filter
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from toolkit.data import mnist1d

# Every transform off: no padding, scale 1, no shift, no noise, no shear.
OFF = {
  "padding": (0, 0),
  "scale_coeff": 0.0,
  "max_translation": 1,
  "corr_noise_scale": 0.0,
  "iid_noise_scale": 0.0,
  "shear_scale": 0.0,
}


def reference_transform(template, tr, *, length, corr_noise_scale, iid_noise_scale, final_seq_length=40):
  x = np.concatenate([np.float64(template) + 1e-8, np.zeros(int(tr.num_pad))])
  x = interp1d(np.linspace(0, 1, len(x)), x)(np.linspace(0, 1, length))
  x = np.roll(x * float(tr.scale), int(tr.shift))
  x = np.where(x != 0, x, gaussian_filter(corr_noise_scale * np.float64(tr.corr_noise), 2))
  x = x + iid_noise_scale * np.float64(tr.iid_noise) - float(tr.shear) * np.linspace(-0.5, 0.5, length)
  return interp1d(np.linspace(0, 1, length), x)(np.linspace(0, 1, final_seq_length))


@pytest.fixture(scope="module")
def split():
  return mnist1d.mnist1d_split(0)


def test_shapes_balance_determinism_and_jit():
  data = mnist1d.make_mnist1d(0, 200)
  assert data.x.shape == (200, 40) and data.x.dtype == jnp.float32 and data.y.dtype == jnp.int32
  np.testing.assert_array_equal(np.bincount(data.y), [20] * 10)
  np.testing.assert_allclose(data.t, np.linspace(-5 / 6, 5 / 6, 40), atol=1e-6)
  again = mnist1d.make_mnist1d(jax.random.key(0), 200)  # an int seed is jax.random.key(seed)
  np.testing.assert_array_equal(again.x, data.x)
  np.testing.assert_array_equal(again.y, data.y)
  jitted = jax.jit(lambda key: mnist1d.make_mnist1d(key, 200))(jax.random.key(0))
  np.testing.assert_allclose(jitted.x, data.x, atol=1e-6)
  other = mnist1d.make_mnist1d(1, 200)
  assert np.mean(np.asarray(other.y) != np.asarray(data.y)) > 0.5
  assert not np.allclose(other.x, data.x)
  # shuffle_seq permutes the points of every signal by one common permutation.
  shuffled = np.asarray(mnist1d.make_mnist1d(0, 200, shuffle_seq=True).x)
  distance = np.abs(shuffled[:, :, None] - np.asarray(data.x)[:, None, :]).max(0)  # (shuffled point, point)
  assert np.all(distance.min(1) < 1e-5)
  order = distance.argmin(1).tolist()
  assert sorted(order) == list(range(40)) and order != list(range(40))


def test_split_is_balanced_standardised_deterministic_and_a_partition(split):
  assert split.x_train.shape == (4000, 40) and split.x_test.shape == (1000, 40)
  assert split.x_train.dtype == np.float32 and split.y_train.dtype == np.int32
  np.testing.assert_array_equal(np.bincount(split.y_train), [400] * 10)
  np.testing.assert_array_equal(np.bincount(split.y_test), [100] * 10)
  assert abs(split.x_train.mean()) < 1e-5 and abs(split.x_train.std() - 1) < 1e-5
  same = mnist1d.mnist1d_split(0)
  np.testing.assert_array_equal(same.x_train, split.x_train)
  np.testing.assert_array_equal(same.y_test, split.y_test)
  raw = mnist1d.mnist1d_split(0, standardize=False)
  whole = np.asarray(mnist1d.make_mnist1d(0, 5000).x)
  rows = lambda x: {r.tobytes() for r in x}
  assert rows(raw.x_train) | rows(raw.x_test) == rows(whole) and not rows(raw.x_train) & rows(raw.x_test)
  np.testing.assert_allclose((raw.x_test - raw.x_train.mean()) / raw.x_train.std(), split.x_test, atol=1e-5)
  assert not np.allclose(mnist1d.mnist1d_split(1, standardize=False).x_train, raw.x_train)


def test_templates_are_the_raw_digits_normalised():
  templates = mnist1d.mnist1d_templates()
  np.testing.assert_allclose(templates[:, [0, -1]], 0.0, atol=1e-7)  # every digit starts and ends at 0
  np.testing.assert_allclose(6 * templates.std(1), 1.0, atol=1e-5)
  for raw, template in zip(mnist1d.RAW_TEMPLATES, templates, strict=True):
    assert np.corrcoef(raw, template)[0, 1] > 1 - 1e-6  # an increasing affine map of the raw digit


def test_every_transform_off_gives_the_template_interpolated_to_40_points():
  data = mnist1d.make_mnist1d(3, 30, **OFF)
  templates = mnist1d.mnist1d_templates()
  for x, y in zip(np.asarray(data.x), np.asarray(data.y), strict=True):
    np.testing.assert_allclose(x, np.interp(np.linspace(0, 11, 40), np.arange(12), templates[y]), atol=1e-6)


@functools.partial(jax.jit, static_argnames="final_seq_length")
def apply_batch(templates, transforms, corr_noise_scale, iid_noise_scale, final_seq_length=40):
  apply = functools.partial(mnist1d.apply_transform, final_seq_length=final_seq_length)
  return jax.vmap(lambda t, tr: apply(t, tr, corr_noise_scale=corr_noise_scale, iid_noise_scale=iid_noise_scale))(
    templates, transforms
  )


def test_draws_follow_the_reference_distributions_and_the_transform_matches_the_reference_pipeline():
  transforms = mnist1d.sample_transforms(jax.random.key(1), 2000)
  np.testing.assert_array_equal(np.unique(transforms.num_pad), np.arange(36, 61))
  np.testing.assert_array_equal(np.unique(transforms.shift), np.arange(48))
  assert stats.kstest(np.asarray(transforms.scale), stats.uniform(0.8, 0.4).cdf).pvalue > 1e-3
  assert stats.kstest(np.asarray(transforms.shear), stats.uniform(-0.375, 0.75).cdf).pvalue > 1e-3
  for noise in (transforms.corr_noise, transforms.iid_noise):
    assert stats.kstest(np.asarray(noise[:, ::7]).ravel(), "norm").pvalue > 1e-3
  assert abs(np.corrcoef(np.asarray(transforms.corr_noise[:, 0]), transforms.iid_noise[:, 0])[0, 1]) < 0.1

  few = jax.tree.map(lambda a: a[:24], transforms)
  labels = np.arange(24) % 10
  templates = mnist1d.mnist1d_templates()
  ours = np.asarray(apply_batch(templates[labels], few, 0.25, 0.02))
  for i in range(24):
    tr = jax.tree.map(lambda a, i=i: np.asarray(a[i]), few)
    expected = reference_transform(templates[labels[i]], tr, length=72, corr_noise_scale=0.25, iid_noise_scale=0.02)
    np.testing.assert_allclose(ours[i], expected, atol=2e-5)


def test_smoothing_matrix_is_scipys_gaussian_filter():
  noise = np.random.default_rng(0).normal(size=(72, 5))
  np.testing.assert_allclose(
    mnist1d.gaussian_smoothing_matrix(72) @ noise, gaussian_filter(noise, (2, 0)), rtol=1e-5, atol=1e-6
  )


def expected_lag1_correlation(mix, first):
  """Mean lag-1 correlation of ``mix @ z`` (z white) over the output points from ``first`` on."""
  cov = mix @ mix.T
  j = np.arange(first, cov.shape[0] - 1)
  return np.mean(cov[j, j + 1] / np.sqrt(cov[j, j] * cov[j + 1, j + 1]))


def test_correlated_noise_is_as_smooth_as_a_gaussian_filter_predicts():
  # Padding fixed at 60 and no shift: stretched points 12..71, i.e. output points 8..39, are pure noise.
  kwargs = dict(OFF, padding=(60, 60))
  corr = np.asarray(mnist1d.make_mnist1d(4, 1000, **dict(kwargs, corr_noise_scale=0.25)).x)[:, 8:]
  iid = np.asarray(mnist1d.make_mnist1d(4, 1000, **dict(kwargs, iid_noise_scale=0.02)).x)[:, 8:]
  lag1 = lambda x: np.mean(x[:, :-1] * x[:, 1:]) / np.sqrt(np.mean(x[:, :-1] ** 2) * np.mean(x[:, 1:] ** 2))
  resample = interp1d(np.arange(72), np.eye(72), axis=0)(np.linspace(0, 71, 40))  # (40, 72), independent of ours
  smooth = gaussian_filter(np.eye(72), (2, 0))
  assert abs(lag1(corr) - expected_lag1_correlation(resample @ smooth, 8)) < 0.04
  assert abs(lag1(iid) - expected_lag1_correlation(resample, 8)) < 0.04
  assert lag1(corr) > 0.7 and lag1(iid) < 0.3
  np.testing.assert_allclose(
    corr.std(), 0.25 * np.sqrt(np.mean(np.diag(resample @ smooth @ smooth.T @ resample.T)[8:])), rtol=0.1
  )


def test_logistic_regression_gets_the_papers_accuracy(split):
  # The paper's table: logistic regression 32% test accuracy (MLP 68%, CNN 94%); chance is 10%.
  with threadpool_limits(1):  # BLAS threads fighting over shared cores make this fit 100x slower
    model = LogisticRegression(max_iter=1000).fit(split.x_train, split.y_train)
  accuracy = model.score(split.x_test, split.y_test)
  assert 0.25 < accuracy < 0.42, accuracy
  assert model.score(split.x_train, split.y_train) < 0.5  # linear models cannot fit MNIST-1D


def test_bad_arguments_are_refused():
  with pytest.raises(ValueError, match="num_samples"):
    mnist1d.make_mnist1d(0, 0)
  with pytest.raises(ValueError, match="padding"):
    mnist1d.make_mnist1d(0, 10, padding=(5, 2))
  with pytest.raises(ValueError, match="max_translation"):
    mnist1d.make_mnist1d(0, 10, max_translation=0)
  with pytest.raises(ValueError, match="max_translation"):
    mnist1d.make_mnist1d(0, 10, max_translation=73)
  with pytest.raises(ValueError, match="scale_coeff"):
    mnist1d.make_mnist1d(0, 10, scale_coeff=2.0)
  with pytest.raises(ValueError, match="iid_noise_scale"):
    mnist1d.make_mnist1d(0, 10, iid_noise_scale=-0.1)
  with pytest.raises(ValueError, match="final_seq_length"):
    mnist1d.make_mnist1d(0, 10, final_seq_length=1)
  with pytest.raises(ValueError, match="templates"):
    mnist1d.make_mnist1d(0, 10, templates=np.zeros(12))
  with pytest.raises(ValueError, match="key_or_seed"):
    mnist1d.make_mnist1d(-1, 10)
  with pytest.raises(TypeError, match="key_or_seed"):
    mnist1d.make_mnist1d("0", 10)
  with pytest.raises(ValueError, match="seed"):
    mnist1d.mnist1d_split(1.5)
  with pytest.raises(ValueError, match="num_train"):
    mnist1d.mnist1d_split(0, num_train=0)
  with pytest.raises(ValueError, match="num_test"):
    mnist1d.mnist1d_split(0, num_test=-3)


@pytest.mark.parametrize(
  ("args", "kwargs", "match"),
  [
    ((0,), {}, "`num_samples` must be an int >= 1"),
    ((3,), {"template_len": 1}, "`template_len` must be an int >= 2"),
    ((3,), {"padding": (5, 2)}, "`padding` must be a pair"),
    ((3,), {"padding": (1, 2, 3)}, "`padding` must be a pair"),
    ((3,), {"max_translation": 0}, "`max_translation` must be an int in \\[1, 72\\]"),
    ((3,), {"scale_coeff": -0.1}, "`scale_coeff` must be a finite number >= 0"),
    ((3,), {"shear_scale": float("nan")}, "`shear_scale` must be a finite number >= 0"),
  ],
)
def test_bad_input_sample_transforms(args, kwargs, match):
  with pytest.raises(ValueError, match=match):
    mnist1d.sample_transforms(jax.random.key(0), *args, **kwargs)


@pytest.mark.parametrize(
  ("args", "match"),
  [((0,), "`length` must be an int >= 1"), ((8, 0.0), "`sigma` must be a scalar > 0"), ((8, 2.0, -1.0), "`truncate`")],
)
def test_bad_input_gaussian_smoothing_matrix(args, match):
  with pytest.raises(ValueError, match=match):
    mnist1d.gaussian_smoothing_matrix(*args)


def test_bad_input_apply_transform():
  template = mnist1d.mnist1d_templates()[3]
  one = jax.tree.map(lambda a: a[0], mnist1d.sample_transforms(jax.random.key(0), 1))
  with pytest.raises(ValueError, match="`template` must have shape \\(template_len >= 2,\\)"):
    mnist1d.apply_transform(mnist1d.mnist1d_templates(), one)
  with pytest.raises(TypeError, match="`transform` must be a Mnist1dTransform"):
    mnist1d.apply_transform(template, tuple(one))
  batch = mnist1d.sample_transforms(jax.random.key(0), 2)  # a batch, not one sample
  with pytest.raises(ValueError, match="`transform` must hold \\(length,\\) noise vectors"):
    mnist1d.apply_transform(template, batch)
  with pytest.raises(ValueError, match="`transform` must hold \\(length,\\) noise vectors"):
    mnist1d.apply_transform(template, one._replace(iid_noise=one.iid_noise[:-1]))
  with pytest.raises(ValueError, match="`final_seq_length` must be an int >= 2"):
    mnist1d.apply_transform(template, one, final_seq_length=1)
  with pytest.raises(ValueError, match="`corr_noise_sigma` must be a scalar > 0"):
    mnist1d.apply_transform(template, one, corr_noise_sigma=0.0)
  with pytest.raises(ValueError, match="`corr_noise_scale` must be a finite number >= 0"):
    mnist1d.apply_transform(template, one, corr_noise_scale=-0.25)
  with pytest.raises(ValueError, match="`iid_noise_scale` must be a finite number >= 0"):
    mnist1d.apply_transform(template, one, iid_noise_scale=jnp.float32(jnp.nan))
