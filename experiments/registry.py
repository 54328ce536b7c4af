"""The 24 papers of the toolkit and the experiment binary (module under ``experiments/``) of each one built.

``reproduce`` runs the experiments listed here; a paper whose ``experiment`` is ``None`` is reported as
"not implemented". Keep it in step with ``WORKSPACE.md``.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Entry:
  key: str
  title: str
  arxiv: str
  experiment: str | None = None  # module name under experiments/


PAPERS: tuple[Entry, ...] = (
  Entry("grokking", "Grokking at the Edge of Numerical Stability", "2501.04697", "grokking"),
  Entry(
    "sinkhorn_newton_sparse",
    "Accelerating Sinkhorn Algorithm with Sparse Newton Iterations",
    "2401.12253",
    "sinkhorn_newton_sparse",
  ),
  Entry(
    "monge_gap",
    "The Monge Gap: A Regularizer to Learn All Transport Maps",
    "2302.04953",
    "monge_gap",
  ),
  Entry("light_sb", "Light Schrödinger Bridge", "2310.01174", "light_sb"),
  Entry(
    "paris_particle_gibbs",
    "State and parameter learning with PaRIS particle Gibbs",
    "2301.00900",
    "paris_particle_gibbs",
  ),
  Entry(
    "fkc",
    "Feynman-Kac Correctors in Diffusion: Annealing, Guidance, and Product of Experts",
    "2503.02819",
    "feynman_kac_correctors",
  ),
  Entry("kivi", "KIVI: A Tuning-Free Asymmetric 2bit Quantization for KV Cache", "2402.02750", "kivi"),
  Entry(
    "tmac",
    "T-MAC: CPU Renaissance via Table Lookup for Low-Bit LLM Deployment on Edge",
    "2407.00088",
    "tmac",
  ),
  Entry(
    "zeroquant_v2",
    "ZeroQuant-V2: Exploring Post-training Quantization in LLMs from Comprehensive Study to Low Rank Compensation",
    "2303.08302",
    "zeroquant",
  ),
  Entry(
    "daa_overoptimisation",
    "Understanding Likelihood Over-optimisation in Direct Alignment Algorithms",
    "2410.11677",
    "over_optimisation",
  ),
  Entry(
    "likelihood_displacement",
    "Unintentional Unalignment: Likelihood Displacement in Direct Preference Optimization",
    "2410.08847",
    "likelihood_displacement",
  ),
  Entry(
    "dual_head_kd",
    "Dual-Head Knowledge Distillation: Enhancing Logits Utilization with an Auxiliary Head",
    "2411.08937",
    "dual_head_kd",
  ),
  Entry("lottery_jackpot", "Lottery Jackpots Exist in Pre-trained Models", "2104.08700", "lottery_jackpot"),
  Entry(
    "ftwt",
    "Fire Together Wire Together: A Dynamic Pruning Approach with Self-Supervised Mask Prediction",
    "2110.08232",
    "ftwt",
  ),
  Entry(
    "double_descent",
    "Understanding the Role of Optimization in Double Descent",
    "2312.03951",
    "double_descent",
  ),
  Entry(
    "sgd_noise",
    "Dissecting the Effects of SGD Noise in Distinct Regimes of Deep Learning",
    "2301.13703",
    "sgd_noise",
  ),
  Entry(
    "topk_moe",
    "Statistical Perspective of Top-K Sparse Softmax Gating Mixture of Experts",
    "2309.13850",
    "topk_moe",
  ),
  Entry("halfspace_tester", "An Efficient Tester-Learner for Halfspaces", "2302.14853", "halfspace_tester"),
  Entry("presto", "Predicting Rare Events by Shrinking Towards Proportional Odds", "2305.18700", "presto"),
  Entry("kde", "Kernel Density Estimators in Large Dimensions", "2408.05807", "kde_high_dim"),
  Entry("ppp", "Probabilistic Partitive Partitioning (PPP)", "2003.04372", "ppp"),
  Entry(
    "rom_cluster",
    "Physics-informed cluster analysis and a priori efficiency criterion for the construction "
    "of local reduced-order bases",
    "2103.13683",
    "rom_cluster",
  ),
  Entry(
    "matrix_completion",
    "Low Rank Matrix Completion via Robust Alternating Minimization in Nearly Linear Time",
    "2302.11068",
    "matrix_completion",
  ),
  Entry(
    "gliodil",
    "Individualizing Glioma Radiotherapy Planning by Optimization of Data and Physics-Informed Discrete Loss",
    "2312.05063",
    "gliodil",
  ),
)


def by_key(key: str) -> Entry:
  for entry in PAPERS:
    if entry.key == key:
      return entry
  raise KeyError(f"no paper {key!r}; known: {', '.join(e.key for e in PAPERS)}")
