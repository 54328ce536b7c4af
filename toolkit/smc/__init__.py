"""Sequential Monte Carlo: resampling, state-space models, PaRIS, PaRIS particle Gibbs, Feynman-Kac correctors.

Modules: ``resampling`` (schemes, ESS, the adaptive rule), ``ssm`` (state-space models and their Kalman/RTS
oracles), ``paris`` (the online smoother, one step at a time, with pluggable backward kernels), ``particle_gibbs``
(conditional SMC and the PaRIS particle Gibbs sampler), ``learning`` (SA-MLE and Markov score climbing), ``fkc``
(Feynman-Kac corrector sampling of diffusion models). The step API (``paris.init``, ``paris.step``,
``fkc.init``, ``fkc.step``, ``fkc.sample``) and other generic names (``learning.fit``, ``particle_gibbs.sweep``)
are reached through their module; the whole-run samplers are ``paris.paris`` and
``particle_gibbs.particle_gibbs``.
"""

from toolkit.smc import fkc, learning, paris, particle_gibbs, resampling, ssm
from toolkit.smc.fkc import (
  FKCInfo,
  FKCOutput,
  FKCState,
  FKCTerms,
  GaussianStart,
  VESchedule,
  VPSchedule,
  annealing,
  classifier_free_guidance,
  from_log_density,
  gaussian_start,
  log_normalizer_estimate,
  log_weight_rate,
  master_log_weight_rate,
  product_of_experts,
  product_of_powers,
  weighted_sde_drift,
)
from toolkit.smc.learning import (
  LearningState,
  LearningTrace,
  LinearGaussianProposalParams,
  SmoothedEstimator,
  linear_gaussian_regression_optimum,
  linear_gaussian_regression_proposal,
  markov_score_climbing,
  paris_estimator,
  ppg_estimator,
  proposal_score_functional,
  score_estimate,
)
from toolkit.smc.paris import (
  BackwardDraws,
  BackwardKernel,
  PaRISInfo,
  PaRISOutput,
  PaRISState,
  Proposal,
  backward_exact,
  backward_mcmc,
  backward_reject,
  linear_gaussian_optimal_proposal,
  score_functional,
  smoothed_estimate,
)
from toolkit.smc.particle_gibbs import (
  ForwardHistory,
  ForwardPass,
  ParticleGibbsOutput,
  SweepOutput,
  draw_path,
  initial_reference,
)
from toolkit.smc.resampling import (
  AdaptiveResampling,
  Resampler,
  adaptive_resample,
  check_resampler,
  ess,
  log_ess,
  multinomial,
  normalize_log_weights,
  resample_log,
  residual,
  stratified,
  systematic,
)
from toolkit.smc.ssm import (
  GrowthParams,
  KalmanOutput,
  LinearGaussianParams,
  StateSpaceModel,
  StochasticVolatilityParams,
  growth_model,
  kalman_filter,
  kalman_mle,
  kalman_smoother,
  linear_gaussian,
  simulate,
  stochastic_volatility,
)

__all__ = [
  "AdaptiveResampling", "BackwardDraws", "BackwardKernel", "FKCInfo", "FKCOutput", "FKCState", "FKCTerms",
  "ForwardHistory", "ForwardPass", "GaussianStart", "GrowthParams", "KalmanOutput", "LearningState",
  "LearningTrace", "LinearGaussianParams", "LinearGaussianProposalParams", "PaRISInfo", "PaRISOutput",
  "PaRISState", "ParticleGibbsOutput", "Proposal", "Resampler", "SmoothedEstimator", "StateSpaceModel",
  "StochasticVolatilityParams", "SweepOutput", "VESchedule", "VPSchedule", "adaptive_resample", "annealing",
  "backward_exact", "backward_mcmc", "backward_reject", "check_resampler", "classifier_free_guidance", "draw_path",
  "ess", "fkc", "from_log_density", "gaussian_start", "growth_model", "initial_reference", "kalman_filter",
  "kalman_mle", "kalman_smoother", "learning", "linear_gaussian", "linear_gaussian_optimal_proposal",
  "linear_gaussian_regression_optimum", "linear_gaussian_regression_proposal", "log_ess",
  "log_normalizer_estimate", "log_weight_rate", "markov_score_climbing", "master_log_weight_rate", "multinomial",
  "normalize_log_weights", "paris", "paris_estimator", "particle_gibbs", "ppg_estimator", "product_of_experts",
  "product_of_powers", "proposal_score_functional", "resample_log", "resampling", "residual", "score_estimate",
  "score_functional", "simulate", "smoothed_estimate", "ssm", "stochastic_volatility", "stratified", "systematic",
  "weighted_sde_drift",
]
