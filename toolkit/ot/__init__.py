"""Optimal transport on ott-jax: Sinkhorn-Newton-Sparse, the Monge gap, LightSB, their oracles and metrics.

Modules: ``sinkhorn_newton_sparse`` (a differentiable ott-style solver), ``monge_gap`` (the regulariser and map
fitting), ``light_sb`` (the Light Schrödinger Bridge), ``benchmarks`` (closed-form oracles and benchmark
constructions), ``metrics`` (UVP scores, Bures-Wasserstein). Names too generic for the package (LightSB's ``fit``,
``loss``, ``drift``, ...; SNS's ``solve`` is exported as ``solve_sinkhorn_newton_sparse``) are reached through
their module, e.g. ``toolkit.ot.light_sb.fit``; so is the function ``monge_gap.monge_gap``, whose name is its
module's.
"""

from toolkit.ot import benchmarks
from toolkit.ot import light_sb
from toolkit.ot import metrics
from toolkit.ot import monge_gap
from toolkit.ot import sinkhorn_newton_sparse
from toolkit.ot.benchmarks import BenchmarkPieces
from toolkit.ot.benchmarks import GaussianBridge
from toolkit.ot.benchmarks import GaussianPair
from toolkit.ot.benchmarks import MixtureBenchmark
from toolkit.ot.benchmarks import benchmark_conditional
from toolkit.ot.benchmarks import benchmark_conditional_moments
from toolkit.ot.benchmarks import benchmark_lightsb_params
from toolkit.ot.benchmarks import benchmark_pieces
from toolkit.ot.benchmarks import benchmark_samplers
from toolkit.ot.benchmarks import benchmark_target_variance
from toolkit.ot.benchmarks import gaussian_brenier_matrix
from toolkit.ot.benchmarks import gaussian_bridge
from toolkit.ot.benchmarks import gaussian_pair
from toolkit.ot.benchmarks import mixture_benchmark
from toolkit.ot.benchmarks import random_gaussian_pair
from toolkit.ot.benchmarks import sample_benchmark_input
from toolkit.ot.benchmarks import sample_benchmark_target
from toolkit.ot.light_sb import LightSBParams
from toolkit.ot.metrics import bures_wasserstein
from toolkit.ot.metrics import bw_uvp
from toolkit.ot.metrics import conditional_bw_uvp
from toolkit.ot.metrics import gaussian_fit
from toolkit.ot.metrics import l2_uvp
from toolkit.ot.metrics import sqrtm_psd
from toolkit.ot.monge_gap import LinearSolver
from toolkit.ot.monge_gap import MapFit
from toolkit.ot.monge_gap import MapMLP
from toolkit.ot.monge_gap import MongeGapOutput
from toolkit.ot.monge_gap import fit_map
from toolkit.ot.monge_gap import monge_gap_output
from toolkit.ot.sinkhorn_newton_sparse import SinkhornNewtonSparse
from toolkit.ot.sinkhorn_newton_sparse import SNSOutput
from toolkit.ot.sinkhorn_newton_sparse import dual_objective
from toolkit.ot.sinkhorn_newton_sparse import first_order_conditions
from toolkit.ot.sinkhorn_newton_sparse import marginal_error
from toolkit.ot.sinkhorn_newton_sparse import solve as solve_sinkhorn_newton_sparse

__all__ = [
  "BenchmarkPieces", "GaussianBridge", "GaussianPair", "LightSBParams", "LinearSolver", "MapFit", "MapMLP",
  "MixtureBenchmark", "MongeGapOutput", "SNSOutput", "SinkhornNewtonSparse", "benchmark_conditional",
  "benchmark_conditional_moments", "benchmark_lightsb_params", "benchmark_pieces", "benchmark_samplers",
  "benchmark_target_variance", "benchmarks", "bures_wasserstein", "bw_uvp", "conditional_bw_uvp",
  "dual_objective", "first_order_conditions", "fit_map", "gaussian_brenier_matrix", "gaussian_bridge",
  "gaussian_fit", "gaussian_pair", "l2_uvp", "light_sb", "marginal_error", "metrics", "mixture_benchmark",
  "monge_gap", "monge_gap_output", "random_gaussian_pair", "sample_benchmark_input", "sample_benchmark_target",
  "sinkhorn_newton_sparse", "solve_sinkhorn_newton_sparse", "sqrtm_psd",
]
