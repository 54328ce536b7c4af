"""⊥Grad against its formula written out in numpy float64, and its use inside optax chains."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from toolkit.optim import perp_adamw, perpgrad


def np_perp(g, theta, rescale=True):
  """g - (θᵀg / θᵀθ) θ on flat float64 vectors, rescaled to ‖g‖ (arXiv 2501.04697, Eq. 9 and the authors' code)."""
  g = np.asarray(g, np.float64).ravel()
  theta = np.asarray(theta, np.float64).ravel()
  perp = g - (theta @ g) / (theta @ theta) * theta
  if rescale:
    perp *= np.linalg.norm(g) / np.linalg.norm(perp)
  return perp


def tree_pair(key):
  k1, k2, k3, k4 = jax.random.split(key, 4)
  params = {"w": jax.random.normal(k1, (6, 5)), "v": jax.random.normal(k2, (5,))}
  grads = {"w": jax.random.normal(k3, (6, 5)), "v": jax.random.normal(k4, (5,))}
  return params, grads


def test_per_leaf_projection_matches_numpy_and_is_orthogonal(key):
  params, grads = tree_pair(key)
  tx = perpgrad()
  out, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  for name in params:
    g, p, q = (np.asarray(t[name], np.float64) for t in (grads, params, out))
    np.testing.assert_allclose(q.ravel(), np_perp(g, p), rtol=1e-5, atol=1e-6)
    assert abs(q.ravel() @ p.ravel()) <= 1e-5 * np.linalg.norm(q) * np.linalg.norm(p)
    np.testing.assert_allclose(np.linalg.norm(q), np.linalg.norm(g), rtol=1e-5)


def test_global_projection_treats_all_leaves_as_one_vector(key):
  params, grads = tree_pair(key)
  tx = perpgrad(per_leaf=False)
  out, _ = tx.update(grads, tx.init(params), params)
  flat = lambda t: np.concatenate([np.ravel(t["v"]), np.ravel(t["w"])])
  np.testing.assert_allclose(flat(out), np_perp(flat(grads), flat(params)), rtol=1e-5, atol=1e-6)
  # Orthogonal to θ as a whole, but (generically) not leaf by leaf.
  assert abs(flat(out) @ flat(params)) <= 1e-5 * np.linalg.norm(flat(out)) * np.linalg.norm(flat(params))
  assert abs(np.ravel(out["w"]) @ np.ravel(params["w"])) > 1e-3


def test_without_rescale_the_norm_is_pythagoras(key):
  params, grads = tree_pair(key)
  tx = perpgrad(rescale=False)
  out, _ = tx.update(grads, tx.init(params), params)
  g, p, q = (np.asarray(t["w"], np.float64).ravel() for t in (grads, params, out))
  np.testing.assert_allclose(q @ q, g @ g - (p @ g) ** 2 / (p @ p), rtol=1e-5)


@settings(deadline=None, max_examples=25)
@given(
  hnp.arrays(np.float32, (3, 4), elements=st.floats(-10, 10, width=32)),
  hnp.arrays(np.float32, (3, 4), elements=st.floats(-10, 10, width=32)),
)
# Found by hypothesis: g at 0.2° from θ. A single projection left 1e-3 along θ after the ×300 rescaling.
@example(
  theta=np.pad(np.array([[5.21875, 5.25]], np.float32), ((0, 2), (0, 2))),
  g=np.pad(np.array([[5.25, 5.25]], np.float32), ((0, 2), (0, 2))),
)
def test_property_orthogonal_and_norm_preserving(theta, g):
  tx = perpgrad()
  out, _ = jax.jit(tx.update)(g, tx.init(theta), theta)
  out = np.asarray(out, np.float64)
  theta64, g64 = theta.astype(np.float64), g.astype(np.float64)
  assert np.all(np.isfinite(out))
  norm_g, norm_t, norm_q = np.linalg.norm(g64), np.linalg.norm(theta64), np.linalg.norm(out)
  assert abs(np.sum(out * theta64)) <= 1e-5 * max(norm_q * norm_t, 1e-30) + 1e-6
  # Either the norm is kept or the gradient was (numerically) parallel to θ and the update is zero.
  assert np.isclose(norm_q, norm_g, rtol=1e-4) or norm_q == 0.0


def test_zero_parameters_and_parallel_gradients_are_safe():
  tx = perpgrad()
  g = jnp.array([1.0, -2.0, 3.0])
  out, _ = tx.update(g, tx.init(g), jnp.zeros(3))  # θ = 0: nothing to remove
  np.testing.assert_array_equal(out, g)
  theta = jnp.array([0.3, -1.7, 2.2])
  out, _ = tx.update(-4.0 * theta, tx.init(theta), theta)  # g ∥ θ: the whole gradient is removed
  np.testing.assert_array_equal(out, jnp.zeros(3))
  out, _ = tx.update(jnp.zeros(3), tx.init(theta), theta)  # g = 0 stays 0, no NaN
  np.testing.assert_array_equal(out, jnp.zeros(3))


def test_composes_in_chain_under_jit_and_equals_adamw_on_projected_gradient(key):
  params, grads = tree_pair(key)
  tx = perp_adamw(1e-2)
  state = tx.init(params)
  updates, state = jax.jit(tx.update)(grads, state, params)
  projected = {k: jnp.asarray(np_perp(grads[k], params[k]).reshape(params[k].shape), jnp.float32) for k in params}
  adam = optax.adamw(1e-2, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0)
  expected, _ = adam.update(projected, adam.init(params), params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), updates, expected)
  # A second step runs from the carried state, and jit and eager agree.
  eager, _ = tx.update(grads, state, params)
  jitted, _ = jax.jit(tx.update)(grads, state, params)
  # XLA fuses differently under jit: equal up to float32 rounding.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9), eager, jitted)


@pytest.mark.parametrize("per_leaf", [True, False])
@pytest.mark.parametrize(("grad_scale", "param_scale"), [(1e25, 1.0), (1.0, 1e20), (1e-30, 1e-25), (1e30, 1e-30)])
def test_extreme_scales_give_the_unit_scale_update(key, per_leaf, grad_scale, param_scale):
  # Squaring g ×1e25 overflowed float32 (a zero update); θ ×1e20 skipped the projection.
  k1, k2 = jax.random.split(key)
  params = {"a": jax.random.normal(k1, (3, 4)), "b": jax.random.normal(k2, (5,))}
  grads = jax.tree.map(lambda p: jnp.cos(3 * p) + 0.5, params)
  tx = perpgrad(per_leaf=per_leaf)
  expected, _ = tx.update(grads, tx.init(params), params)
  scaled_grads = jax.tree.map(lambda g: g * jnp.float32(grad_scale), grads)
  scaled_params = jax.tree.map(lambda p: p * jnp.float32(param_scale), params)
  updates, _ = tx.update(scaled_grads, tx.init(scaled_params), scaled_params)
  for u, e in zip(jax.tree.leaves(updates), jax.tree.leaves(expected)):
    np.testing.assert_allclose(np.asarray(u, np.float64) / grad_scale, e, rtol=1e-4, atol=1e-5)


def test_bad_use_raises_clear_errors(key):
  params, grads = tree_pair(key)
  tx = perpgrad()
  with pytest.raises(ValueError, match="needs the parameters"):
    tx.update(grads, tx.init(params))
  with pytest.raises(ValueError, match="tree structure"):
    tx.update(grads, tx.init(params), {"w": params["w"]})
  with pytest.raises(ValueError, match="shape"):
    tx.update({"v": grads["v"], "w": grads["w"].T}, tx.init(params), params)
  with pytest.raises(ValueError, match="parallel_rtol"):
    perpgrad(parallel_rtol=-1.0)


@pytest.mark.parametrize(
  ("kwargs", "error", "match"),
  [
    ({"learning_rate": -0.01}, ValueError, "`learning_rate`"),
    ({"learning_rate": 0.0}, ValueError, "`learning_rate`"),
    ({"learning_rate": float("nan")}, ValueError, "`learning_rate`"),
    ({"learning_rate": "0.01"}, TypeError, "`learning_rate`"),
    ({"b1": 1.0}, ValueError, "`b1`"),
    ({"b1": -0.1}, ValueError, "`b1`"),
    ({"b2": 1.5}, ValueError, "`b2`"),
    ({"eps": -1e-8}, ValueError, "`eps`"),
    ({"eps": float("nan")}, ValueError, "`eps`"),
    ({"weight_decay": -0.1}, ValueError, "`weight_decay`"),
    ({"weight_decay": "none"}, TypeError, "`weight_decay`"),
  ],
)
def test_perp_adamw_bad_hyperparameters(kwargs, error, match):
  with pytest.raises(error, match=match):
    perp_adamw(**{"learning_rate": 1e-2, **kwargs})


def test_perp_adamw_accepts_schedules_and_traced_hyperparameters(key):
  params, grads = tree_pair(key)
  tx = perp_adamw(optax.linear_schedule(1e-2, 0.0, 10), weight_decay=lambda step: 1e-4, b1=0, eps=0)
  tx.update(grads, tx.init(params), params)
  # optax.inject_hyperparams calls the factory with arrays, traced under jit.
  tx = optax.inject_hyperparams(perp_adamw)(learning_rate=1e-2, b2=0.99)
  jax.jit(tx.update)(grads, jax.jit(tx.init)(params), params)
