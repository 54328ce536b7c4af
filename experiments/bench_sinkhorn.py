"""Sinkhorn-Newton-Sparse against ott-jax's Sinkhorn (plain, momentum, Anderson), side by side in one run.

  python -m experiments.bench_sinkhorn                      # the paper's cases at n = 500, η = 1200, float64
  python -m experiments.bench_sinkhorn --n=300 --cases=random_assignment

Each solver runs to a marginal error of 1e-8 (or its iteration cap), compiled first and timed once; the table
gives iterations, seconds and the ratios of each baseline to SNS on the same problem.
"""

from __future__ import annotations

import jax
from absl import app, flags

from . import sinkhorn_newton_sparse as sns_experiment

FLAGS = flags.FLAGS
flags.DEFINE_integer("n", 500, "Points (rows and columns) per problem.")
flags.DEFINE_float("eta", 1200.0, "η = 1/ε.")
flags.DEFINE_list("cases", list(sns_experiment.CASES), "Cases to run.")
flags.DEFINE_integer("max_sinkhorn_iterations", 100_000, "Iteration cap of the ott baselines.")
flags.DEFINE_integer("seed", 0, "Seed of the problems.")


def main(argv):
  del argv
  config = sns_experiment.get_config("full")
  config.n, config.eta, config.cases = FLAGS.n, FLAGS.eta, tuple(FLAGS.cases)
  config.max_sinkhorn_iterations = FLAGS.max_sinkhorn_iterations
  sns_experiment.validate_config(config)
  print(
    f"device: {jax.devices()[0].device_kind}; n = {config.n}, η = {config.eta:g}, marginal error "
    f"{config.threshold:g}, float64; time excludes compilation"
  )
  print("| case | method | iterations | seconds | converged | iterations / SNS | seconds / SNS |")
  print("|---|---|---|---|---|---|---|")
  keys = jax.random.split(jax.random.key(FLAGS.seed), len(config.cases))
  with jax.enable_x64(True):
    for case, key in zip(config.cases, keys):
      result = sns_experiment.run_case(case, config, key)
      ours = result["sns"]
      for name, r in result.items():
        print(
          f"| {case} | {name} | {r['iterations']} | {r['seconds']:.3f} | {r['converged']} | "
          f"{r['iterations'] / ours['iterations']:.1f} | {r['seconds'] / ours['seconds']:.2f} |",
          flush=True,
        )


if __name__ == "__main__":
  app.run(main)
