"""PaRIS's backward kernels against N, and against the `particles` library's PaRIS, in one run.

  python -m experiments.bench_paris      # N = 1000 .. 100000, T = 500, scalar linear-Gaussian SSM, K = 2
  python -m experiments.bench_paris --num_particles=200,400,800 --num_steps=100 --particles_at=0

Every run is the bootstrap filter with multinomial resampling at every step and K = 2 backward draws for
E[Σ x_t x_(t+1) | y] (the RTS smoother gives the exact value). Kernels: the exact O(N²) kernel
(``paris.backward_exact``, run up to ``--max_exact_particles``), the accept-reject kernel with an exact fallback
(``paris.backward_reject``, up to ``--max_reject_particles``) and the independent Metropolis-Hastings kernel of Dau
and Chopin (``paris.backward_mcmc``, O(N log N) per step, every N). Times exclude compilation (reported
separately) and are the median of ``--repeats`` calls; the log-log slope of time against N is fitted per kernel by
least squares (2 for O(N²), about 1 for O(N)). At ``--particles_at`` particles the `particles` library (its hybrid
accept-reject kernel, timed by its own ``alg.run()``) runs too, in `.venv-particles` (numpy < 2;
``make .venv-particles``).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from toolkit.smc import paris, ssm

FLAGS = flags.FLAGS
flags.DEFINE_list("num_particles", ["1000", "2000", "4000", "10000", "30000", "100000"], "The N swept.")
flags.DEFINE_integer("num_steps", 500, "T (observations).")
flags.DEFINE_integer("max_exact_particles", 4000, "Largest N for the O(N²) exact kernel.")
flags.DEFINE_integer("max_reject_particles", 2000, "Largest N for the accept-reject kernel.")
flags.DEFINE_integer("repeats", 3, "Timed calls per (kernel, N) (median reported).")
flags.DEFINE_integer("particles_at", 1000, "N at which the particles library runs too (0: never).")
flags.DEFINE_integer("particles_replicates", 1, "Runs of the particles library (each timed).")
flags.DEFINE_integer("seed", 0, "Seed of the data.")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The particles library's own environment (`make install` builds it in a clone); TOOLKIT_PARTICLES_PYTHON points
# elsewhere, e.g. from an installed package.
PARTICLES_PYTHON = os.environ.get("TOOLKIT_PARTICLES_PYTHON", os.path.join(REPO, ".venv-particles", "bin", "python"))
PEER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers", "particles_paris.py")
MODEL = {"A": 0.9, "Q": 0.5, "R": 1.0, "m0": 0.0, "P0": 1.0}
KERNELS = {
  "exact": paris.backward_exact,
  "reject": paris.backward_reject,
  "mcmc": paris.backward_mcmc,
}


def lag_product(x_prev, x, t):
  return jnp.where(t == 0, 0.0, x_prev[0] * x[0])


def run_particles(ys: np.ndarray, num_particles: int, replicates: int, seed: int) -> dict:
  request = {
    "model": MODEL,
    "ys": ys.tolist(),
    "functional": "sum_xx_lag",
    "num_particles": num_particles,
    "num_backward": 2,
    "num_replicates": replicates,
    "seed": seed,
    "resampling": "multinomial",
    "ess_min": 1.0,
  }
  reply = subprocess.run(
    [PARTICLES_PYTHON, PEER_SCRIPT],
    input=json.dumps(request),
    capture_output=True,
    text=True,
    check=True,
  )
  return json.loads(reply.stdout)


def time_ours(model, ys, num_particles, backward, repeats, seed) -> dict:
  fn = jax.jit(lambda k: paris.paris(k, model, ys, lag_product, num_particles=num_particles, backward=backward))
  start = time.perf_counter()
  jax.block_until_ready(fn(jax.random.key(seed)))
  compile_and_first = time.perf_counter() - start
  seconds, estimates = [], []
  for i in range(repeats):
    start = time.perf_counter()
    out = jax.block_until_ready(fn(jax.random.key(seed + 1 + i)))
    seconds.append(time.perf_counter() - start)
    estimates.append(float(out.estimate))
  return {
    "seconds": statistics.median(seconds),
    "first_call": compile_and_first,
    "estimates": estimates,
  }


def log_log_slope(ns, seconds) -> float:
  """Least-squares slope of log(seconds) against log(N); NaN with fewer than two points."""
  if len(ns) < 2:
    return float("nan")
  return float(np.polyfit(np.log(ns), np.log(seconds), 1)[0])


def kernel_sizes(name: str, ns: list[int]) -> list[int]:
  limit = {"exact": FLAGS.max_exact_particles, "reject": FLAGS.max_reject_particles}.get(name)
  return [n for n in ns if limit is None or n <= limit]


def main(argv):
  del argv
  jax.config.update("jax_enable_x64", True)
  model = ssm.linear_gaussian(**MODEL, C=1.0)
  _, ys = ssm.simulate(jax.random.key(FLAGS.seed), model, FLAGS.num_steps)
  ko = ssm.kalman_smoother(model, ys)
  m, cross = ko.smoothed_means[:, 0], ko.smoothed_cross_covs[:, 0, 0]
  truth = float(jnp.sum(m[:-1] * m[1:] + cross))
  ns = sorted(int(n) for n in FLAGS.num_particles)

  results = {}
  for name, kernel in KERNELS.items():
    for n in kernel_sizes(name, ns):
      results[(name, n)] = r = time_ours(model, ys, n, kernel, FLAGS.repeats, FLAGS.seed)
      print(f"{name} N={n}: {r['seconds']:.3f} s (first call {r['first_call']:.2f} s)", flush=True)
  theirs = None
  if FLAGS.particles_at:
    if os.path.exists(PARTICLES_PYTHON):
      theirs = run_particles(np.asarray(ys[:, 0]), FLAGS.particles_at, FLAGS.particles_replicates, FLAGS.seed)
    else:
      print(f"{PARTICLES_PYTHON} is missing (`make .venv-particles`): the particles library is skipped.")

  print(
    f"\nPaRIS, scalar LGSSM (A=0.9, Q=0.5, R=1), T = {FLAGS.num_steps}, K = 2, float64, device "
    f"{jax.devices()[0].device_kind}, {os.cpu_count()} CPU cores; RTS truth {truth:.2f}; median of "
    f"{FLAGS.repeats} timed calls (seconds per run, compilation excluded)"
  )
  print("| N | " + " | ".join(KERNELS) + " | mcmc speed-up vs exact |")
  print("|---" * (len(KERNELS) + 2) + "|")
  for n in ns:
    cells = [f"{results[(k, n)]['seconds']:.3f}" if (k, n) in results else "—" for k in KERNELS]
    speedup = (
      f"{results[('exact', n)]['seconds'] / results[('mcmc', n)]['seconds']:.1f}×" if ("exact", n) in results else "—"
    )
    print(f"| {n} | " + " | ".join(cells) + f" | {speedup} |")
  slopes = {
    k: log_log_slope(
      [n for n in ns if (k, n) in results],
      [results[(k, n)]["seconds"] for n in ns if (k, n) in results],
    )
    for k in KERNELS
  }
  print("| log-log slope | " + " | ".join(f"{slopes[k]:.2f}" for k in KERNELS) + " | |")

  print("\n| kernel | N | estimates − truth (per call) | first call (with compile), s |")
  print("|---|---|---|---|")
  for (k, n), r in results.items():
    print(f"| {k} | {n} | {', '.join(f'{e - truth:+.1f}' for e in r['estimates'])} | {r['first_call']:.2f} |")
  if theirs is not None and ("exact", FLAGS.particles_at) in results:
    n = FLAGS.particles_at
    their_seconds = statistics.median(theirs["seconds"])
    print(
      f"\nAt N = {n}: particles {theirs['particles_version']} (hybrid accept-reject) {their_seconds:.2f} s, "
      f"estimates − truth {', '.join(f'{e - truth:+.1f}' for e in theirs['estimates'])}; speed-up of ours: "
      + ", ".join(f"{k} {their_seconds / results[(k, n)]['seconds']:.0f}×" for k in KERNELS if (k, n) in results)
    )


if __name__ == "__main__":
  app.run(main)
