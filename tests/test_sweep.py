"""run_sweep on one device equals a Python loop over the grid; bad grids are refused with the argument named."""

import jax
import numpy as np
import pytest

from tests import sweep_fixtures
from toolkit import sweep


def test_product_grid_is_c_order_cartesian_product():
  g = sweep.product_grid(a=[1, 2], b=[10, 20, 30])
  assert g.shape == (2, 3)
  pairs = list(zip(g.points["a"].tolist(), g.points["b"].tolist()))
  assert pairs == [(a, b) for a in (1, 2) for b in (10, 20, 30)]


def test_sweep_equals_python_loop_over_points():
  g, points = sweep_fixtures.grid(num_seeds=2)
  result = sweep.run_sweep(sweep_fixtures.train_one, points)
  size = len(points["seed"])
  fn = jax.jit(sweep_fixtures.train_one)
  for i in range(size):
    one = fn(jax.tree.map(lambda leaf, i=i: leaf[i], points))
    np.testing.assert_allclose(result["loss"][i], one["loss"], rtol=1e-5)
    np.testing.assert_allclose(result["weights"][i], one["weights"], rtol=1e-5, atol=1e-7)
  # The sweep finds what it should: wider features fit better.
  loss = result["loss"].reshape(g.shape).mean(-1)
  assert np.all(np.diff(loss[:, 1]) < 0)


def test_batch_size_chunks_give_the_same_result():
  _, points = sweep_fixtures.grid(num_seeds=1)
  whole = sweep.run_sweep(sweep_fixtures.train_one, points)
  chunked = sweep.run_sweep(sweep_fixtures.train_one, points, batch_size=3)
  np.testing.assert_allclose(chunked["loss"], whole["loss"], rtol=1e-6)


def test_bad_grids_and_arguments_are_refused():
  with pytest.raises(ValueError, match="leading axis"):
    sweep.run_sweep(lambda p: p["a"], {"a": np.zeros(3), "b": np.zeros(4)})
  with pytest.raises(ValueError, match="no points"):
    sweep.run_sweep(lambda p: p["a"], {"a": np.zeros(0)})
  with pytest.raises(TypeError, match="`fn`"):
    sweep.run_sweep(None, {"a": np.zeros(3)})
  with pytest.raises(ValueError, match="`batch_size`"):
    sweep.run_sweep(lambda p: p["a"], {"a": np.zeros(3)}, batch_size=0)
  with pytest.raises(ValueError, match="axis `b`"):
    sweep.product_grid(a=[1], b=[])


def test_a_scan_from_a_constant_carry_needs_no_annotation():
  def fn(point):
    return jax.lax.scan(lambda c, _: (c * point["a"] + 1.0, None), 0.0, length=3)[0]

  np.testing.assert_allclose(sweep.run_sweep(fn, {"a": np.array([0.0, 1.0, 2.0])}), [1.0, 3.0, 7.0])


def test_sweep_mesh_bad_devices():
  device = jax.devices()[0]
  assert sweep.sweep_mesh([device]).devices.tolist() == [device]
  with pytest.raises(ValueError, match="`devices` must not be empty"):
    sweep.sweep_mesh([])
  with pytest.raises(TypeError, match="`devices`"):
    sweep.sweep_mesh(device)  # one device, not a sequence of them
  with pytest.raises(TypeError, match="`devices`"):
    sweep.sweep_mesh(2)
  # These used to make a mesh that failed only when a sweep ran on it (or ran twice on one device).
  with pytest.raises(TypeError, match="`devices` must hold jax devices"):
    sweep.sweep_mesh(["cpu"])
  with pytest.raises(ValueError, match="`devices` must not repeat"):
    sweep.sweep_mesh([device, device])


def test_keys_grid_bad_key_or_num():
  key = jax.random.key(0)
  np.testing.assert_array_equal(sweep.keys_grid(jax.random.PRNGKey(0), 3), sweep.keys_grid(key, 3))
  for num in (0, -1, 2.0, True, None):
    with pytest.raises(ValueError, match="`num`"):
      sweep.keys_grid(key, num)
  for bad_key in (jax.random.split(key, 2), np.zeros(2, np.float32), 0):
    with pytest.raises(TypeError, match="`key`"):
      sweep.keys_grid(bad_key, 3)
