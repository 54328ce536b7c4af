"""The shipped digits equal scikit-learn's, and the split's label noise is exactly what it says."""

import jax
import numpy as np
import pytest
from sklearn import datasets

from toolkit.data import digits


def test_shipped_digits_equal_scikit_learn():
  ours = digits.load_digits()
  theirs = datasets.load_digits()
  np.testing.assert_array_equal(ours.images, theirs.data.astype(np.float32))
  np.testing.assert_array_equal(ours.labels, theirs.target)


def test_split_is_disjoint_standardised_and_noisy_by_the_fraction_asked():
  split = digits.digits_split(jax.random.key(3), 300, num_test=400, label_noise=0.25)
  flipped = split.y_train != split.y_train_clean
  assert flipped.sum() == 75  # every noisy label is a different class
  np.testing.assert_allclose(split.x_train.mean(0), 0.0, atol=1e-5)
  std = split.x_train.std(0)
  assert np.all((np.abs(std - 1) < 1e-4) | (std == 0))
  # Train and test are disjoint rows: the raw images of the two sets share no row index.
  raw = digits.digits_split(jax.random.key(3), 300, num_test=400, standardize=False)
  images = digits.load_digits().images
  rows = lambda x: {int(np.flatnonzero((images == r).all(1))[0]) for r in x}
  assert len(rows(raw.x_train) | rows(raw.x_test)) > 0.99 * 700  # duplicates of identical images aside
  same = digits.digits_split(jax.random.key(3), 300, num_test=400, label_noise=0.25)
  np.testing.assert_array_equal(same.y_train, split.y_train)  # same key, same split


def test_bad_split_arguments_are_refused():
  key = jax.random.key(0)
  with pytest.raises(ValueError, match="num_train"):
    digits.digits_split(key, 0)
  with pytest.raises(ValueError, match="num_test"):
    digits.digits_split(key, 1000, num_test=1000)
  with pytest.raises(ValueError, match="label_noise"):
    digits.digits_split(key, 100, label_noise=1.5)
