r"""Robust alternating minimisation for matrix completion (Gu, Song, Yin, Zhang, ICLR 2024, arXiv 2302.11068).

Two measurements on random incoherent rank-k matrices observed on a uniform mask
(``toolkit.linalg.completion_data``):

1. Recovery. Relative error ‖UVᵀ - M‖_F/‖M‖_F against outer iterations (float64), for exact half-steps
   (per-column normal equations, Cholesky) and approximate ones (a few Jacobi-preconditioned CG steps per
   regression, warm-started from the previous factors), from the same clipped-SVD start. The paper's claim is
   that alternating minimisation tolerates approximate half-steps: both reach the same error. Control: the same CG
   steps started from zero each half-step (a solver whose error does not shrink with the outer error) must stall.
2. Time per outer iteration against k = 8 … 128 at fixed |Ω|/(nk) (float32, n fixed), both solvers timed side by
   side on the same inputs in this run (interleaved repeats, medians, compilation excluded). The paper's costs:
   exact O(|Ω|k² + nk³), approximate Õ(|Ω|k); so time per observed entry should grow like k¹ (approximate) and
   k² (exact). Both exponents are fitted by least squares on the log-log plot.

  python -m experiments.matrix_completion --quick --out_dir=/tmp/runs/matrix_completion
"""

from __future__ import annotations

import functools
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from toolkit import experiment as xp
from toolkit.linalg import completion_data as cd
from toolkit.linalg import matrix_completion as mc

PAPER = xp.Paper(
  "matrix_completion",
  "Low Rank Matrix Completion via Robust Alternating Minimization in Nearly Linear Time",
  "2302.11068",
)
SOLVERS = ("exact", "approx", "cold_start")


def get_config(scale: str = "full") -> ConfigDict:
  if scale not in ("quick", "full"):
    raise ValueError(f"scale must be 'quick' or 'full', got {scale!r}")
  quick = scale == "quick"
  config = ConfigDict()
  config.recovery = ConfigDict()
  config.recovery.size = 400 if quick else 1000  # m = n
  config.recovery.rank = 8 if quick else 20
  config.recovery.oversampling = 8.0  # |Ω| / (n k)
  config.recovery.num_iterations = 20 if quick else 25
  config.num_cg_iterations = 3
  config.timing = ConfigDict()
  config.timing.size = 1000 if quick else 2000
  config.timing.ranks = (8, 16, 32, 64) if quick else (8, 16, 32, 64, 128)
  config.timing.oversampling = 4.0  # |Ω| / (n k), fixed across k
  config.timing.repeats = 3 if quick else 5
  config.speedup_rank = 64
  config.error_target = 1e-6
  return config


def validate_config(config: ConfigDict) -> None:
  for part in (config.recovery, config.timing):
    if part.oversampling * max(getattr(part, "ranks", None) or (part.rank,)) > part.size:
      raise xp.ConfigError("--config.*.oversampling × rank must be <= size (|Ω| <= m·n)")
  if config.speedup_rank not in config.timing.ranks:
    raise xp.ConfigError(f"--config.speedup_rank={config.speedup_rank} must be one of timing.ranks")
  if len(config.timing.ranks) < 2 or config.timing.repeats < 1 or config.num_cg_iterations < 1:
    raise xp.ConfigError("need >= 2 timing ranks, >= 1 repeat and >= 1 CG iteration")


def solver_for(name: str, config: ConfigDict) -> mc.HalfStepSolver:
  if name == "exact":
    return mc.solve_exact
  return mc.CGSolver(config.num_cg_iterations, warm_start=name != "cold_start")


def _recovery_step(key, state, *, observations, solver):
  return mc.step(key, state, observations, solver=solver)[0]


def _timed_step(key, state, observations, *, solver):
  return mc.step(key, state, observations, solver=solver)


def run_recovery(config: ConfigDict, key: jax.Array) -> dict:
  c = config.recovery
  n, k = c.size, c.rank
  num = round(c.oversampling * n * k)
  with jax.enable_x64(True):
    k_prob, k_init, k_steps = jax.random.split(key, 3)
    prob = cd.make_problem(k_prob, (n, n), k, num, dtype=jnp.float64)
    obs = mc.prepare(prob.rows, prob.cols, prob.values, (n, n))
    state0 = jax.jit(lambda key: mc.init(key, obs, (n, n), rank=k))(k_init)
    error = jax.jit(lambda s: cd.relative_error(s.u, s.v, prob.matrix))
    curves, seconds = {}, {}
    for name in SOLVERS:
      step = jax.jit(functools.partial(_recovery_step, observations=obs, solver=solver_for(name, config)))
      state, errors = state0, [float(error(state0))]
      start = time.perf_counter()
      for key_t in jax.random.split(k_steps, c.num_iterations):
        state = step(key_t, state)
        errors.append(float(error(state)))
      seconds[name] = time.perf_counter() - start
      curves[name] = errors
    mu = float(cd.incoherence(prob.matrix.left))
  return {"n": n, "rank": k, "num_observed": num, "incoherence": mu, "curves": curves, "seconds": seconds}


def time_step(config: ConfigDict, key: jax.Array, rank: int) -> dict:
  """Median seconds of one jitted outer iteration of each solver, on the same problem and start (float32)."""
  c = config.timing
  n = c.size
  num = round(c.oversampling * n * rank)
  k_prob, k_init, k_step = jax.random.split(key, 3)
  prob = cd.make_problem(k_prob, (n, n), rank, num)
  obs = mc.prepare(prob.rows, prob.cols, prob.values, (n, n))
  state = jax.jit(lambda key: mc.init(key, obs, (n, n), rank=rank))(k_init)
  steps = {
    name: jax.jit(functools.partial(_timed_step, k_step, solver=solver_for(name, config)))
    for name in ("exact", "approx")
  }
  compile_seconds = {}
  for name, f in steps.items():
    start = time.perf_counter()
    jax.block_until_ready(f(state, obs))
    compile_seconds[name] = time.perf_counter() - start
  times = {name: [] for name in steps}
  for _ in range(c.repeats):  # interleaved, so a load change on the machine hits both alike
    for name, f in steps.items():
      start = time.perf_counter()
      jax.block_until_ready(f(state, obs))
      times[name].append(time.perf_counter() - start)
  return {
    "rank": rank,
    "num_observed": num,
    "seconds": {name: statistics.median(ts) for name, ts in times.items()},
    "all_seconds": times,
    "first_call_seconds": compile_seconds,
  }


def fit_exponent(ks, values) -> float:
  """Least-squares slope of log(values) against log(k)."""
  return float(np.polyfit(np.log(np.asarray(ks, float)), np.log(np.asarray(values, float)), 1)[0])


def run(config: ConfigDict, ctx: xp.Context) -> dict[str, float]:
  k_rec, k_time = jax.random.split(ctx.key())
  recovery = run_recovery(config, k_rec)
  timing = [time_step(config, jax.random.fold_in(k_time, r), r) for r in config.timing.ranks]

  ks = [t["rank"] for t in timing]
  per_entry = {name: [t["seconds"][name] / t["num_observed"] for t in timing] for name in ("exact", "approx")}
  exponents = {name: fit_exponent(ks, v) for name, v in per_entry.items()}
  at = next(t for t in timing if t["rank"] == config.speedup_rank)
  curves = recovery["curves"]
  measured = {
    "exact_final_error": curves["exact"][-1],
    "approx_final_error": curves["approx"][-1],
    "cold_start_final_error": curves["cold_start"][-1],
    "init_error": curves["exact"][0],
    "approx_time_exponent_per_entry": exponents["approx"],
    "exact_time_exponent_per_entry": exponents["exact"],
    "exponent_gap": exponents["exact"] - exponents["approx"],
    "approx_time_exponent": exponents["approx"] + 1.0,  # |Ω| ∝ k at fixed n and |Ω|/(nk)
    "exact_time_exponent": exponents["exact"] + 1.0,
    f"speedup_at_k{config.speedup_rank}": at["seconds"]["exact"] / at["seconds"]["approx"],
    "incoherence": recovery["incoherence"],
  }
  for t in timing:
    for name in ("exact", "approx"):
      measured[f"seconds_per_iteration_{name}_k{t['rank']}"] = t["seconds"][name]
  ctx.write_text("recovery.json", _json({"recovery": recovery, "timing": timing}))
  plot(recovery, timing, exponents, config, ctx)
  write_table(recovery, timing, config, ctx)
  return measured


def _json(obj) -> str:
  import json

  return json.dumps(obj, indent=1)


def _plt():
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


LABELS = {
  "exact": "exact half-steps (Cholesky)",
  "approx": "approximate: {it} CG steps, warm start",
  "cold_start": "control: {it} CG steps from zero",
}


def plot(recovery: dict, timing: list[dict], exponents: dict, config: ConfigDict, ctx: xp.Context) -> None:
  plt = _plt()
  fig, (ax, ax_t) = plt.subplots(1, 2, figsize=(12, 4.5))
  for name, errors in recovery["curves"].items():
    ax.semilogy(range(len(errors)), errors, marker="o", ms=3, label=LABELS[name].format(it=config.num_cg_iterations))
  ax.axhline(config.error_target, color="gray", ls=":", lw=1, label=f"target {config.error_target:g}")
  ax.set_xlabel("outer iteration (0: clipped SVD start)")
  ax.set_ylabel("‖UVᵀ − M‖_F / ‖M‖_F")
  ax.set_title(
    f"m = n = {recovery['n']}, k = {recovery['rank']}, |Ω| = {recovery['num_observed']} "
    f"({recovery['num_observed'] / recovery['n'] ** 2:.0%}), float64"
  )
  ax.legend(fontsize=8)
  ks = np.array([t["rank"] for t in timing], float)
  for name, color in (("exact", "tab:blue"), ("approx", "tab:orange")):
    secs = np.array([t["seconds"][name] for t in timing])
    ax_t.loglog(ks, secs, "o-", color=color, label=f"{name}: time ∝ k^{exponents[name] + 1:.2f}")
  ax_t.set_xlabel(f"rank k  (|Ω| = {config.timing.oversampling:g}·n·k, n = {config.timing.size})")
  ax_t.set_ylabel("seconds per outer iteration (median)")
  ax_t.set_title("paper: exact O(|Ω|k² + nk³) ∝ k³, approximate Õ(|Ω|k) ∝ k² here")
  ax_t.legend(fontsize=8)
  fig.tight_layout()
  ctx.save_figure(fig, "recovery_and_timing")


def write_table(recovery: dict, timing: list[dict], config: ConfigDict, ctx: xp.Context) -> None:
  lines = ["| outer iteration | " + " | ".join(SOLVERS) + " |", "|---|" + "---|" * len(SOLVERS)]
  num = len(recovery["curves"]["exact"])
  for i in sorted({0, 1, 2, 5, 10, 15, num - 1} & set(range(num))):
    lines.append(f"| {i} | " + " | ".join(f"{recovery['curves'][s][i]:.2e}" for s in SOLVERS) + " |")
  lines += [
    "",
    "| k | |Ω| | exact s/iteration | approx s/iteration | speed-up |",
    "|---|---|---|---|---|",
  ]
  for t in timing:
    e, a = t["seconds"]["exact"], t["seconds"]["approx"]
    lines.append(f"| {t['rank']} | {t['num_observed']} | {e:.4f} | {a:.4f} | {e / a:.2f}× |")
  ctx.write_text("table.md", "\n".join(lines))


PAPER_SOURCE = "arXiv 2302.11068, abstract and Sec. 1 (main theorem)"
CLAIMS = (
  xp.Claim(
    metric="approx_final_error",
    statement="alternating minimisation with approximate half-steps (3 warm-started CG steps) recovers M to the "
    "same accuracy as exact half-steps: relative error ≤ 1e-6 after the quick run's iterations",
    paper_value=f"robust alternating minimisation recovers M to any ε with approximate updates ({PAPER_SOURCE})",
    comparison="<=",
    target=1e-6,
  ),
  xp.Claim(
    metric="exact_final_error",
    statement="reference: exact half-steps (JNS13) reach the same error from the same start",
    paper_value="JNS13 exact alternating minimisation, which the paper's analysis extends",
    comparison="<=",
    target=1e-6,
  ),
  xp.Claim(
    metric="cold_start_final_error",
    statement="control: the same CG steps started from zero (solve error not shrinking) fail the 1e-6 test",
    paper_value="the framework needs the regression error to be small relative to the current distance "
    f"({PAPER_SOURCE}: the subspace-approaching induction)",
    comparison=">",
    target=1e-6,
  ),
  xp.Claim(
    metric="approx_time_exponent_per_entry",
    statement="approximate solver: time per outer iteration per observed entry grows linearly in k "
    "(fitted log-log exponent ≤ 1.3)",
    paper_value=f"Õ(|Ω|k) total time ({PAPER_SOURCE})",
    comparison="<=",
    target=1.3,
  ),
  xp.Claim(
    metric="exponent_gap",
    statement="exact solver grows faster: its fitted exponent exceeds the approximate one's by ≥ 0.5",
    paper_value=f"Õ(|Ω|k²) for exact alternating minimisation vs Õ(|Ω|k) ({PAPER_SOURCE})",
    comparison=">=",
    target=0.5,
  ),
  xp.Claim(
    metric="speedup_at_k64",
    statement="at k = 64 an approximate outer iteration is ≥ 3× faster than an exact one (same inputs, same run)",
    paper_value=f"a factor k between the two bounds ({PAPER_SOURCE}); no wall-clock figure in the abstract",
    comparison=">=",
    target=3.0,
  ),
)

EXPERIMENT = xp.Experiment("matrix_completion", PAPER, CLAIMS, get_config, run, validate_config)

if __name__ == "__main__":
  # On a shared 2-core CPU, multi-threaded OpenBLAS (LAPACK's QR and Cholesky, loaded at the first call) spins
  # against the other processes: a (1000, 64) QR took 0.1–1.8 s instead of 0.7 ms. One thread each, for both
  # solvers alike; set before the first LAPACK call loads it. The Eigen flag as in the other binaries.
  os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
  xp.append_xla_flags("--xla_cpu_multi_thread_eigen=false")
  xp.define_flags(EXPERIMENT)
  xp.main(EXPERIMENT)
