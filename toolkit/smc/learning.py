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
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from toolkit.smc import paris as paris_lib
from toolkit.smc import particle_gibbs as pg
from toolkit.smc.ssm import StateSpaceModel

ESTIMATORS = ("ppg", "paris")


class LearningState(NamedTuple):
  """Carried between iterations: the parameters, the optimiser's state and PPG's reference path."""

  theta: Any
  opt_state: optax.OptState
  reference: jax.Array


class LearningTrace(NamedTuple):
  """Per-iteration record: θ after the step and the score estimate used for it."""

  theta: Any
  score: Any


def score_estimate(key: jax.Array, model_fn: Callable[[Any], StateSpaceModel], theta: Any, ys: jax.Array,
                   reference: jax.Array | None, *, estimator: str, n_particles: int,
                   n_backward: int = 2) -> tuple[Any, jax.Array | None]:
  """One estimate of ∇_θ log p_θ(y) by one PPG sweep (returns the next reference) or one PaRIS pass."""
  model = model_fn(theta)
  additive_fn = paris_lib.score_functional(model_fn, theta, ys)
  if estimator == "paris":
    out = paris_lib.paris(key, model, ys, additive_fn, n_particles=n_particles, n_backward=n_backward)
    return out.estimate, reference
  out = pg.sweep(key, model, ys, additive_fn, reference, n_particles=n_particles, n_backward=n_backward)
  return out.paris.estimate, out.reference


def fit(key: jax.Array, model_fn: Callable[[Any], StateSpaceModel], theta0: Any, ys: jax.Array, *,
        optimizer: optax.GradientTransformation, n_iterations: int, n_particles: int, n_backward: int = 2,
        estimator: str = "ppg") -> tuple[LearningState, LearningTrace]:
  """Stochastic-approximation maximum likelihood: ``n_iterations`` optax steps on −(score estimate)/n.

  Args:
    key: PRNG key.
    model_fn: ``theta -> StateSpaceModel`` (θ any pytree, e.g. unconstrained parameters).
    theta0: initial parameters.
    ys: observations (T, ...).
    optimizer: an optax transformation (e.g. ``optax.adam(1e-2)``).
    n_iterations, n_particles, n_backward: static sizes.
    estimator: ``"ppg"`` (one PaRIS particle Gibbs sweep per iteration) or ``"paris"``.

  Returns:
    The final ``LearningState`` and the ``LearningTrace`` of every iteration (leading axis: iterations).
  """
  if estimator not in ESTIMATORS:
    raise ValueError(f"`estimator` must be one of {ESTIMATORS}, got {estimator!r}.")
  if not isinstance(n_iterations, int) or n_iterations < 1:
    raise ValueError(f"`n_iterations` must be a positive Python int, got {n_iterations!r}.")
  n_obs = jnp.shape(ys)[0] - 1
  k_ref, k_loop = jax.random.split(key)
  reference = pg.initial_reference(k_ref, model_fn(theta0), ys, n_particles=n_particles)
  state = LearningState(theta0, optimizer.init(theta0), reference)

  def step(state, k):
    score, reference = score_estimate(k, model_fn, state.theta, ys, state.reference, estimator=estimator,
                                      n_particles=n_particles, n_backward=n_backward)
    grads = jax.tree.map(lambda s: -s / n_obs, score)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.theta)
    theta = optax.apply_updates(state.theta, updates)
    return LearningState(theta, opt_state, reference), LearningTrace(theta, score)

  return jax.lax.scan(step, state, jax.random.split(k_loop, n_iterations))
