"""Binary classification tasks of Sclocchi, Geiger and Wyart (ICML 2023, arXiv 2301.13703) for the SGD-noise
experiments, labels in {−1, +1}.

- ``sign``: ``x ~ N(0, I_d)``, ``y = sign(x₁)`` (a perceptron task: one informative direction, data dense at the
  boundary);
- ``stripe``: ``x ~ N(0, I_d)``, ``y = +1`` iff ``−0.3 < x₁ < 1.18549`` (two parallel boundaries; the bounds make
  the classes balanced, as in the authors' ``sgd_jax.py``);
- ``digits_parity``: the scikit-learn digits shipped with the toolkit (``toolkit.data.digits``), pixels
  standardised, ``y = −1`` for odd digits (the paper uses MNIST parity, which we cannot ship; our substitute).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from toolkit.data import digits as digits_data

STRIPE_LOW, STRIPE_HIGH = -0.3, 1.18549
TASKS = ("sign", "stripe", "digits_parity")


class Task(NamedTuple):
  """Training and test inputs (n, d) and labels (n,) in {−1, +1}, float32."""

  x_train: jax.Array
  y_train: jax.Array
  x_test: jax.Array
  y_test: jax.Array


def label(name: str, x: jax.Array) -> jax.Array:
  """The labels of the synthetic task ``name`` ("sign" or "stripe") at inputs ``x`` (n, d).

  >>> label("stripe", jnp.array([[-1.0, 0.0], [0.0, 5.0], [2.0, 0.0]])).tolist()
  [-1.0, 1.0, -1.0]
  """
  if jnp.ndim(x) != 2 or jnp.shape(x)[1] < 1:
    raise ValueError(f"`x` must have shape (n, d) with d >= 1, got {jnp.shape(x)}.")
  if name == "sign":
    return jnp.where(x[:, 0] > 0, 1.0, -1.0)
  if name == "stripe":
    return jnp.where((x[:, 0] > STRIPE_LOW) & (x[:, 0] < STRIPE_HIGH), 1.0, -1.0)
  raise ValueError(f"`name` must be 'sign' or 'stripe' for a synthetic label, got {name!r}.")


def make_task(name: str, key: jax.Array, num_train: int, num_test: int, dim: int = 5) -> Task:
  """A task: ``sign``/``stripe`` with Gaussian inputs in ``dim`` dimensions, or ``digits_parity`` (64 pixels;
  ``dim`` ignored; ``num_train + num_test ≤ 1797``).

  >>> t = make_task("sign", jax.random.key(0), 100, 50, dim=3)
  >>> t.x_train.shape, t.y_test.shape, np.unique(t.y_train).tolist()
  ((100, 3), (50,), [-1.0, 1.0])
  """
  if name not in TASKS:
    raise ValueError(f"`name` must be one of {TASKS}, got {name!r}.")
  for value, arg in ((num_train, "num_train"), (num_test, "num_test"), (dim, "dim")):
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
      raise ValueError(f"`{arg}` must be a positive int, got {value!r}.")
  if name == "digits_parity":
    split = digits_data.digits_split(key, num_train, num_test=num_test)
    to_label = lambda d: jnp.where(jnp.asarray(d) % 2 == 1, -1.0, 1.0)
    return Task(jnp.asarray(split.x_train), to_label(split.y_train), jnp.asarray(split.x_test), to_label(split.y_test))
  k_train, k_test = jax.random.split(key)
  x_train = jax.random.normal(k_train, (num_train, dim))
  x_test = jax.random.normal(k_test, (num_test, dim))
  return Task(x_train, label(name, x_train), x_test, label(name, x_test))


__all__ = ["STRIPE_HIGH", "STRIPE_LOW", "TASKS", "Task", "label", "make_task"]
