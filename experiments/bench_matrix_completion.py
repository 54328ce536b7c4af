"""Time per outer iteration of alternating minimisation against k, exact against approximate half-steps.

  python -m experiments.bench_matrix_completion                        # n = 2000, k = 8 … 128, |Ω| = 4·n·k
  python -m experiments.bench_matrix_completion --n=1000 --ranks=8,16,32,64

At fixed n and |Ω|/(nk) (so |Ω| ∝ k), both solvers run one jitted outer iteration (a V and a U half-step, with
their QRs) on the same problem and the same clipped-SVD start, compiled first, then timed ``--repeats`` times
interleaved (medians). The paper's costs (arXiv 2302.11068): exact O(|Ω|k² + nk³), approximate Õ(|Ω|k), so the
time per observed entry should grow like k² and k¹; both exponents are fitted by least squares on log-log axes.
Wall-clock figures on a shared CPU are noisy: read the exponents and ratios, not the seconds.
"""

from __future__ import annotations

import os

import jax
from absl import app, flags

from toolkit import experiment as xp

from . import matrix_completion as mc_experiment

FLAGS = flags.FLAGS
flags.DEFINE_integer("n", 2000, "m = n, the matrix size.")
flags.DEFINE_list("ranks", ["8", "16", "32", "64", "128"], "Ranks k to time.")
flags.DEFINE_float("oversampling", 4.0, "|Ω| / (n k), fixed across k.")
flags.DEFINE_integer("repeats", 5, "Timed repeats per solver (median).")
flags.DEFINE_integer("num_cg_iterations", 3, "CG steps per half-step of the approximate solver.")
flags.DEFINE_integer("speedup_rank", 64, "k at which the exact/approx ratio is reported.")
flags.DEFINE_integer("seed", 0, "Seed of the problems.")


def main(argv):
  del argv
  config = mc_experiment.get_config("full")
  config.timing.size = FLAGS.n
  config.timing.ranks = tuple(int(r) for r in FLAGS.ranks)
  config.timing.oversampling = FLAGS.oversampling
  config.timing.repeats = FLAGS.repeats
  config.num_cg_iterations = FLAGS.num_cg_iterations
  config.speedup_rank = FLAGS.speedup_rank if FLAGS.speedup_rank in config.timing.ranks else config.timing.ranks[-1]
  mc_experiment.validate_config(config)
  print(
    f"device: {jax.devices()[0].device_kind}; m = n = {FLAGS.n}, |Ω| = {FLAGS.oversampling:g}·n·k, float32, "
    f"{FLAGS.num_cg_iterations} CG steps per approximate half-step; median of {FLAGS.repeats}, compilation excluded"
  )
  print("| k | |Ω| | exact s/iteration | approx s/iteration | exact / approx |")
  print("|---|---|---|---|---|")
  key = jax.random.key(FLAGS.seed)
  timing = []
  for rank in config.timing.ranks:
    t = mc_experiment.time_step(config, jax.random.fold_in(key, rank), rank)
    timing.append(t)
    e, a = t["seconds"]["exact"], t["seconds"]["approx"]
    print(f"| {rank} | {t['num_observed']} | {e:.4f} | {a:.4f} | {e / a:.2f} |", flush=True)
  ks = [t["rank"] for t in timing]
  for name in ("exact", "approx"):
    per_entry = [t["seconds"][name] / t["num_observed"] for t in timing]
    slope = mc_experiment.fit_exponent(ks, per_entry)
    print(f"{name}: time per iteration ∝ k^{slope + 1:.2f} (per observed entry ∝ k^{slope:.2f})")
  at = next(t for t in timing if t["rank"] == config.speedup_rank)
  print(f"exact / approx at k = {config.speedup_rank}: {at['seconds']['exact'] / at['seconds']['approx']:.2f}×")


if __name__ == "__main__":
  os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as in experiments/matrix_completion.py
  xp.append_xla_flags("--xla_cpu_multi_thread_eigen=false")
  app.run(main)
