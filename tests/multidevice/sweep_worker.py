"""One process of the two-process sweep test: joins the job, runs the sweep, saves the result (process 0).

python -m tests.multidevice.sweep_worker <coordinator_port> <process_id> <num_processes> <out.npz>
(with XLA_FLAGS=--xla_force_host_platform_device_count=4 set by the caller).
"""

import sys

import jax
import numpy as np

from tests import sweep_fixtures
from toolkit import sweep


def main(port: str, process_id: str, num_processes: str, out: str) -> None:
  jax.distributed.initialize(
    coordinator_address=f"localhost:{port}", num_processes=int(num_processes), process_id=int(process_id)
  )
  _, points = sweep_fixtures.grid()
  result = sweep.run_sweep(sweep_fixtures.train_one, points)
  print(f"process {jax.process_index()}: {jax.local_device_count()} local of {jax.device_count()} devices")
  np.savez(f"{out}.{process_id}.npz", **result, num_devices=jax.device_count())
  jax.distributed.shutdown()


if __name__ == "__main__":
  main(*sys.argv[1:])
