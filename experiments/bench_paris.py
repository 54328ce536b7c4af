"""Our jitted PaRIS against the `particles` library's PaRIS on the same model and data, side by side in one run.

  python -m experiments.bench_paris                 # N = 1000, T = 500, scalar linear-Gaussian SSM, K = 2
  python -m experiments.bench_paris --n_particles=200 --num_steps=100 --particles_replicates=3

Both run the bootstrap filter with multinomial resampling at every step and K = 2 backward draws for
E[Σ x_t x_(t+1) | y] (the RTS smoother gives the exact value). `particles` uses its hybrid accept-reject kernel
(at most N trials, then the exact kernel); ours runs the exact O(N²) kernel and the accept-reject kernel with an
exact fallback. Our times exclude compilation (reported separately) and are the median of repeated calls; the
`particles` time is its own `alg.run()`. `particles` runs in `.venv-particles` (numpy < 2; `make .venv-particles`).
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
from absl import app
from absl import flags

from toolkit.smc import paris
from toolkit.smc import ssm

FLAGS = flags.FLAGS
flags.DEFINE_integer("n_particles", 1000, "N.")
flags.DEFINE_integer("num_steps", 500, "T (observations).")
flags.DEFINE_integer("repeats", 5, "Timed calls of our PaRIS (median reported).")
flags.DEFINE_integer("particles_replicates", 1, "Runs of the particles library (each timed).")
flags.DEFINE_integer("seed", 0, "Seed of the data.")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARTICLES_PYTHON = os.path.join(REPO, ".venv-particles", "bin", "python")
MODEL = dict(A=0.9, Q=0.5, R=1.0, m0=0.0, P0=1.0)


def lag_product(x_prev, x, t):
  return jnp.where(t == 0, 0.0, x_prev[0] * x[0])


def run_particles(ys: np.ndarray, n_particles: int, replicates: int, seed: int) -> dict:
  if not os.path.exists(PARTICLES_PYTHON):
    raise SystemExit(f"{PARTICLES_PYTHON} is missing: run `make .venv-particles` first.")
  request = dict(model=MODEL, ys=ys.tolist(), functional="sum_xx_lag", n_particles=n_particles, n_paris=2,
                 n_replicates=replicates, seed=seed, resampling="multinomial", ess_min=1.0)
  reply = subprocess.run([PARTICLES_PYTHON, os.path.join(REPO, "experiments", "peers", "particles_paris.py")],
                         input=json.dumps(request), capture_output=True, text=True, check=True)
  return json.loads(reply.stdout)


def time_ours(model, ys, n_particles, backward, repeats, seed):
  fn = jax.jit(lambda k: paris.paris(k, model, ys, lag_product, n_particles=n_particles, backward=backward))
  start = time.perf_counter()
  jax.block_until_ready(fn(jax.random.key(seed)))
  compile_and_first = time.perf_counter() - start
  seconds, estimates = [], []
  for i in range(repeats):
    start = time.perf_counter()
    out = jax.block_until_ready(fn(jax.random.key(seed + 1 + i)))
    seconds.append(time.perf_counter() - start)
    estimates.append(float(out.estimate))
  return {"seconds": statistics.median(seconds), "first_call": compile_and_first, "estimates": estimates}


def main(argv):
  del argv
  jax.config.update("jax_enable_x64", True)
  model = ssm.linear_gaussian(**MODEL, C=1.0)
  _, ys = ssm.simulate(jax.random.key(FLAGS.seed), model, FLAGS.num_steps)
  ko = ssm.kalman_smoother(model, ys)
  m, cross = ko.smoothed_means[:, 0], ko.smoothed_cross_covs[:, 0, 0]
  truth = float(jnp.sum(m[:-1] * m[1:] + cross))
  n = FLAGS.n_particles

  theirs = run_particles(np.asarray(ys[:, 0]), n, FLAGS.particles_replicates, FLAGS.seed)
  ours = {b: time_ours(model, ys, n, b, FLAGS.repeats, FLAGS.seed) for b in ("exact", "reject")}
  their_seconds = statistics.median(theirs["seconds"])

  print(f"PaRIS, scalar LGSSM (A=0.9, Q=0.5, R=1), N = {n}, T = {FLAGS.num_steps}, K = 2, float64, "
        f"device {jax.devices()[0].device_kind}, {os.cpu_count()} CPU cores; RTS truth {truth:.2f}")
  print("| implementation | backward kernel | seconds per run | first call (with compile) | estimates | "
        "estimate − truth | speed-up vs particles |")
  print("|---|---|---|---|---|---|---|")
  fmt = lambda es: ", ".join(f"{e:.1f}" for e in es)
  err = lambda es: f"{np.mean(es) - truth:+.1f}"
  print(f"| particles {theirs['particles_version']} | hybrid accept-reject | {their_seconds:.2f} | — | "
        f"{fmt(theirs['estimates'])} | {err(theirs['estimates'])} | 1 |")
  for b, r in ours.items():
    print(f"| toolkit (jit) | {b} | {r['seconds']:.3f} | {r['first_call']:.2f} | {fmt(r['estimates'])} | "
          f"{err(r['estimates'])} | {their_seconds / r['seconds']:.0f}× |")


if __name__ == "__main__":
  app.run(main)
