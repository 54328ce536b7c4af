"""The bias-free ReLU MLP is positively homogeneous: f(cθ) = c^L f(θ) (the premise of ⊥Grad, arXiv 2501.04697)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toolkit.models import MLP


def test_bias_free_mlp_is_homogeneous_of_degree_depth(key, x64):
  model = MLP(features=(16, 16, 7))
  x = jax.random.normal(key, (5, 10))
  params = jax.tree.map(lambda t: t.astype(np.float64), model.init(key, x))  # flax inits in float32
  c = 1.7
  scaled = jax.tree.map(lambda t: c * t, params)
  np.testing.assert_allclose(model.apply(scaled, x), c**3 * model.apply(params, x), rtol=1e-10)
  np.testing.assert_array_equal(np.argmax(model.apply(scaled, x), -1), np.argmax(model.apply(params, x), -1))


def test_init_is_torch_linear_default(key):
  """U(±1/√fan_in) weights, as torch.nn.Linear initialises them."""
  params = MLP(features=(400,)).init(key, np.zeros((1, 300), np.float32))
  w = np.asarray(params["params"]["dense_0"]["kernel"])
  bound = 1 / np.sqrt(300)
  assert np.all(np.abs(w) <= bound) and np.abs(w).max() > 0.99 * bound
  np.testing.assert_allclose(w.var(), bound**2 / 3, rtol=0.02)


@pytest.mark.parametrize("features", [(), (0,), (8, -1), (8.0, 2)])
def test_bad_widths_are_refused(features):
  # (0,) used to raise ZeroDivisionError from the initialiser.
  with pytest.raises(ValueError, match="`features` must be a non-empty sequence of positive ints"):
    MLP(features=features)


def test_numpy_integer_widths_are_accepted():
  params = MLP(features=(np.int64(4), 2)).init(jax.random.key(0), jnp.ones((1, 3)))
  assert params["params"]["dense_0"]["kernel"].shape == (3, 4)
