"""Sweeps: one pure function run over a grid of settings, vmapped and sharded over every device JAX sees.

Papers on training dynamics are grids (model width × optimiser, α × temperature × training-set size × seed). A
sweep here is a pure function ``fn(point) -> result`` of one grid point (a pytree of scalars or arrays: its
hyperparameters and its PRNG key) and a grid, a pytree whose leaves share a leading axis of length G, one entry per
point. ``run_sweep`` vmaps ``fn`` over the grid and splits the leading axis across a one-axis device mesh with
``jax.sharding.NamedSharding``, so the same call runs on one CPU, on 8 forced CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=8``), on a GPU host, or on several hosts joined by
``jax.distributed.initialize`` (every process calls ``run_sweep`` with the same grid and gets the whole result).

The grid is padded to a multiple of the device count by repeating its last point, and the padding is dropped
from the result, so any G works on any number of devices. Results equal the single-device run: each point is
computed by the same program whatever device it lands on (up to the last bit only where XLA fuses differently
for different batch sizes; the tests compare with a tolerance of a few ulps).

Launching on several hosts (or several processes on one host, as the tests do)::

  # on each of the P processes, before any other JAX call:
  jax.distributed.initialize(coordinator_address="host0:1234", num_processes=P, process_id=i)
  result = run_sweep(train_one, grid)  # the same call as on one device
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from toolkit import _checks

SWEEP_AXIS = "sweep"


class ProductGrid(NamedTuple):
  """The Cartesian product of named axes, flattened to one leading axis in C order (the last axis varies fastest).

  Attributes:
    points: ``{name: array (G, ...)}``, one entry per grid point; G is the product of the axis lengths.
    shape: the lengths of the axes, in the order given; ``result.reshape(shape + ...)`` restores the grid.
    axes: ``{name: array (length, ...)}``, the values of each axis.
  """

  points: dict[str, np.ndarray]
  shape: tuple[int, ...]
  axes: dict[str, np.ndarray]


def product_grid(**axes: Any) -> ProductGrid:
  """The Cartesian product of named axes, each a sequence of values (scalars or equal-shape arrays).

  >>> grid = product_grid(width=[10, 20, 40], lr=[0.1, 0.01])
  >>> grid.shape, grid.points["width"].tolist(), grid.points["lr"].tolist()[:3]
  ((3, 2), [10, 10, 20, 20, 40, 40], [0.1, 0.01, 0.1])
  """
  if not axes:
    raise ValueError("product_grid needs at least one named axis.")
  values = {}
  for name, axis in axes.items():
    array = np.asarray(axis)
    if array.ndim == 0 or array.shape[0] == 0:
      raise ValueError(f"axis `{name}` must be a non-empty sequence of values, got {axis!r}.")
    values[name] = array
  shape = tuple(v.shape[0] for v in values.values())
  index = np.array(list(itertools.product(*(range(n) for n in shape))), dtype=np.int64).reshape(-1, len(shape))
  points = {name: v[index[:, i]] for i, (name, v) in enumerate(values.items())}
  return ProductGrid(points, shape, values)


def _grid_size(grid: Any) -> int:
  leaves = jax.tree.leaves(grid)
  if not leaves:
    raise ValueError("`grid` must be a pytree with at least one array leaf.")
  sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in leaves}
  if None in sizes or len(sizes) != 1:
    raise ValueError(
      "every leaf of `grid` must have the same leading axis (one entry per grid point); got leading sizes "
      f"{sorted(str(s) for s in sizes)}."
    )
  (size,) = sizes
  if size == 0:
    raise ValueError("`grid` has no points (leading axis of length 0).")
  return size


def sweep_mesh(devices: Any = None) -> jax.sharding.Mesh:
  """A one-axis mesh named ``"sweep"`` over ``devices`` (default: every device of every process)."""
  if devices is not None and (isinstance(devices, jax.Device) or not isinstance(devices, Iterable)):
    raise TypeError(f"`devices` must be a sequence of jax devices (e.g. jax.devices()[:2]), got {devices!r}.")
  devices = jax.devices() if devices is None else list(devices)
  if not devices:
    raise ValueError("`devices` must not be empty.")
  # jax.sharding.Mesh accepts anything in its array: a string or a repeated device would fail only when used.
  if not all(isinstance(d, jax.Device) for d in devices):
    raise TypeError(f"`devices` must hold jax devices only, got {devices!r}.")
  if len(set(devices)) != len(devices):
    raise ValueError(f"`devices` must not repeat a device, got {devices!r}.")
  return jax.sharding.Mesh(np.asarray(devices), (SWEEP_AXIS,))


def _global_array(host: np.ndarray, sharding: NamedSharding) -> jax.Array:
  # Every process holds the whole (small) grid, so each can fill the shards it owns; this works on one process
  # and across processes alike, where device_put of a host array would not.
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def run_sweep(
  fn: Callable[[Any], Any],
  grid: Mapping[str, Any] | Any,
  *,
  mesh: jax.sharding.Mesh | None = None,
  batch_size: int | None = None,
) -> Any:
  """Runs ``fn`` at every point of ``grid``, vmapped and sharded over the devices of ``mesh``.

  Args:
    fn: a pure function of one grid point (the grid's pytree with the leading axis removed) returning a pytree
      of arrays. It is traced once, under ``vmap``; PRNG keys belong in the grid (e.g. raw ``uint32`` key data,
      or ``jax.random.key_data`` of split keys), so every point's randomness is fixed by the grid alone.
    grid: a pytree of arrays whose leaves share a leading axis of length G (e.g. ``product_grid(...).points``).
    mesh: a one-axis mesh; default ``sweep_mesh()``, every device of every process.
    batch_size: points evaluated at once on each device (``jax.lax.map`` over chunks of that size, to bound
      memory); default all of a device's points in one ``vmap``.

  Returns:
    ``fn``'s output pytree with a leading axis of length G, as NumPy arrays on every process.

  >>> grid = product_grid(a=[1.0, 2.0, 3.0], b=[0.0, 10.0])
  >>> run_sweep(lambda p: p["a"] + p["b"], grid.points).reshape(grid.shape).tolist()
  [[1.0, 11.0], [2.0, 12.0], [3.0, 13.0]]
  """
  if not callable(fn):
    raise TypeError(f"`fn` must be a callable of one grid point, got {type(fn).__name__}.")
  if batch_size is not None and (not isinstance(batch_size, int | np.integer) or batch_size < 1):
    raise ValueError(f"`batch_size` must be a positive int or None, got {batch_size!r}.")
  size = _grid_size(grid)
  mesh = sweep_mesh() if mesh is None else mesh
  if len(mesh.axis_names) != 1:
    raise ValueError(f"`mesh` must have exactly one axis, got axes {mesh.axis_names}.")
  (axis,) = mesh.axis_names
  num_devices = mesh.devices.size
  padded = math.ceil(size / num_devices) * num_devices
  per_device = padded // num_devices

  def pad(leaf):
    leaf = np.asarray(leaf)
    if padded == size:
      return leaf
    return np.concatenate([leaf, np.repeat(leaf[-1:], padded - size, axis=0)])

  host_grid = jax.tree.map(pad, grid)
  sharding = NamedSharding(mesh, P(axis))
  device_grid = jax.tree.map(lambda leaf: _global_array(leaf, sharding), host_grid)

  def run_block(block):
    # Each device sees its own contiguous block of points.
    if batch_size is None or batch_size >= per_device:
      return jax.vmap(fn)(block)
    return jax.lax.map(fn, block, batch_size=batch_size)

  # Points are independent (no collectives inside `fn`), so the varying-axis type check has nothing to verify;
  # without it a user's scan carry initialised from constants would need pcast annotations.
  run = jax.jit(jax.shard_map(run_block, mesh=mesh, in_specs=P(axis), out_specs=P(axis), check_vma=False))
  out = run(device_grid)
  if jax.process_count() > 1:
    out = multihost_utils.process_allgather(out, tiled=True)
  return jax.tree.map(lambda leaf: np.asarray(leaf)[:size], out)


def keys_grid(key: jax.Array, num: int) -> np.ndarray:
  """``num`` independent PRNG keys as raw ``uint32`` data (num, 2), a grid axis that ``fn`` turns back into keys
  with ``jax.random.wrap_key_data``.

  >>> keys_grid(jax.random.key(0), 3).shape
  (3, 2)
  """
  num = _checks.check_int(num, "num")
  # One key: a typed key scalar, or a raw uint32 key (jax.random.PRNGKey); a batch of keys cannot be split at once.
  dtype = getattr(key, "dtype", None)
  typed = dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)
  one_raw_key = not typed and dtype == np.uint32 and np.ndim(key) == 1
  if not ((typed and np.ndim(key) == 0) or one_raw_key):
    raise TypeError(
      f"`key` must be one PRNG key (jax.random.key(seed)), got {type(key).__name__} of shape {np.shape(key)} and "
      f"dtype {dtype}."
    )
  return np.asarray(jax.random.key_data(jax.random.split(key, num)))


__all__ = ["ProductGrid", "keys_grid", "product_grid", "run_sweep", "sweep_mesh"]
