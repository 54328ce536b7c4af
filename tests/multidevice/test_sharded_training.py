"""Grokking training sharded with jax.sharding over 8 CPU devices equals the single-device run.

Data parallel (the full batch split over devices) and model parallel (hidden units split over devices, so
⊥Grad's per-leaf dot products become cross-device reductions), on meshes with Auto and Explicit axis types.
"""

import jax
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from experiments import grokking
from toolkit.data import modular_arithmetic
from toolkit.models import MLP
from toolkit.optim import perp_adamw, perpgrad


def setup(loss="softmax"):
  data = modular_arithmetic(jax.random.key(0), p=23)
  x, y = data.x_train[:208], data.y_train[:208]  # 208 = 8 · 26 samples
  model = MLP(features=(200, 200, 23))
  params = model.init(jax.random.key(1), x[:1])
  tx = perp_adamw(0.01)
  state = grokking.TrainState(params, tx.init(params))
  step = jax.jit(lambda s, x, y: grokking.train_epochs(s, x, y, model=model, tx=tx, loss=loss, num_epochs=5))
  return state, x, y, step


def model_parallel_specs(params):
  specs = {"dense_0": P(None, "d"), "dense_1": P(None, "d"), "dense_2": P("d", None)}
  return {"params": {name: {"kernel": spec} for name, spec in specs.items()}}


@pytest.mark.parametrize("axis_type", [AxisType.Auto, AxisType.Explicit])
@pytest.mark.parametrize("loss", ["softmax", "stablemax"])
def test_data_parallel_equals_single_device(axis_type, loss):
  state, x, y, step = setup(loss)
  reference = step(state, x, y)
  mesh = jax.make_mesh((8,), ("d",), axis_types=(axis_type,))
  with jax.set_mesh(mesh):
    xs = jax.device_put(x, NamedSharding(mesh, P("d")))
    ys = jax.device_put(y, NamedSharding(mesh, P("d")))
    assert len(xs.sharding.device_set) == 8
    sharded = step(state, xs, ys)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), sharded, reference)


def test_model_parallel_perpgrad_equals_single_device():
  state, x, y, step = setup()
  reference = step(state, x, y)
  mesh = jax.make_mesh((8,), ("d",), axis_types=(AxisType.Auto,))
  specs = model_parallel_specs(state.params)
  params = jax.tree.map(lambda a, s: jax.device_put(a, NamedSharding(mesh, s)), state.params, specs)
  assert len(params["params"]["dense_1"]["kernel"].sharding.device_set) == 8
  sharded_state = grokking.TrainState(params, state.opt_state)
  with jax.set_mesh(mesh):
    result = step(sharded_state, x, y)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), result, reference)


def test_sharded_perpgrad_is_orthogonal_per_leaf():
  state, *_ = setup()
  mesh = jax.make_mesh((8,), ("d",), axis_types=(AxisType.Explicit,))
  specs = model_parallel_specs(state.params)
  put = lambda tree: jax.tree.map(lambda a, s: jax.device_put(a, NamedSharding(mesh, s)), tree, specs)
  params = put(state.params)
  grads = put(jax.tree.map(lambda a: jax.random.normal(jax.random.key(2), a.shape), state.params))
  tx = perpgrad()
  with jax.set_mesh(mesh):
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  for u, p, g in zip(jax.tree.leaves(updates), jax.tree.leaves(params), jax.tree.leaves(grads)):
    u, p, g = (np.asarray(t, np.float64).ravel() for t in (u, p, g))
    assert abs(u @ p) <= 1e-5 * np.linalg.norm(u) * np.linalg.norm(p)
    np.testing.assert_allclose(np.linalg.norm(u), np.linalg.norm(g), rtol=1e-5)
