"""A sweep sharded over 8 CPU devices, and over two processes of 4 devices each joined by jax.distributed,
equals the same sweep on one device."""

import os
import socket
import subprocess
import sys

import jax
import numpy as np

from tests import sweep_fixtures
from toolkit import sweep

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def single_device():
  _, points = sweep_fixtures.grid()
  return sweep.run_sweep(sweep_fixtures.train_one, points, mesh=sweep.sweep_mesh(jax.devices()[:1]))


def assert_same(result, reference):
  for name in ("loss", "weights"):
    np.testing.assert_allclose(result[name], reference[name], rtol=1e-5, atol=1e-7)


def test_eight_devices_equal_one_device():
  _, points = sweep_fixtures.grid()  # 24 points: 3 per device
  assert jax.device_count() == 8
  assert_same(sweep.run_sweep(sweep_fixtures.train_one, points), single_device())


def test_grid_not_a_multiple_of_the_device_count_is_padded_and_trimmed():
  _, points = sweep_fixtures.grid()
  head = jax.tree.map(lambda leaf: leaf[:21], points)
  result = sweep.run_sweep(sweep_fixtures.train_one, head)
  assert result["loss"].shape == (21,)
  reference = single_device()
  np.testing.assert_allclose(result["loss"], reference["loss"][:21], rtol=1e-5)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_with_jax_distributed_equal_one_device(tmp_path):
  port, out = free_port(), str(tmp_path / "sweep")
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
  procs = [
    subprocess.Popen(
      [sys.executable, "-m", "tests.multidevice.sweep_worker", str(port), str(i), "2", out],
      cwd=REPO,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for i in range(2)
  ]
  logs = [p.communicate(timeout=300)[0] for p in procs]
  assert all(p.returncode == 0 for p in procs), "\n".join(logs)
  reference = single_device()
  for i in range(2):
    with np.load(f"{out}.{i}.npz") as result:
      assert int(result["num_devices"]) == 8  # 2 processes × 4 devices
      assert_same(dict(result), reference)
