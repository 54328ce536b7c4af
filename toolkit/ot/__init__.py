"""Optimal transport on ott-jax: Sinkhorn-Newton-Sparse, the Monge gap, LightSB, their oracles and metrics.

Modules: ``sinkhorn_newton_sparse`` (a differentiable ott-style solver), ``monge_gap`` (the regulariser and map
fitting), ``light_sb`` (the Light Schrödinger Bridge), ``benchmarks`` (closed-form oracles and benchmark
constructions), ``metrics`` (UVP scores, Bures-Wasserstein). Names too generic for the package (LightSB's ``fit``,
``loss``, ``drift``, ...; SNS's ``solve`` is exported as ``solve_sinkhorn_newton_sparse``) are reached through
their module, e.g. ``toolkit.ot.light_sb.fit``; so is the function ``monge_gap.monge_gap``, whose name is its
module's.
"""

from toolkit.ot import benchmarks, light_sb, metrics, monge_gap, sinkhorn_newton_sparse
from toolkit.ot.benchmarks import (
  BenchmarkPieces,
  GaussianBridge,
  GaussianPair,
  MixtureBenchmark,
  benchmark_conditional,
  benchmark_conditional_moments,
  benchmark_lightsb_params,
  benchmark_pieces,
  benchmark_samplers,
  benchmark_target_variance,
  gaussian_brenier_matrix,
  gaussian_bridge,
  gaussian_pair,
  mixture_benchmark,
  random_gaussian_pair,
  sample_benchmark_input,
  sample_benchmark_target,
)
from toolkit.ot.light_sb import LightSBFit, LightSBParams, LightSBPath
from toolkit.ot.metrics import (
  bures_wasserstein,
  bw_uvp,
  conditional_bw_uvp,
  gaussian_fit,
  l2_uvp,
  sqrtm_psd,
)
from toolkit.ot.monge_gap import (
  LinearSolver,
  MapFit,
  MapMLP,
  MongeGapOutput,
  fit_map,
  monge_gap_output,
)
from toolkit.ot.sinkhorn_newton_sparse import (
  SinkhornNewtonSparse,
  SNSOutput,
  dual_objective,
  first_order_conditions,
  marginal_error,
)
from toolkit.ot.sinkhorn_newton_sparse import solve as solve_sinkhorn_newton_sparse

__all__ = [
  "BenchmarkPieces",
  "GaussianBridge",
  "GaussianPair",
  "LightSBFit",
  "LightSBParams",
  "LightSBPath",
  "LinearSolver",
  "MapFit",
  "MapMLP",
  "MixtureBenchmark",
  "MongeGapOutput",
  "SNSOutput",
  "SinkhornNewtonSparse",
  "benchmark_conditional",
  "benchmark_conditional_moments",
  "benchmark_lightsb_params",
  "benchmark_pieces",
  "benchmark_samplers",
  "benchmark_target_variance",
  "benchmarks",
  "bures_wasserstein",
  "bw_uvp",
  "conditional_bw_uvp",
  "dual_objective",
  "first_order_conditions",
  "fit_map",
  "gaussian_brenier_matrix",
  "gaussian_bridge",
  "gaussian_fit",
  "gaussian_pair",
  "l2_uvp",
  "light_sb",
  "marginal_error",
  "metrics",
  "mixture_benchmark",
  "monge_gap",
  "monge_gap_output",
  "random_gaussian_pair",
  "sample_benchmark_input",
  "sample_benchmark_target",
  "sinkhorn_newton_sparse",
  "solve_sinkhorn_newton_sparse",
  "sqrtm_psd",
]
