"""The modular-arithmetic task against a brute-force table."""

import numpy as np
import pytest

from toolkit.data import modular_arithmetic


@pytest.mark.parametrize(
  "op, fn", [("add", lambda a, b: a + b), ("sub", lambda a, b: a - b), ("mul", lambda a, b: a * b)]
)
def test_labels_inputs_and_split(key, op, fn):
  p = 13
  d = modular_arithmetic(key, p=p, train_fraction=0.4, op=op)
  assert d.x_train.shape == (round(0.4 * p * p), 2 * p) and d.x_test.shape[0] == p * p - d.x_train.shape[0]
  for x, y, pairs in [(d.x_train, d.y_train, d.pairs_train), (d.x_test, d.y_test, d.pairs_test)]:
    pairs = np.asarray(pairs)
    np.testing.assert_array_equal(y, fn(pairs[:, 0], pairs[:, 1]) % p)
    np.testing.assert_array_equal(np.argmax(x[:, :p], 1), pairs[:, 0])
    np.testing.assert_array_equal(np.argmax(x[:, p:], 1), pairs[:, 1])
    np.testing.assert_array_equal(np.sum(x, 1), 2.0)
  every = {tuple(r) for r in np.concatenate([d.pairs_train, d.pairs_test]).tolist()}
  assert every == {(a, b) for a in range(p) for b in range(p)}  # a partition of all p² pairs


def test_same_key_same_split(key):
  a, b = modular_arithmetic(key, p=11), modular_arithmetic(key, p=11)
  np.testing.assert_array_equal(a.pairs_train, b.pairs_train)


@pytest.mark.parametrize(
  "kwargs, match",
  [({"op": "div"}, "op"), ({"p": 1}, "p"), ({"train_fraction": 1.0}, "train_fraction")],
)
def test_bad_arguments(key, kwargs, match):
  with pytest.raises(ValueError, match=match):
    modular_arithmetic(key, **kwargs)
