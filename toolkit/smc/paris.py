"""PaRIS: online smoothing of additive functionals by particle-based rapid incremental smoothing.

Olsson and Westerborn, "Efficient particle-based online smoothing in general hidden Markov models: the PaRIS
algorithm", Bernoulli 23(3), 2017; used as the inner loop of PaRIS particle Gibbs (Cardoso et al., "State and
parameter learning with PaRIS particle Gibbs", ICML 2023, arXiv 2301.00900, Algorithm 1).

For an additive functional h_n(x_{0:n}) = h_0(x_0) + Σ_{s<n} h̃_s(x_s, x_{s+1}), a particle filter (ξ_s^i, ω_s^i)
carries one statistic per particle, τ_s^i ≈ E[h_s(X_{0:s}) | X_s = ξ_s^i, y_{0:s}], updated with K backward draws

  J^{i,k} ~ Λ_s(i, ·),  Λ_s(i, l) ∝ ω_s^l m(ξ_s^l, ξ_{s+1}^i),
  τ_{s+1}^i = K⁻¹ Σ_k [τ_s^{J^{i,k}} + h̃_s(ξ_s^{J^{i,k}}, ξ_{s+1}^i)],

and estimates E[h_n | y_{0:n}] by Σ_i ω_n^i τ_n^i / Σ_i ω_n^i. Memory is O(N K) per step; K ≥ 2 keeps the variance
linear in n. Two exact samplers of Λ_s: ``backward="exact"`` forms the N × N logits (O(N²), the right choice on an
accelerator), ``backward="reject"`` is the accept-reject sampler of the paper with proposals from Cat(ω_s) and a
fallback to the exact kernel for the draws that were not accepted within ``max_rounds`` rounds (the hybrid of the
``particles`` library; pure rejection has a heavy-tailed run time, Dau and Chopin 2022).

The same forward pass with a frozen reference trajectory is the conditional SMC of PaRIS particle Gibbs
(``toolkit.smc.particle_gibbs``).

In ``additive_fn(x_prev, x, t)``, ``t`` is the index of ``x``; at ``t = 0`` it is called as ``additive_fn(x0, x0, 0)``
and returns h_0(x_0). It may return any pytree of arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from flax import struct

from toolkit.smc import resampling
from toolkit.smc import ssm as ssm_lib
from toolkit.smc.ssm import StateSpaceModel

AdditiveFn = Callable[[jax.Array, jax.Array, Any], Any]
BACKWARD_KERNELS = ("exact", "reject")


@struct.dataclass
class Proposal:
  """A guided proposal q for the particle filter (bootstrap when absent).

  Attributes:
    params: pytree of the proposal's own parameters.
    initial: ``(params, model, y_0) -> Distribution`` over x_0.
    transition: ``(params, model, x_prev, y_t, t) -> Distribution`` over x_t.
  """

  params: Any
  initial: Callable[..., dist.Distribution] = struct.field(pytree_node=False)
  transition: Callable[..., dist.Distribution] = struct.field(pytree_node=False)


class PaRISOutput(NamedTuple):
  """Result of a PaRIS pass.

  Attributes:
    estimate: Σ_i ω_n^i τ_n^i / Σ_i ω_n^i, the estimate of E[h_n(X_{0:n}) | y_{0:n}] (the functional's pytree).
    log_likelihood: the particle filter's estimate of log p(y_{0:n}).
    statistics: τ_n, the per-particle statistics (leading axis N).
    particles: ξ_n, (N, state_dim).
    log_weights: log ω_n, (N,), unnormalised.
    ess: (T,) effective sample size of the weights at each time.
    resampled: (T - 1,) whether the step from t to t + 1 resampled.
    fallback_fraction: (T - 1,) share of backward draws the accept-reject kernel left to the exact kernel
      (0 with ``backward="exact"``).
  """

  estimate: Any
  log_likelihood: jax.Array
  statistics: Any
  particles: jax.Array
  log_weights: jax.Array
  ess: jax.Array
  resampled: jax.Array
  fallback_fraction: jax.Array


class ForwardHistory(NamedTuple):
  """What conditional SMC keeps to draw a new reference path: particles (T, N, d), log-weights (T, N) and the
  backward indices (T - 1, N, K), entry t holding the draws of the step t → t + 1."""

  particles: jax.Array
  log_weights: jax.Array
  backward_indices: jax.Array


# ---------------------------------------------------------------------------------------------------------------
# Backward kernels.


def _inverse_cdf_rows(key: jax.Array, log_probs: jax.Array, num: int, block: int = 32) -> jax.Array:
  """``num`` i.i.d. draws per row of a (rows, M) matrix of logits by a two-level inverse CDF.

  Gumbel-max (``jax.random.categorical``) would draw rows × M × num numbers; a full row-wise cumsum costs ~4 ms at
  1000 × 1000 on CPU. Here the cumsum runs over block sums (M / block per row), then over one block of ``block``
  entries per draw: ~1 ms at that size, with the same exact distribution.
  """
  rows, m = log_probs.shape
  row_max = jnp.max(log_probs, axis=-1, keepdims=True)
  probs = jnp.exp(log_probs - jnp.where(jnp.isfinite(row_max), row_max, 0.0))
  probs = jnp.pad(probs, ((0, 0), (0, (-m) % block)))
  n_blocks = probs.shape[1] // block
  blocks = probs.reshape(rows, n_blocks, block)
  block_cdf = jnp.cumsum(blocks.sum(-1), axis=-1)
  u = jax.random.uniform(key, (rows, num), dtype=probs.dtype) * block_cdf[:, -1:]
  b = jax.vmap(lambda c, v: jnp.searchsorted(c, v, side="right"))(block_cdf, u)
  b = jnp.clip(b, 0, n_blocks - 1)
  mass_before = jnp.where(b > 0, jnp.take_along_axis(block_cdf, jnp.maximum(b - 1, 0), axis=1), 0.0)
  inner_cdf = jnp.cumsum(jnp.take_along_axis(blocks, b[..., None], axis=1), axis=-1)  # (rows, num, block)
  j = jnp.minimum(jnp.sum(inner_cdf <= (u - mass_before)[..., None], axis=-1), block - 1)
  # Rounding can land a draw on a zero-probability padding slot past the end: clip back into the row.
  return jnp.clip(b * block + j, 0, m - 1).astype(jnp.int32)


def backward_exact(key: jax.Array, model: StateSpaceModel, x_prev: jax.Array, log_weights_prev: jax.Array,
                   x: jax.Array, t, n_backward: int) -> jax.Array:
  """K draws per new particle from Λ(i, l) ∝ ω^l m(ξ_prev^l, ξ^i) with all N × N logits: (N, K) indices."""
  logits = log_weights_prev[None, :] + ssm_lib.transition_log_prob_matrix(model, x_prev, x, t)
  return _inverse_cdf_rows(key, logits, n_backward)


def backward_reject(key: jax.Array, model: StateSpaceModel, x_prev: jax.Array, log_weights_prev: jax.Array,
                    x: jax.Array, t, n_backward: int, max_rounds: int = 64) -> tuple[jax.Array, jax.Array]:
  """Accept-reject draws from Λ with a fallback to the exact kernel.

  Each of the N·K lanes proposes l ~ Cat(ω) and accepts with probability m(ξ_prev^l, ξ^i) / exp(bound), one proposal
  per lane per round, for at most ``max_rounds`` rounds (a ``while_loop`` that stops once every lane accepted).
  Lanes still open are drawn from the exact kernel, computed only for their rows (all N rows if more than N/8 are
  open). Every returned index is an exact draw from Λ. Under ``vmap`` the loop runs as long as the slowest lane and
  the branches become selects, so prefer ``"exact"`` for vmapped replicates. Returns the (N, K) indices and the
  fraction of lanes that fell back.
  """
  if model.transition_log_bound is None:
    raise ValueError("backward='reject' needs `model.transition_log_bound` (an upper bound of log m).")
  n = x.shape[0]
  log_bound = model.transition_log_bound(model.params, t)
  weights = jnp.exp(resampling.normalize_log_weights(log_weights_prev))
  cdf = jnp.cumsum(weights)
  key_loop, key_exact = jax.random.split(key)

  def log_m(l_idx):  # (N, K) proposals -> (N, K) log m(ξ_prev^l, ξ^i), one batched distribution
    return model.transition(model.params, x_prev[l_idx], t).log_prob(x[:, None, :])

  def cond(state):
    r, _, accepted, _ = state
    return (r < max_rounds) & ~jnp.all(accepted)

  def body(state):
    r, k, accepted, idx = state
    k, k_prop, k_acc = jax.random.split(k, 3)
    u = jax.random.uniform(k_prop, (n, n_backward), dtype=cdf.dtype) * cdf[-1]
    proposal = jnp.clip(jnp.searchsorted(cdf, u, side="right"), 0, cdf.shape[0] - 1).astype(jnp.int32)
    log_u = jnp.log(jax.random.uniform(k_acc, (n, n_backward), dtype=cdf.dtype))
    accept = (~accepted) & (log_u <= log_m(proposal) - log_bound)
    return r + 1, k, accepted | accept, jnp.where(accept, proposal, idx)

  init = (0, key_loop, jnp.zeros((n, n_backward), bool), jnp.zeros((n, n_backward), jnp.int32))
  _, _, accepted, idx = jax.lax.while_loop(cond, body, init)

  open_rows = ~jnp.all(accepted, axis=1)
  n_open = jnp.sum(open_rows)
  budget = max(1, n // 8)

  def fallback_some():
    # Exact logits for at most `budget` open rows (padding repeats a row; every write is an exact draw).
    rows = jnp.nonzero(open_rows, size=budget, fill_value=0)[0]
    logits = log_weights_prev[None, :] + ssm_lib.transition_log_prob_matrix(model, x_prev, x[rows], t)
    draws = _inverse_cdf_rows(key_exact, logits, n_backward)
    return idx.at[rows].set(jnp.where(accepted[rows], idx[rows], draws))

  def fallback_all():
    exact = backward_exact(key_exact, model, x_prev, log_weights_prev, x, t, n_backward)
    return jnp.where(accepted, idx, exact)

  branch = jnp.where(n_open == 0, 0, jnp.where(n_open <= budget, 1, 2))
  idx = jax.lax.switch(branch, [lambda: idx, fallback_some, fallback_all])
  return idx, 1.0 - jnp.mean(accepted.astype(cdf.dtype))


# ---------------------------------------------------------------------------------------------------------------
# The forward pass shared by PaRIS and conditional SMC.


def _check_inputs(model, ys, n_particles, n_backward, backward, ess_threshold, resampling_scheme) -> None:
  if not isinstance(model, StateSpaceModel):
    raise TypeError(f"`model` must be a toolkit.smc.ssm.StateSpaceModel, got {type(model).__name__}.")
  if jnp.ndim(ys) < 1 or jnp.shape(ys)[0] < 2:
    raise ValueError(f"`ys` must have a leading time axis of length >= 2, got shape {jnp.shape(ys)}.")
  if not isinstance(n_particles, int) or n_particles < 2:
    raise ValueError(f"`n_particles` must be a Python int >= 2, got {n_particles!r}.")
  if not isinstance(n_backward, int) or n_backward < 1:
    raise ValueError(f"`n_backward` must be a Python int >= 1 (2 or more is recommended), got {n_backward!r}.")
  if backward not in BACKWARD_KERNELS:
    raise ValueError(f"`backward` must be one of {BACKWARD_KERNELS}, got {backward!r}.")
  if not 0.0 <= ess_threshold <= 1.0:
    raise ValueError(f"`ess_threshold` must be in [0, 1], got {ess_threshold}.")
  resampling.get_resampler(resampling_scheme)


def _sample_initial(key, model, y0, n, proposal):
  if proposal is None:
    return ssm_lib.init_sample(key, model, n)
  return proposal.initial(proposal.params, model, y0).sample(key, (n,))


def _initial_log_weight(model, x0, y0, proposal):
  """log g(x_0, y_0) χ(x_0) / q(x_0 | y_0) for each particle (χ / q = 1 for the bootstrap filter)."""
  log_g = ssm_lib.observation_log_prob(model, x0, y0, 0)
  if proposal is None:
    return log_g
  q = proposal.initial(proposal.params, model, y0)
  return log_g + ssm_lib.init_log_prob(model, x0) - q.log_prob(x0)


def _sample_transition(key, model, x_anc, y, t, proposal):
  if proposal is None:
    return ssm_lib.transition_sample(key, model, x_anc, t)
  keys = jax.random.split(key, x_anc.shape[0])
  return jax.vmap(lambda k, xa: proposal.transition(proposal.params, model, xa, y, t).sample(k))(keys, x_anc)


def _transition_log_weight(model, x_anc, x, y, t, proposal):
  """Incremental log-weight g(x, y) m(x_anc, x) / q(x | x_anc, y) per (ancestor, particle) pair (m / q = 1 for the
  bootstrap filter)."""
  log_g = ssm_lib.observation_log_prob(model, x, y, t)
  if proposal is None:
    return log_g
  log_q = jax.vmap(lambda xa, xi: proposal.transition(proposal.params, model, xa, y, t).log_prob(xi))(x_anc, x)
  log_m = model.transition(model.params, x_anc, t).log_prob(x)
  return log_g + log_m - log_q


def forward_pass(key: jax.Array, model: StateSpaceModel, ys: jax.Array, additive_fn: AdditiveFn, *,
                 n_particles: int, n_backward: int = 2, backward: str = "exact", proposal: Proposal | None = None,
                 resampling_scheme: str = "multinomial", ess_threshold: float = 1.0, max_rounds: int = 64,
                 reference: jax.Array | None = None, keep_history: bool = False,
                 particle_sharding: jax.sharding.Sharding | None = None):
  """PaRIS over ``ys``, optionally conditional on a frozen ``reference`` path (T, state_dim) kept as particle N − 1.

  With a reference the free particles are resampled multinomially at every step (the ancestor of the frozen
  particle is the frozen particle), as conditional SMC requires; ``ess_threshold`` then must be 1. Returns a
  ``PaRISOutput`` and, if ``keep_history``, a ``ForwardHistory``.
  """
  _check_inputs(model, ys, n_particles, n_backward, backward, ess_threshold, resampling_scheme)
  n = n_particles
  conditional = reference is not None
  if conditional:
    if ess_threshold != 1.0:
      raise ValueError("conditional SMC resamples at every step: `ess_threshold` must be 1 with a `reference`.")
    if jnp.shape(reference) != (jnp.shape(ys)[0], model.state_dim):
      raise ValueError(f"`reference` must have shape (T, state_dim) = ({jnp.shape(ys)[0]}, {model.state_dim}), "
                       f"got {jnp.shape(reference)}.")
  constrain = ((lambda a: jax.lax.with_sharding_constraint(a, particle_sharding)) if particle_sharding is not None
               else (lambda a: a))

  key_init, key_scan = jax.random.split(key)
  x0 = _sample_initial(key_init, model, ys[0], n, proposal)
  if conditional:  # the frozen particle is weighted like the others, below
    x0 = x0.at[n - 1].set(reference[0])
  x0 = constrain(x0)
  lw0 = constrain(_initial_log_weight(model, x0, ys[0], proposal))
  tau0 = jax.vmap(lambda xi: additive_fn(xi, xi, 0))(x0)

  def step(carry, inputs):
    x_prev, lw_prev, tau_prev = carry
    k, y, t = inputs
    k_res, k_prop, k_back = jax.random.split(k, 3)
    if conditional:
      free = resampling.multinomial(k_res, jnp.exp(resampling.normalize_log_weights(lw_prev)), n - 1)
      ancestors = jnp.concatenate([free, jnp.array([n - 1], free.dtype)])
      lw_carry = jnp.zeros_like(lw_prev)
      resampled = jnp.array(True)
    else:
      decision = resampling.adaptive_resample(k_res, lw_prev, threshold=ess_threshold, scheme=resampling_scheme)
      ancestors, lw_carry, resampled = decision.ancestors, decision.log_weights, decision.resampled
    x_anc = x_prev[ancestors]
    x = _sample_transition(k_prop, model, x_anc, y, t, proposal)
    if conditional:
      x = x.at[n - 1].set(reference[t])
    x = constrain(x)
    lw = constrain(lw_carry + _transition_log_weight(model, x_anc, x, y, t, proposal))
    loglik_inc = jax.nn.logsumexp(lw) - jax.nn.logsumexp(lw_carry)

    if backward == "exact":
      J = backward_exact(k_back, model, x_prev, lw_prev, x, t, n_backward)
      fallback = jnp.zeros((), lw.dtype)
    else:
      J, fallback = backward_reject(k_back, model, x_prev, lw_prev, x, t, n_backward, max_rounds)
    h = jax.vmap(lambda js, xi: jax.vmap(lambda j: additive_fn(x_prev[j], xi, t))(js))(J, x)
    tau = jax.tree.map(lambda tp, hh: jnp.mean(tp[J] + hh, axis=1), tau_prev, h)
    out = (loglik_inc, resampling.ess(lw), resampled, fallback)
    if keep_history:
      out = out + (x, lw, J)
    return (x, lw, tau), out

  T = jnp.shape(ys)[0]
  ts = jnp.arange(1, T)
  (x, lw, tau), outs = jax.lax.scan(step, (x0, lw0, tau0), (jax.random.split(key_scan, T - 1), ys[1:], ts))
  loglik_incs, ess_path, resampled, fallback = outs[:4]
  w = jnp.exp(resampling.normalize_log_weights(lw))
  estimate = jax.tree.map(lambda a: jnp.tensordot(w, a, axes=1), tau)
  log_likelihood = jax.nn.logsumexp(lw0) - jnp.log(n) + jnp.sum(loglik_incs)
  output = PaRISOutput(
      estimate=estimate, log_likelihood=log_likelihood, statistics=tau, particles=x, log_weights=lw,
      ess=jnp.concatenate([resampling.ess(lw0)[None], ess_path]), resampled=resampled,
      fallback_fraction=fallback)
  if not keep_history:
    return output
  xs, lws, Js = outs[4:]
  history = ForwardHistory(
      particles=jnp.concatenate([x0[None], xs]), log_weights=jnp.concatenate([lw0[None], lws]),
      backward_indices=Js)
  return output, history


def paris(key: jax.Array, model: StateSpaceModel, ys: jax.Array, additive_fn: AdditiveFn, *, n_particles: int,
          n_backward: int = 2, backward: str = "exact", proposal: Proposal | None = None,
          resampling_scheme: str = "multinomial", ess_threshold: float = 1.0, max_rounds: int = 64,
          particle_sharding: jax.sharding.Sharding | None = None) -> PaRISOutput:
  """PaRIS estimate of E[Σ_t h̃_t(X_{t-1}, X_t) + h_0(X_0) | y_{0:n}] and of log p(y_{0:n}).

  Args:
    key: PRNG key.
    model: a ``StateSpaceModel``.
    ys: observations with a leading time axis of length T = n + 1.
    additive_fn: ``(x_prev, x, t) -> pytree``, the term h̃ of the step to time t (h_0(x) at t = 0, called with
      ``x_prev = x``).
    n_particles: N (static).
    n_backward: K backward draws per particle (static; K ≥ 2 keeps the variance linear in n).
    backward: ``"exact"`` (O(N²) per step) or ``"reject"`` (accept-reject with an exact fallback).
    proposal: a guided ``Proposal``; ``None`` is the bootstrap filter.
    resampling_scheme: name of a scheme in ``toolkit.smc.resampling``.
    ess_threshold: resample when ESS < threshold · N (1: every step).
    max_rounds: accept-reject rounds before the exact fallback.
    particle_sharding: optional sharding of the particle axis (e.g. ``NamedSharding(mesh, P('particles'))``).

  Returns:
    ``PaRISOutput``.
  """
  return forward_pass(key, model, ys, additive_fn, n_particles=n_particles, n_backward=n_backward,
                      backward=backward, proposal=proposal, resampling_scheme=resampling_scheme,
                      ess_threshold=ess_threshold, max_rounds=max_rounds, particle_sharding=particle_sharding)


# ---------------------------------------------------------------------------------------------------------------
# Additive functionals.


def score_functional(model_fn: Callable[[Any], StateSpaceModel], theta: Any, ys: jax.Array) -> AdditiveFn:
  """The Fisher-identity functional: its smoothed expectation is ∇_θ log p_θ(y_{0:n}).

  h̃_t(x_{t−1}, x_t) = ∇_θ [log m_θ(x_{t−1}, x_t) + log g_θ(x_t, y_t)], h_0(x_0) = ∇_θ [log χ_θ(x_0) + log g_θ(x_0, y_0)].
  ``model_fn(theta)`` builds the model; the result has the pytree structure of ``theta``. Particles carry no
  gradient: only the complete-data log-density is differentiated, never the resampling.
  """

  def complete_log_density(th, x_prev, x, t):
    m = model_fn(th)
    y = ys[t]
    log_g = m.observation(m.params, x, t).log_prob(y)
    log_m = jnp.where(t == 0, m.initial(m.params).log_prob(x), m.transition(m.params, x_prev, t).log_prob(x))
    return log_g + log_m

  grad_fn = jax.grad(complete_log_density)
  return lambda x_prev, x, t: grad_fn(theta, x_prev, x, t)


def linear_gaussian_optimal_proposal() -> Proposal:
  """The locally optimal proposal p(x_t | x_{t−1}, y_t) of a linear-Gaussian SSM (closed form), as a ``Proposal``."""
  return Proposal(params=(), initial=_lg_optimal_initial, transition=_lg_optimal_transition)


def _gaussian_condition(mean, cov, p, y):
  """x ~ N(mean, cov), y | x ~ N(C x, R): the law of x | y."""
  S = p.C @ cov @ p.C.T + p.R
  gain = jnp.linalg.solve(S, p.C @ cov).T
  post_mean = mean + gain @ (y - p.C @ mean)
  post_cov = cov - gain @ S @ gain.T
  return dist.MultivariateNormal(post_mean, covariance_matrix=0.5 * (post_cov + post_cov.T))


def _lg_optimal_initial(params, model, y):
  del params
  p = model.params
  return _gaussian_condition(p.m0, p.P0, p, y)


def _lg_optimal_transition(params, model, x_prev, y, t):
  del params, t
  p = model.params
  return _gaussian_condition(p.A @ x_prev, p.Q, p, y)
