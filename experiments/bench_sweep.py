"""Throughput of a sharded sweep (``toolkit.sweep.run_sweep``) on 1 device against 8 forced CPU devices.

  python -m experiments.bench_sweep                        # prints a table of points per second and ratios
  python -m experiments.bench_sweep --device_counts=1,2,8  # other device counts

The work is the same in every column: the double-descent experiment's gradient-descent setting (random tanh
features of the digits, 1000 full-batch steps) over a grid of widths × seeds. Each device count runs in its own
process, since XLA's host device count is fixed when JAX starts
(``XLA_FLAGS=--xla_force_host_platform_device_count=N``); each process times ``--repeats`` calls after one
compiling call and reports the median, and the results of every process are compared with the 1-device one.
Forced CPU devices share the machine's cores, so on a 2-core machine 8 devices can at best match the cores'
throughput; the table is there to show what sharding costs or gains on the machine at hand.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list("device_counts", ["1", "8"], "Forced CPU device counts to compare (one process each).")
flags.DEFINE_integer("repeats", 3, "Timed calls per device count (after one compiling call).")
flags.DEFINE_integer("num_train", 150, "Training points of the double-descent problem.")
flags.DEFINE_integer("num_seeds", 4, "Seeds per width (the grid is 12 widths × seeds).")
flags.DEFINE_string("setting", "GD 1000 steps", "The double-descent optimiser setting swept.")
flags.DEFINE_integer("worker_devices", 0, "Internal: run as the worker of this many devices.")
flags.DEFINE_string("worker_out", "", "Internal: where the worker writes its result (.npz).")

RATIOS = (0.1, 0.25, 0.5, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 3.0)


def worker(num_train: int, num_seeds: int, setting: str, repeats: int, out: str) -> dict:
  import jax

  from experiments import double_descent
  from toolkit import sweep
  from toolkit.data import digits

  split = digits.digits_split(jax.random.key(0), num_train, num_test=1000, label_noise=0.2)
  widths = np.maximum(1, np.round(np.asarray(RATIOS) * num_train)).astype(int)
  grid = sweep.product_grid(num_features=widths, seed=np.arange(num_seeds))
  points = dict(grid.points, key=sweep.keys_grid(jax.random.key(1), num_seeds)[grid.points["seed"]])

  def call():
    return double_descent.sweep_setting(setting, split, points, int(widths.max()))

  start = time.perf_counter()
  result = call()
  first = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
  np.savez(out, **result)
  return {
    "devices": jax.device_count(),
    "points": int(grid.points["seed"].size),
    "first_call_seconds": first,
    "median_seconds": statistics.median(times),
  }


def run_worker(devices: int, out: str) -> dict:
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
  cmd = [
    sys.executable,
    "-m",
    "experiments.bench_sweep",
    f"--worker_devices={devices}",
    f"--worker_out={out}",
    f"--repeats={FLAGS.repeats}",
    f"--num_train={FLAGS.num_train}",
    f"--num_seeds={FLAGS.num_seeds}",
    f"--setting={FLAGS.setting}",
  ]
  done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
  if done.returncode != 0:
    raise RuntimeError(f"the {devices}-device worker failed:\n{done.stdout}\n{done.stderr}")
  return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv) -> None:
  del argv
  if FLAGS.worker_devices:
    record = worker(FLAGS.num_train, FLAGS.num_seeds, FLAGS.setting, FLAGS.repeats, FLAGS.worker_out)
    print(json.dumps(record))
    return
  import tempfile

  counts = [int(c) for c in FLAGS.device_counts]
  if 1 not in counts:
    counts = [1] + counts
  rows = {}
  with tempfile.TemporaryDirectory() as tmp:
    for count in counts:
      out = os.path.join(tmp, f"sweep_{count}.npz")
      rows[count] = run_worker(count, out)
      with np.load(out) as f:
        rows[count]["result"] = {k: f[k] for k in f.files}
  base = rows[1]
  print(
    f"sweep: double-descent setting {FLAGS.setting!r}, {base['points']} grid points, N = {FLAGS.num_train}, "
    f"{os.cpu_count()} CPU cores; median of {FLAGS.repeats} calls after the compiling one"
  )
  print(
    "| devices | first call (s) | median call (s) | points / s | throughput vs 1 device | max rel. diff vs 1 device |"
  )
  print("|---|---|---|---|---|---|")
  for count, row in rows.items():
    diff = max(
      float(np.max(np.abs(row["result"][k] - base["result"][k]) / (np.abs(base["result"][k]) + 1e-12)))
      for k in base["result"]
    )
    print(
      f"| {count} | {row['first_call_seconds']:.2f} | {row['median_seconds']:.2f} | "
      f"{row['points'] / row['median_seconds']:.1f} | {base['median_seconds'] / row['median_seconds']:.2f}× | "
      f"{diff:.1e} |"
    )


if __name__ == "__main__":
  app.run(main)
