"""Parameter learning driven by PaRIS or PaRIS particle Gibbs: stochastic-approximation MLE with optax.

Cardoso et al., "State and parameter learning with PaRIS particle Gibbs", ICML 2023, arXiv 2301.00900, Section 4:
θ_{l+1} = θ_l + γ_{l+1} H_l, where H_l estimates ∇_θ log p_θ(y_{0:n}) by Fisher's identity (the smoothed expectation
of the additive functional ∇_θ[log m_θ + log g_θ], ``toolkit.smc.paris.score_functional``). With PPG the reference
path of sweep l was drawn under θ_{l−1}: (ζ, θ) is a state-dependent Markov chain, and the bias of the gradient is the
PPG chain's, not the O(1/N) bias of self-normalised PaRIS. The step is any optax transformation applied to
−H_l / n (the mean log-likelihood per observation is maximised).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
import optax

from toolkit.smc import paris as paris_lib
from toolkit.smc import particle_gibbs as pg
from toolkit.smc import ssm as ssm_lib
from toolkit.smc.ssm import StateSpaceModel


class LearningState(NamedTuple):
  """Carried between iterations: the parameters, the optimiser's state and PPG's reference path."""

  theta: Any
  opt_state: optax.OptState
  reference: jax.Array


class LearningTrace(NamedTuple):
  """Per-iteration record: θ after the step and the score estimate used for it."""

  theta: Any
  score: Any


class SmoothedEstimator(Protocol):
  """How one iteration estimates a smoothed expectation: ``ppg_estimator``, ``paris_estimator`` or yours.

  Returns the estimate of E[h(X_{0:n}) | y] for ``additive_fn`` and the reference path of the next iteration
  (``reference`` itself for an estimator that does not use one).
  """

  def __call__(
    self,
    key: jax.Array,
    model: StateSpaceModel,
    ys: jax.Array,
    additive_fn: paris_lib.AdditiveFn,
    reference: jax.Array,
    *,
    num_particles: int,
    num_backward: int,
    proposal: paris_lib.Proposal | None,
  ) -> tuple[Any, jax.Array]: ...


def ppg_estimator(
  key: jax.Array,
  model: StateSpaceModel,
  ys: jax.Array,
  additive_fn: paris_lib.AdditiveFn,
  reference: jax.Array,
  *,
  num_particles: int,
  num_backward: int = 2,
  proposal: paris_lib.Proposal | None = None,
) -> tuple[Any, jax.Array]:
  """One PaRIS particle Gibbs sweep: its estimate and the next reference path (a ``SmoothedEstimator``)."""
  out = pg.sweep(
    key,
    model,
    ys,
    additive_fn,
    reference,
    num_particles=num_particles,
    num_backward=num_backward,
    proposal=proposal,
  )
  return out.paris.estimate, out.reference


def paris_estimator(
  key: jax.Array,
  model: StateSpaceModel,
  ys: jax.Array,
  additive_fn: paris_lib.AdditiveFn,
  reference: jax.Array,
  *,
  num_particles: int,
  num_backward: int = 2,
  proposal: paris_lib.Proposal | None = None,
) -> tuple[Any, jax.Array]:
  """One PaRIS pass: its estimate, and ``reference`` passed through unchanged (a ``SmoothedEstimator``)."""
  out = paris_lib.paris(
    key,
    model,
    ys,
    additive_fn,
    num_particles=num_particles,
    num_backward=num_backward,
    proposal=proposal,
  )
  return out.estimate, reference


def score_estimate(
  key: jax.Array,
  model_fn: Callable[[Any], StateSpaceModel],
  theta: Any,
  ys: jax.Array,
  reference: jax.Array,
  *,
  num_particles: int,
  num_backward: int = 2,
  estimator: SmoothedEstimator = ppg_estimator,
) -> tuple[Any, jax.Array]:
  """One estimate of ∇_θ log p_θ(y) (Fisher's identity) by ``estimator``, and the next reference path."""
  _check_estimator(estimator)
  if not callable(model_fn):
    raise TypeError(f"`model_fn` must be a function theta -> StateSpaceModel, got {type(model_fn).__name__}.")
  return estimator(
    key,
    model_fn(theta),
    ys,
    paris_lib.score_functional(model_fn, theta, ys),
    reference,
    num_particles=num_particles,
    num_backward=num_backward,
    proposal=None,
  )


def _check_estimator(estimator) -> None:
  if isinstance(estimator, str) or not callable(estimator):
    raise TypeError(
      f"`estimator` must be a SmoothedEstimator function such as toolkit.smc.learning.ppg_estimator "
      f"or paris_estimator, got {estimator!r}."
    )


def _check_proposal(proposal) -> None:
  if not isinstance(proposal, paris_lib.Proposal):
    raise TypeError(
      f"`proposal` must be a toolkit.smc.paris.Proposal (e.g. linear_gaussian_regression_proposal()), "
      f"got {type(proposal).__name__}."
    )


def _check_learning_args(estimator, num_iterations) -> None:
  _check_estimator(estimator)
  if not isinstance(num_iterations, int) or num_iterations < 1:
    raise ValueError(f"`num_iterations` must be a positive Python int, got {num_iterations!r}.")


def _climb(key, params0, reference, score_fn, optimizer, num_iterations, num_observations):
  """The stochastic-approximation loop: ``score_fn(key, params, reference) -> (score, reference)``, then an optax
  step on −score / num_observations."""
  state = LearningState(params0, optimizer.init(params0), reference)

  def step(state, k):
    score, reference = score_fn(k, state.theta, state.reference)
    grads = jax.tree.map(lambda s: -s / num_observations, score)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.theta)
    params = optax.apply_updates(state.theta, updates)
    return LearningState(params, opt_state, reference), LearningTrace(params, score)

  return jax.lax.scan(step, state, jax.random.split(key, num_iterations))


def fit(
  key: jax.Array,
  model_fn: Callable[[Any], StateSpaceModel],
  theta0: Any,
  ys: jax.Array,
  *,
  optimizer: optax.GradientTransformation,
  num_iterations: int,
  num_particles: int,
  num_backward: int = 2,
  estimator: SmoothedEstimator = ppg_estimator,
) -> tuple[LearningState, LearningTrace]:
  """Stochastic-approximation maximum likelihood: ``num_iterations`` optax steps on −(score estimate)/n.

  Args:
    key: PRNG key.
    model_fn: ``theta -> StateSpaceModel`` (θ any pytree, e.g. unconstrained parameters).
    theta0: initial parameters.
    ys: observations (T, ...).
    optimizer: an optax transformation (e.g. ``optax.adam(1e-2)``).
    num_iterations, num_particles, num_backward: static sizes.
    estimator: ``ppg_estimator`` (one PaRIS particle Gibbs sweep per iteration), ``paris_estimator`` or any
      ``SmoothedEstimator``.

  Returns:
    The final ``LearningState`` and the ``LearningTrace`` of every iteration (leading axis: iterations).

  Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> from toolkit.smc import learning, ssm
    >>> model_fn = lambda theta: ssm.linear_gaussian(theta["A"], 0.5, 1.0, 1.0, 0.0, 1.0)
    >>> _, ys = ssm.simulate(jax.random.key(0), model_fn({"A": 0.9}), 20)
    >>> run = jax.jit(lambda key: learning.fit(key, model_fn, {"A": jnp.array(0.5)}, ys,
    ...                                        optimizer=optax.adam(0.05), num_iterations=5, num_particles=16))
    >>> state, trace = run(jax.random.key(1))
    >>> print(trace.theta["A"].shape, bool(state.theta["A"] > 0.5))
    (5,) True
  """
  _check_learning_args(estimator, num_iterations)
  k_ref, k_loop = jax.random.split(key)
  reference = pg.initial_reference(k_ref, model_fn(theta0), ys, num_particles=num_particles)
  score_fn = lambda k, theta, ref: score_estimate(
    k,
    model_fn,
    theta,
    ys,
    ref,
    num_particles=num_particles,
    num_backward=num_backward,
    estimator=estimator,
  )
  return _climb(k_loop, theta0, reference, score_fn, optimizer, num_iterations, jnp.shape(ys)[0] - 1)


# ---------------------------------------------------------------------------------------------------------------
# Markov score climbing.


def proposal_score_functional(proposal: paris_lib.Proposal, model: StateSpaceModel, ys: jax.Array):
  """The additive functional ∇_λ log q_λ(x_t | x_{t−1}, y_t) (∇_λ log q_λ(x_0 | y_0) at t = 0) of a proposal.

  Its smoothed expectation is −∇_λ KL(p_θ(x_{0:n} | y) ‖ q_λ) for a q_λ that factorises along time, the gradient of
  Markov score climbing (Naesseth, Lindsten and Blei, NeurIPS 2020), estimated here by PaRIS or PPG.
  """
  _check_proposal(proposal)
  if not isinstance(model, StateSpaceModel):
    raise TypeError(f"`model` must be a toolkit.smc.ssm.StateSpaceModel, got {type(model).__name__}.")
  if jnp.ndim(ys) < 1:
    raise ValueError(f"`ys` must have a leading time axis, got shape {jnp.shape(ys)}.")

  def log_q(lam, x_prev, x, t):
    y = ys[t]
    first = proposal.initial(lam, model, y).log_prob(x)
    later = proposal.transition(lam, model, x_prev, y, t).log_prob(x)
    return jnp.where(t == 0, first, later)

  grad_fn = jax.grad(log_q)
  return lambda x_prev, x, t: grad_fn(proposal.params, x_prev, x, t)


def markov_score_climbing(
  key: jax.Array,
  model: StateSpaceModel,
  ys: jax.Array,
  proposal: paris_lib.Proposal,
  *,
  optimizer: optax.GradientTransformation,
  num_iterations: int,
  num_particles: int,
  num_backward: int = 2,
  estimator: SmoothedEstimator = ppg_estimator,
  guide_with_proposal: bool = True,
) -> tuple[LearningState, LearningTrace]:
  """Markov score climbing with PaRIS or PPG: fits q_λ (the ``proposal``'s params) by minimising KL(p ‖ q_λ).

  Each iteration estimates E_p[∇_λ log q_λ(X_{0:n})] with ``estimator`` (one PPG sweep by default, or one PaRIS
  pass), where the conditional SMC itself proposes from the current q_λ when ``guide_with_proposal`` (so the sampler
  improves as q does; PPG keeps p invariant for any proposal), and takes an optax step on its negative per
  observation. PPG replaces the single conditional path of the original MSC with the τ statistics of all N
  particles.

  Returns the final ``LearningState`` (``theta`` holds λ) and the per-iteration trace.
  """
  _check_learning_args(estimator, num_iterations)
  _check_proposal(proposal)
  k_ref, k_loop = jax.random.split(key)
  guide = lambda lam: proposal.replace(params=lam) if guide_with_proposal else None
  reference = pg.initial_reference(k_ref, model, ys, num_particles=num_particles, proposal=guide(proposal.params))

  def score_fn(k, lam, ref):
    additive_fn = proposal_score_functional(proposal.replace(params=lam), model, ys)
    return estimator(
      k,
      model,
      ys,
      additive_fn,
      ref,
      num_particles=num_particles,
      num_backward=num_backward,
      proposal=guide(lam),
    )

  return _climb(k_loop, proposal.params, reference, score_fn, optimizer, num_iterations, jnp.shape(ys)[0])


class LinearGaussianProposalParams(NamedTuple):
  """q(x_0 | y_0) = N(mu0, exp(2 log_sd0)); q(x_t | x_{t−1}, y_t) = N(a x_{t−1} + b y_t + c, exp(2 log_sd))."""

  mu0: jax.Array
  log_sd0: jax.Array
  a: jax.Array
  b: jax.Array
  c: jax.Array
  log_sd: jax.Array


def _lg_regression_initial(lam, model, y):
  del model, y
  return dist.Normal(jnp.reshape(lam.mu0, (1,)), jnp.reshape(jnp.exp(lam.log_sd0), (1,))).to_event(1)


def _lg_regression_transition(lam, model, x_prev, y, t):
  del model, t
  mean = lam.a * x_prev + lam.b * jnp.reshape(y, (-1,))[0] + lam.c
  return dist.Normal(mean, jnp.exp(lam.log_sd)).to_event(1)


def linear_gaussian_regression_proposal(
  params: LinearGaussianProposalParams | None = None,
) -> paris_lib.Proposal:
  """A scalar Gaussian proposal linear in (x_{t−1}, y_t): the family of the Markov-score-climbing example.

  For a scalar linear-Gaussian model the KL(p ‖ q_λ) minimiser is a least-squares regression of x_t on
  (x_{t−1}, y_t, 1) under the smoothing distribution, in closed form from the RTS moments
  (``linear_gaussian_regression_optimum``).
  """
  if params is not None:
    if not isinstance(params, LinearGaussianProposalParams):
      raise TypeError(f"`params` must be a LinearGaussianProposalParams or None, got {type(params).__name__}.")
    for name, value in params._asdict().items():
      if jnp.ndim(value) != 0:  # the proposal is scalar: a vector would broadcast over the state
        raise ValueError(f"`params.{name}` must be a scalar, got shape {jnp.shape(value)}.")
  if params is None:
    f = lambda v: jnp.asarray(v, dtype=jnp.result_type(float))
    params = LinearGaussianProposalParams(f(0.0), f(0.0), f(0.0), f(0.0), f(0.0), f(0.0))
  return paris_lib.Proposal(params=params, initial=_lg_regression_initial, transition=_lg_regression_transition)


def linear_gaussian_regression_optimum(model: StateSpaceModel, ys: jax.Array) -> LinearGaussianProposalParams:
  """argmin_λ KL(p(x_{0:n} | y) ‖ q_λ) for ``linear_gaussian_regression_proposal`` on a scalar model (exact)."""
  # The regression reads the first coordinate of the state and of y: a larger model gave a finite, wrong optimum.
  p = model.params if isinstance(model, StateSpaceModel) else None
  if isinstance(p, ssm_lib.LinearGaussianParams) and (model.state_dim != 1 or p.C.shape[0] != 1):
    raise ValueError(
      f"`model` must be a scalar linear-Gaussian model (state and observation of dimension 1), got state_dim = "
      f"{model.state_dim} and {p.C.shape[0]}-dimensional observations."
    )
  ko = ssm_lib.kalman_smoother(model, ys)
  m, P, cross = ko.smoothed_means[:, 0], ko.smoothed_covs[:, 0, 0], ko.smoothed_cross_covs[:, 0, 0]
  y = jnp.reshape(ys, (ys.shape[0], -1))[1:, 0]
  mp, mc, Pp, Pc = m[:-1], m[1:], P[:-1], P[1:]
  # E[z zᵀ] and E[z x] summed over t = 1..n, with z = (x_{t−1}, y_t, 1).
  Ezz = jnp.array(
    [
      [jnp.sum(mp**2 + Pp), jnp.sum(mp * y), jnp.sum(mp)],
      [jnp.sum(mp * y), jnp.sum(y**2), jnp.sum(y)],
      [jnp.sum(mp), jnp.sum(y), y.shape[0]],
    ]
  )
  Ezx = jnp.array([jnp.sum(mp * mc + cross), jnp.sum(y * mc), jnp.sum(mc)])
  beta = jnp.linalg.solve(Ezz, Ezx)
  # E[Σ (x_t − βᵀz_t)²] = Σ E[x_t²] − 2 βᵀ E[z x] + βᵀ E[z zᵀ] β.
  resid = jnp.sum(mc**2 + Pc) - 2.0 * beta @ Ezx + beta @ Ezz @ beta
  return LinearGaussianProposalParams(
    mu0=m[0],
    log_sd0=0.5 * jnp.log(P[0]),
    a=beta[0],
    b=beta[1],
    c=beta[2],
    log_sd=0.5 * jnp.log(resid / y.shape[0]),
  )
