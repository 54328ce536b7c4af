"""The handwritten digits of scikit-learn's ``load_digits`` (UCI, 1797 images of 8×8 pixels), shipped with the
toolkit (``datasets/SOURCE.md``) so that nothing is downloaded and scikit-learn is not needed at run time.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pathlib
from typing import NamedTuple

import jax
import numpy as np

DATASETS_DIR = pathlib.Path(__file__).resolve().parent / "datasets"
DIGITS_SHA256 = "6ebb3d2fee246a4e99363262ddf8a00a3c41bee6014c373ed9d9216ba7f651b8"
NUM_DIGITS_CLASSES = 10


class Digits(NamedTuple):
  """Images as float32 pixels in [0, 16], (n, 64) in row-major 8×8 order, and labels int32 in 0..9, (n,)."""

  images: np.ndarray
  labels: np.ndarray


def load_digits() -> Digits:
  """All 1797 digits, in the order of scikit-learn's ``load_digits`` (the file's SHA-256 is checked).

  >>> d = load_digits()
  >>> d.images.shape, d.labels.shape, int(d.images.max()), int(np.bincount(d.labels).min())
  ((1797, 64), (1797,), 16, 174)
  """
  raw = gzip.decompress((DATASETS_DIR / "digits.csv.gz").read_bytes())
  if hashlib.sha256(raw).hexdigest() != DIGITS_SHA256:
    raise ValueError(f"{DATASETS_DIR / 'digits.csv.gz'} does not match its recorded SHA-256.")
  table = np.loadtxt(io.BytesIO(raw), delimiter=",", dtype=np.float32)
  return Digits(table[:, :-1], table[:, -1].astype(np.int32))


class DigitsSplit(NamedTuple):
  """A train/test split of the digits; ``y_*_clean`` are the labels before any label noise."""

  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  y_train_clean: np.ndarray


def digits_split(
  key: jax.Array, num_train: int, *, num_test: int | None = None, label_noise: float = 0.0, standardize: bool = True
) -> DigitsSplit:
  """A random train/test split of the digits, pixels standardised with the training set's mean and standard
  deviation (constant pixels left at 0), and a fraction ``label_noise`` of the training labels replaced by a
  uniformly drawn *different* class.

  >>> s = digits_split(jax.random.key(0), 200, num_test=500, label_noise=0.2)
  >>> s.x_train.shape, s.x_test.shape, float(np.mean(s.y_train != s.y_train_clean))
  ((200, 64), (500, 64), 0.2)
  """
  data = load_digits()
  n = data.labels.shape[0]
  if not isinstance(num_train, int | np.integer) or not 1 <= num_train < n:
    raise ValueError(f"`num_train` must be an int in [1, {n}), got {num_train!r}.")
  num_test = n - num_train if num_test is None else num_test
  if not isinstance(num_test, int | np.integer) or not 1 <= num_test <= n - num_train:
    raise ValueError(f"`num_test` must be an int in [1, {n - num_train}], got {num_test!r}.")
  if not 0.0 <= label_noise <= 1.0:
    raise ValueError(f"`label_noise` must lie in [0, 1], got {label_noise!r}.")
  k_perm, k_noisy, k_class = jax.random.split(key, 3)
  order = np.asarray(jax.random.permutation(k_perm, n))
  train, test = order[:num_train], order[num_train : num_train + num_test]
  x_train, x_test = data.images[train], data.images[test]
  if standardize:
    mean, std = x_train.mean(0), x_train.std(0)
    std = np.where(std > 0, std, 1.0)
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
  y_clean = data.labels[train]
  num_noisy = round(label_noise * num_train)
  noisy = np.asarray(jax.random.permutation(k_noisy, num_train))[:num_noisy]
  shift = np.asarray(jax.random.randint(k_class, (num_noisy,), 1, NUM_DIGITS_CLASSES))
  y_train = y_clean.copy()
  y_train[noisy] = (y_clean[noisy] + shift) % NUM_DIGITS_CLASSES
  return DigitsSplit(x_train.astype(np.float32), y_train, x_test.astype(np.float32), data.labels[test], y_clean)
