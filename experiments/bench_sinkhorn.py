"""Sinkhorn-Newton-Sparse against ott-jax's Sinkhorn (plain, momentum, Anderson) and against regot's C++ solvers,
side by side in one run.

  python -m experiments.bench_sinkhorn                      # the paper's Table 1 cases, η = 1200, float64
  python -m experiments.bench_sinkhorn --threshold=1e-8 --cases=random_assignment

regot (Qiu and Tang, the ``regot`` package) is the state of the art on CPU: ``sinkhorn_ssns`` is the safe and
sparse Newton method (Tang, Qiu et al., NeurIPS 2024) and ``sinkhorn_sparse_newton`` an SNS-style solver without a
Sinkhorn warm-up. Every solver runs to the same marginal error (or its iteration cap); the jax solvers are compiled
first and timed once; the table gives iterations, seconds and each solver's ratio to SNS on the same problem.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from toolkit.ot import sinkhorn_newton_sparse as sns_lib

from . import sinkhorn_newton_sparse as sns_experiment

FLAGS = flags.FLAGS
flags.DEFINE_integer("n", 500, "Points (rows and columns) of the random-assignment problem.")
flags.DEFINE_integer("image_side", 28, "Pixels per side of the digit histograms (n = side²).")
flags.DEFINE_float("eta", 1200.0, "η = 1/ε.")
flags.DEFINE_float("threshold", 1e-12, "Marginal error (L1) every solver runs to.")
flags.DEFINE_list("cases", list(sns_experiment.CASES), "Cases to run.")
flags.DEFINE_integer("max_sinkhorn_iterations", 100_000, "Iteration cap of the ott baselines.")
flags.DEFINE_integer("max_regot_iterations", 2_000, "Iteration cap of the regot solvers.")
flags.DEFINE_integer("max_newton_iters", 1000, "Newton-stage iteration cap of SNS (every case).")
flags.DEFINE_integer("seed", 0, "Seed of the problems.")

REGOT_SOLVERS = ("sinkhorn_ssns", "sinkhorn_sparse_newton")


def run_regot(prob, config, max_iterations: int) -> dict:
  """regot's solvers on ``prob`` (float64 numpy inputs; regot's ``reg`` is ε and its error the same L1 one)."""
  try:
    import regot
  except ImportError:  # an optional peer: the table says it is missing instead of failing the bench
    return {}
  cost = np.asfortranarray(np.asarray(prob.geom.cost_matrix, np.float64))
  a, b = np.asarray(prob.a, np.float64), np.asarray(prob.b, np.float64)
  out = {}
  for name in REGOT_SOLVERS:
    start = time.perf_counter()
    result = getattr(regot, name)(cost, a, b, 1.0 / config.eta, tol=config.threshold, max_iter=max_iterations)
    seconds = time.perf_counter() - start
    errors = np.asarray(result.mar_errs)
    out[f"regot_{name.removeprefix('sinkhorn_')}"] = {
      "iterations": int(result.niter),
      "seconds": seconds,
      "converged": bool(errors.size and errors[-1] < config.threshold),
    }
  return out


def time_breakdown(case: str, prob, config) -> str:
  """Where SNS's time goes on ``case``: the warm-up, the sparsification (one call timed, times the Newton steps)
  and the rest of the Newton stage (CG, line search, marginal errors)."""
  n = prob.geom.shape[0]
  solver = sns_experiment.sns_solver(case, config, n)
  out, total = sns_experiment.timed(solver, prob)
  _, warm_up = sns_experiment.timed(dataclasses.replace(solver, max_newton_iters=0), prob)
  log_plan = (out.f[:, None] + out.g[None, :] - prob.geom.cost_matrix) / prob.geom.epsilon
  budget = solver.budget(n, n)
  sparsify = jax.jit(lambda lp: sns_lib._sparsify(lp, budget, solver.mass_tolerance)).lower(log_plan).compile()
  jax.block_until_ready(sparsify(log_plan))
  start = time.perf_counter()
  for _ in range(5):
    jax.block_until_ready(sparsify(log_plan))
  per_call = (time.perf_counter() - start) / 5
  steps = int(out.n_iters) - solver.num_sinkhorn_iters
  sparsification = per_call * steps
  rest = total - warm_up - sparsification
  return (
    f"| {case} | {total:.3f} | {warm_up:.3f} | {sparsification:.3f} ({steps} × {1e3 * per_call:.1f} ms) | "
    f"{rest:.3f} | {int(jnp.sum(out.cg_iters))} |"
  )


def main(argv):
  del argv
  config = sns_experiment.get_config("full")
  config.n, config.image_side, config.eta = FLAGS.n, FLAGS.image_side, FLAGS.eta
  config.threshold, config.cases = FLAGS.threshold, tuple(FLAGS.cases)
  config.max_sinkhorn_iterations = FLAGS.max_sinkhorn_iterations
  config.sns.max_newton_iters = config.sns.max_newton_iters_l1 = FLAGS.max_newton_iters
  sns_experiment.validate_config(config)
  print(
    f"device: {jax.devices()[0].device_kind}; random assignment n = {config.n}, digits {config.image_side}² pixels, "
    f"η = {config.eta:g}, marginal error {config.threshold:g}, float64; jax times exclude compilation"
  )
  print("| case | method | iterations | seconds | converged | iterations / SNS | seconds / SNS |")
  print("|---|---|---|---|---|---|---|")
  keys = jax.random.split(jax.random.key(FLAGS.seed), len(config.cases))
  with jax.enable_x64(True):
    # run_case builds its problem from the same key; the regot rows and the breakdown reuse one copy of it.
    problems = {case: sns_experiment.make_problem(case, key, config) for case, key in zip(config.cases, keys)}
    for case, key in zip(config.cases, keys):
      result = sns_experiment.run_case(case, config, key)
      regot_rows = run_regot(problems[case], config, FLAGS.max_regot_iterations)
      if not regot_rows:
        print(f"| {case} | regot | — | — | not installed (pip install regot) | — | — |")
      result.update(regot_rows)
      ours = result["sns"]
      for name, r in result.items():
        print(
          f"| {case} | {name} | {r['iterations']} | {r['seconds']:.3f} | {r['converged']} | "
          f"{r['iterations'] / ours['iterations']:.1f} | {r['seconds'] / ours['seconds']:.2f} |",
          flush=True,
        )
    print("\nWhere SNS's time goes (seconds; the sparsification is one timed call times the Newton-stage steps):")
    print("| case | total | warm-up | sparsification | CG, line search, errors | CG iterations |")
    print("|---|---|---|---|---|---|")
    for case, prob in problems.items():
      print(time_breakdown(case, prob, config), flush=True)


if __name__ == "__main__":
  app.run(main)
