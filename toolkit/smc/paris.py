"""PaRIS: online smoothing of additive functionals by particle-based rapid incremental smoothing.

Olsson and Westerborn, "Efficient particle-based online smoothing in general hidden Markov models: the PaRIS
algorithm", Bernoulli 23(3), 2017; used as the inner loop of PaRIS particle Gibbs (Cardoso et al., "State and
parameter learning with PaRIS particle Gibbs", ICML 2023, arXiv 2301.00900, Algorithm 1).

For an additive functional h_n(x_{0:n}) = h_0(x_0) + Σ_{s<n} h̃_s(x_s, x_{s+1}), a particle filter (ξ_s^i, ω_s^i)
carries one statistic per particle, τ_s^i ≈ E[h_s(X_{0:s}) | X_s = ξ_s^i, y_{0:s}], updated with K backward draws

  J^{i,k} ~ Λ_s(i, ·),  Λ_s(i, l) ∝ ω_s^l m(ξ_s^l, ξ_{s+1}^i),
  τ_{s+1}^i = K⁻¹ Σ_k [τ_s^{J^{i,k}} + h̃_s(ξ_s^{J^{i,k}}, ξ_{s+1}^i)],

and estimates E[h_n | y_{0:n}] by Σ_i ω_n^i τ_n^i / Σ_i ω_n^i. Memory is O(N K) per step; K ≥ 2 keeps the variance
linear in n.

The algorithm runs one observation at a time, as blackjax's SMC does: ``init(key, model, y_0, additive_fn, ...)``
builds a ``PaRISState`` and ``step(key, state, y_t, t)`` moves it to time t (an online smoother); ``paris`` is
``init`` followed by a ``lax.scan`` over ``step``. The state holds the model (a pytree) and, as static fields, the
pieces a researcher swaps: the backward kernel, the resampler and the additive functional.

Backward kernels (any function with the ``BackwardKernel`` signature plugs in):

* ``backward_exact`` (default): all N × N logits, O(N²) per step, the right choice on an accelerator up to a few
  thousand particles;
* ``backward_reject``: the accept-reject sampler of Olsson and Westerborn with proposals from Cat(ω_s) and a
  fallback to the exact kernel for the draws not accepted within ``max_rounds`` rounds (the hybrid of the
  ``particles`` library; pure rejection has a heavy-tailed run time);
* ``backward_mcmc``: the independent Metropolis-Hastings kernel of Dau and Chopin ("On backward smoothing
  algorithms", Annals of Statistics 51(5), 2023, arXiv 2207.00976, Section 4), started at each particle's ancestor:
  O(N log N) per step, the kernel for large N.

The same step with a frozen reference trajectory (``init(..., reference_x0=ζ_0)``, ``step(..., reference_x=ζ_t)``)
is the conditional SMC of PaRIS particle Gibbs (``toolkit.smc.particle_gibbs``).

In ``additive_fn(x_prev, x, t)``, ``t`` is the index of ``x``; at ``t = 0`` it is called as ``additive_fn(x0, x0, 0)``
and returns h_0(x_0). It may return any pytree of arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from flax import struct

from toolkit import _checks
from toolkit.smc import resampling
from toolkit.smc import ssm as ssm_lib
from toolkit.smc.ssm import StateSpaceModel

AdditiveFn = Callable[[jax.Array, jax.Array, Any], Any]


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


class BackwardDraws(NamedTuple):
  """What a backward kernel returns.

  Attributes:
    indices: (N, K) int32, K draws J^{i,k} from Λ(i, ·) for each new particle i (indices into the previous cloud).
    fallback_fraction: scalar, the share of draws that a kernel with an exact fallback (``backward_reject``) left to
      its O(N) fallback rows; 0 for the other kernels.
  """

  indices: jax.Array
  fallback_fraction: jax.Array


class BackwardKernel(Protocol):
  """The signature every backward kernel has (``backward_exact``, ``backward_reject``, ``backward_mcmc``, yours).

  It draws, for each new particle ξ^i (row i of ``x``), ``num_backward`` indices from the backward kernel
  Λ(i, l) ∝ ω^l m(ξ_prev^l, ξ^i), where ω = exp(``log_weights_prev``) (unnormalised) are the weights of the previous
  cloud ``x_prev`` before resampling.

  Args:
    key: PRNG key.
    model: the ``StateSpaceModel`` (m is ``model.transition``).
    x_prev: (N, state_dim) previous particles ξ_{t-1}.
    log_weights_prev: (N,) their unnormalised log-weights.
    x: (N, state_dim) new particles ξ_t.
    ancestors: (N,) int, the index in ``x_prev`` of each new particle's ancestor (``arange(N)`` at a step that did
      not resample). For the bootstrap filter with multinomial resampling, ``ancestors[i]`` given ``x[i]`` is already
      an exact draw from Λ(i, ·): an MCMC kernel can start its chain there.
    t: index of the new time (traced).
    num_backward: K (static).

  Returns:
    ``BackwardDraws``.
  """

  def __call__(
    self,
    key: jax.Array,
    model: StateSpaceModel,
    x_prev: jax.Array,
    log_weights_prev: jax.Array,
    x: jax.Array,
    ancestors: jax.Array,
    t: Any,
    num_backward: int,
  ) -> BackwardDraws: ...


@struct.dataclass
class PaRISState:
  """The PaRIS cloud at time t, with what ``step`` needs to move it to t + 1.

  Attributes:
    particles: ξ_t, (N, state_dim).
    log_weights: log ω_t, (N,), unnormalised.
    statistics: τ_t, the per-particle statistics (the functional's pytree, leading axis N).
    log_likelihood: the particle filter's running estimate of log p(y_{0:t}).
    model: the ``StateSpaceModel`` (a pytree: its parameters are traced).
    proposal: a guided ``Proposal``, or ``None`` for the bootstrap filter.
    additive_fn: ``(x_prev, x, t) -> pytree``, the functional's term h̃_t (static).
    backward: the ``BackwardKernel`` (static).
    resampler: ``(key, weights, num_samples) -> indices`` (static).
    num_backward: K backward draws per particle (static).
    ess_threshold: resample when ESS < ess_threshold · N (static).
    conditional: whether particle N − 1 is a frozen reference (conditional SMC; static).
    particle_sharding: optional sharding of the particle axis (static).
  """

  particles: jax.Array
  log_weights: jax.Array
  statistics: Any
  log_likelihood: jax.Array
  model: StateSpaceModel
  proposal: Proposal | None
  additive_fn: AdditiveFn = struct.field(pytree_node=False)
  backward: BackwardKernel = struct.field(pytree_node=False)
  resampler: resampling.Resampler = struct.field(pytree_node=False)
  num_backward: int = struct.field(pytree_node=False)
  ess_threshold: float = struct.field(pytree_node=False)
  conditional: bool = struct.field(pytree_node=False)
  particle_sharding: jax.sharding.Sharding | None = struct.field(pytree_node=False)


class PaRISInfo(NamedTuple):
  """What one ``step`` did.

  Attributes:
    log_likelihood_increment: the step's estimate of log p(y_t | y_{0:t-1}).
    ess: effective sample size of the new weights.
    resampled: whether the step resampled.
    ancestors: (N,) the index of each new particle's ancestor in the previous cloud.
    backward_indices: (N, K) the backward draws J of this step (indices into the previous cloud).
    fallback_fraction: the backward kernel's ``fallback_fraction``.
  """

  log_likelihood_increment: jax.Array
  ess: jax.Array
  resampled: jax.Array
  ancestors: jax.Array
  backward_indices: jax.Array
  fallback_fraction: jax.Array


# An ESS below this means one particle holds (nearly) all the weight: PaRISOutput.collapsed.
COLLAPSED_ESS = 1.5


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
      (0 for the other kernels).
    nan_detected: whether a weight became NaN at some step (a NaN observation, a model whose log-density is NaN);
      ``estimate`` and ``log_likelihood`` are then NaN too, never a finite value computed from broken weights.
    collapsed: whether the weights collapsed onto one particle at some step (ESS < 1.5: a very peaked
      likelihood, an outlier observation): the estimate then rests on a single path and may be far off (an outlier
      y = 1e3 gave 18.8 against the Kalman smoother's 989.5). More particles or a better proposal are needed.
  """

  estimate: Any
  log_likelihood: jax.Array
  statistics: Any
  particles: jax.Array
  log_weights: jax.Array
  ess: jax.Array
  resampled: jax.Array
  fallback_fraction: jax.Array
  nan_detected: jax.Array
  collapsed: jax.Array


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


def _check_backward_args(model, x_prev, log_weights_prev, x, num_backward) -> None:
  """What every backward kernel reads: a ``log_weights_prev`` of length 1 broadcast silently over ``x_prev``."""
  if not isinstance(model, StateSpaceModel):
    raise TypeError(f"`model` must be a toolkit.smc.ssm.StateSpaceModel, got {type(model).__name__}.")
  for name, value in (("x_prev", x_prev), ("x", x)):
    if jnp.ndim(value) != 2 or jnp.shape(value)[1] != model.state_dim:
      raise ValueError(f"`{name}` must have shape (N, state_dim) = (N, {model.state_dim}), got {jnp.shape(value)}.")
  if jnp.shape(log_weights_prev) != (jnp.shape(x_prev)[0],):
    raise ValueError(
      f"`log_weights_prev` must have shape ({jnp.shape(x_prev)[0]},) (one per row of `x_prev`), "
      f"got {jnp.shape(log_weights_prev)}."
    )
  _checks.check_int(num_backward, "num_backward", 1)


def backward_exact(
  key: jax.Array,
  model: StateSpaceModel,
  x_prev: jax.Array,
  log_weights_prev: jax.Array,
  x: jax.Array,
  ancestors: jax.Array,
  t,
  num_backward: int,
) -> BackwardDraws:
  """K draws per new particle from Λ(i, l) ∝ ω^l m(ξ_prev^l, ξ^i) with all N × N logits (O(N²) per step).

  A ``BackwardKernel``; ``ancestors`` is not used.
  """
  _check_backward_args(model, x_prev, log_weights_prev, x, num_backward)
  del ancestors
  logits = log_weights_prev[None, :] + ssm_lib.transition_log_prob_matrix(model, x_prev, x, t)
  indices = _inverse_cdf_rows(key, logits, num_backward)
  return BackwardDraws(indices, jnp.zeros((), log_weights_prev.dtype))


def backward_reject(
  key: jax.Array,
  model: StateSpaceModel,
  x_prev: jax.Array,
  log_weights_prev: jax.Array,
  x: jax.Array,
  ancestors: jax.Array,
  t,
  num_backward: int,
  max_rounds: int = 64,
) -> BackwardDraws:
  """Accept-reject draws from Λ with a fallback to the exact kernel (a ``BackwardKernel``).

  Each of the N·K lanes proposes l ~ Cat(ω) and accepts with probability m(ξ_prev^l, ξ^i) / exp(bound), one proposal
  per lane per round, for at most ``max_rounds`` rounds (a ``while_loop`` that stops once every lane accepted).
  Lanes still open are drawn from the exact kernel, computed only for their rows (all N rows if more than N/8 are
  open). Every returned index is an exact draw from Λ. Under ``vmap`` the loop runs as long as the slowest lane and
  the branches become selects, so prefer ``backward_exact`` for vmapped replicates. Pass another ``max_rounds`` with
  ``functools.partial(backward_reject, max_rounds=16)``. Needs ``model.transition_log_bound``; ``ancestors`` is not
  used.
  """
  _check_backward_args(model, x_prev, log_weights_prev, x, num_backward)
  _checks.check_int(max_rounds, "max_rounds", 0)
  del ancestors
  if model.transition_log_bound is None:
    raise ValueError("backward_reject needs `model.transition_log_bound` (an upper bound of log m).")
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
    u = jax.random.uniform(k_prop, (n, num_backward), dtype=cdf.dtype) * cdf[-1]
    proposal = jnp.clip(jnp.searchsorted(cdf, u, side="right"), 0, cdf.shape[0] - 1).astype(jnp.int32)
    log_u = jnp.log(jax.random.uniform(k_acc, (n, num_backward), dtype=cdf.dtype))
    accept = (~accepted) & (log_u <= log_m(proposal) - log_bound)
    return r + 1, k, accepted | accept, jnp.where(accept, proposal, idx)

  init_loop = (
    0,
    key_loop,
    jnp.zeros((n, num_backward), bool),
    jnp.zeros((n, num_backward), jnp.int32),
  )
  _, _, accepted, idx = jax.lax.while_loop(cond, body, init_loop)

  open_rows = ~jnp.all(accepted, axis=1)
  n_open = jnp.sum(open_rows)
  budget = max(1, n // 8)

  def fallback_some():
    # Exact logits for at most `budget` open rows (padding repeats a row; every write is an exact draw).
    rows = jnp.nonzero(open_rows, size=budget, fill_value=0)[0]
    logits = log_weights_prev[None, :] + ssm_lib.transition_log_prob_matrix(model, x_prev, x[rows], t)
    draws = _inverse_cdf_rows(key_exact, logits, num_backward)
    return idx.at[rows].set(jnp.where(accepted[rows], idx[rows], draws))

  def fallback_all():
    logits = log_weights_prev[None, :] + ssm_lib.transition_log_prob_matrix(model, x_prev, x, t)
    exact = _inverse_cdf_rows(key_exact, logits, num_backward)
    return jnp.where(accepted, idx, exact)

  branch = jnp.where(n_open == 0, 0, jnp.where(n_open <= budget, 1, 2))
  idx = jax.lax.switch(branch, [lambda: idx, fallback_some, fallback_all])
  return BackwardDraws(idx, 1.0 - jnp.mean(accepted.astype(cdf.dtype)))


def backward_mcmc(
  key: jax.Array,
  model: StateSpaceModel,
  x_prev: jax.Array,
  log_weights_prev: jax.Array,
  x: jax.Array,
  ancestors: jax.Array,
  t,
  num_backward: int,
  num_mcmc_steps: int = 1,
) -> BackwardDraws:
  """Independent Metropolis-Hastings draws from Λ started at each particle's ancestor (a ``BackwardKernel``).

  Dau and Chopin, "On backward smoothing algorithms", Annals of Statistics 51(5), 2023, arXiv 2207.00976, Section 4
  (MCMC backward kernels). Particle i runs one chain on {0..N-1} that starts at its ancestor J_0 = A^i; a move
  proposes l ~ Cat(ω) and accepts it with probability min(1, m(ξ_prev^l, ξ^i) / m(ξ_prev^J, ξ^i)) (the weights
  cancel). Λ(i, ·) is invariant under every move, and A^i given ξ^i is already a draw from Λ(i, ·) for the bootstrap
  filter with multinomial resampling, so the chain's states are exact draws from Λ; with other resamplers, guided
  proposals or steps without resampling the start is exact under the weighted particle measure and PaRIS stays
  consistent. The K draws are the chain's states after every ``num_mcmc_steps`` moves (successive states of one
  chain, dependent, but each one distributed as Λ(i, ·)).

  Cost per time step: one cumsum of the weights, then per move one searchsorted (N lanes, O(N log N)) and N
  transition densities: O(1) densities per particle, against O(N) for ``backward_exact``. Pass another
  ``num_mcmc_steps`` with ``functools.partial(backward_mcmc, num_mcmc_steps=2)``.
  """
  if not isinstance(num_mcmc_steps, int) or num_mcmc_steps < 1:
    raise ValueError(f"`num_mcmc_steps` must be a positive Python int, got {num_mcmc_steps!r}.")
  _check_backward_args(model, x_prev, log_weights_prev, x, num_backward)
  n = x.shape[0]
  if jnp.shape(ancestors) != (n,):
    raise ValueError(f"`ancestors` must have shape ({n},) (one per row of `x`), got {jnp.shape(ancestors)}.")
  num_moves = num_backward * num_mcmc_steps
  weights = jnp.exp(resampling.normalize_log_weights(log_weights_prev))
  cdf = jnp.cumsum(weights)
  k_prop, k_acc = jax.random.split(key)
  positions = jax.random.uniform(k_prop, (num_moves, n), dtype=cdf.dtype) * cdf[-1]
  log_u = jnp.log(jax.random.uniform(k_acc, (num_moves, n), dtype=cdf.dtype))

  def log_m(l_idx):  # (N,) indices -> (N,) log m(ξ_prev^l, ξ^i), one batched distribution
    return model.transition(model.params, x_prev[l_idx], t).log_prob(x)

  def move(chain, inputs):
    current, current_log_m = chain
    position, log_uniform = inputs
    proposal = jnp.clip(jnp.searchsorted(cdf, position, side="right"), 0, cdf.shape[0] - 1).astype(jnp.int32)
    proposal_log_m = log_m(proposal)
    accept = log_uniform <= proposal_log_m - current_log_m
    current = jnp.where(accept, proposal, current)
    return (current, jnp.where(accept, proposal_log_m, current_log_m)), current

  start = ancestors.astype(jnp.int32)
  _, states = jax.lax.scan(move, (start, log_m(start)), (positions, log_u), unroll=min(num_moves, 8))
  indices = states.reshape(num_backward, num_mcmc_steps, n)[:, -1].T
  return BackwardDraws(indices, jnp.zeros((), log_weights_prev.dtype))


# ---------------------------------------------------------------------------------------------------------------
# The particle filter's pieces (bootstrap or guided).


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


def _constrain(a: jax.Array, sharding) -> jax.Array:
  return a if sharding is None else jax.lax.with_sharding_constraint(a, sharding)


# ---------------------------------------------------------------------------------------------------------------
# One step at a time.


def _check_options(model, num_particles, num_backward, backward, resampler, ess_threshold) -> None:
  if not isinstance(model, StateSpaceModel):
    raise TypeError(f"`model` must be a toolkit.smc.ssm.StateSpaceModel, got {type(model).__name__}.")
  if not isinstance(num_particles, int) or num_particles < 2:
    raise ValueError(f"`num_particles` must be a Python int >= 2, got {num_particles!r}.")
  if not isinstance(num_backward, int) or num_backward < 1:
    raise ValueError(f"`num_backward` must be a Python int >= 1 (2 or more is recommended), got {num_backward!r}.")
  if isinstance(backward, str) or not callable(backward):
    raise TypeError(
      f"`backward` must be a backward kernel (a function with the BackwardKernel signature, such as "
      f"toolkit.smc.paris.backward_exact), got {backward!r}."
    )
  resampling.check_resampler(resampler)
  if not 0.0 <= ess_threshold <= 1.0:
    raise ValueError(f"`ess_threshold` must be in [0, 1], got {ess_threshold}.")


def init(
  key: jax.Array,
  model: StateSpaceModel,
  y0: jax.Array,
  additive_fn: AdditiveFn,
  *,
  num_particles: int,
  num_backward: int = 2,
  backward: BackwardKernel = backward_exact,
  proposal: Proposal | None = None,
  resampler: resampling.Resampler = resampling.multinomial,
  ess_threshold: float = 1.0,
  reference_x0: jax.Array | None = None,
  particle_sharding: jax.sharding.Sharding | None = None,
) -> PaRISState:
  """The PaRIS state at time 0: N particles from χ (or the proposal), weighted by y_0, with τ_0 = h_0(ξ_0).

  Args:
    key: PRNG key.
    model: a ``StateSpaceModel``.
    y0: the first observation.
    additive_fn: ``(x_prev, x, t) -> pytree``, the term h̃ of the step to time t (h_0(x) at t = 0, called with
      ``x_prev = x``).
    num_particles: N (static).
    num_backward: K backward draws per particle (static; K ≥ 2 keeps the variance linear in n).
    backward: a ``BackwardKernel``: ``backward_exact`` (O(N²) per step), ``backward_reject``, ``backward_mcmc``
      (O(N log N)), or your own function with the same signature.
    proposal: a guided ``Proposal``; ``None`` is the bootstrap filter.
    resampler: ``(key, weights, num_samples) -> indices``, e.g. ``toolkit.smc.resampling.systematic``.
    ess_threshold: resample when ESS < ess_threshold · N (1: every step).
    reference_x0: conditional SMC: the frozen reference state ζ_0 (state_dim,), kept as particle N − 1 (then
      ``ess_threshold`` must be 1, and every ``step`` needs its ``reference_x``). See
      ``toolkit.smc.particle_gibbs``.
    particle_sharding: optional sharding of the particle axis (e.g. ``NamedSharding(mesh, P('particles'))``).

  Returns:
    ``PaRISState``.

  Example (an online smoother: one observation at a time):
    >>> import jax
    >>> from toolkit.smc import paris, ssm
    >>> model = ssm.linear_gaussian(A=0.9, Q=0.5, C=1.0, R=1.0, m0=0.0, P0=1.0)
    >>> _, ys = ssm.simulate(jax.random.key(0), model, 30)
    >>> sum_x = lambda x_prev, x, t: x[0]
    >>> state = paris.init(jax.random.key(1), model, ys[0], sum_x, num_particles=128)
    >>> step = jax.jit(paris.step)
    >>> for t in range(1, 30):
    ...   state, info = step(jax.random.fold_in(jax.random.key(2), t), state, ys[t], t)
    >>> print(paris.smoothed_estimate(state).shape, info.backward_indices.shape, bool(state.log_likelihood < 0))
    () (128, 2) True
  """
  _check_options(model, num_particles, num_backward, backward, resampler, ess_threshold)
  conditional = reference_x0 is not None
  n = num_particles
  if conditional:
    if ess_threshold != 1.0:
      raise ValueError("conditional SMC resamples at every step: `ess_threshold` must be 1 with a reference.")
    if jnp.shape(reference_x0) != (model.state_dim,):
      raise ValueError(
        f"`reference_x0` must have shape (state_dim,) = ({model.state_dim},), got {jnp.shape(reference_x0)}."
      )
  x0 = _sample_initial(key, model, y0, n, proposal)
  if conditional:  # the frozen particle is weighted like the others, below
    x0 = x0.at[n - 1].set(reference_x0)
  x0 = _constrain(x0, particle_sharding)
  lw0 = _constrain(_initial_log_weight(model, x0, y0, proposal), particle_sharding)
  tau0 = jax.vmap(lambda xi: additive_fn(xi, xi, 0))(x0)
  return PaRISState(
    particles=x0,
    log_weights=lw0,
    statistics=tau0,
    log_likelihood=jax.nn.logsumexp(lw0) - jnp.log(n),
    model=model,
    proposal=proposal,
    additive_fn=additive_fn,
    backward=backward,
    resampler=resampler,
    num_backward=num_backward,
    ess_threshold=ess_threshold,
    conditional=conditional,
    particle_sharding=particle_sharding,
  )


def step(
  key: jax.Array, state: PaRISState, y: jax.Array, t, *, reference_x: jax.Array | None = None
) -> tuple[PaRISState, PaRISInfo]:
  """One PaRIS step from time t − 1 to t: resample, propagate, weight by y_t, draw K backward indices, update τ.

  The key is split into three (resampling, propagation, backward draws), the order ``paris`` has always used.

  Args:
    key: PRNG key.
    state: the ``PaRISState`` at time t − 1.
    y: the observation y_t.
    t: the new time index (an int or a traced int scalar).
    reference_x: conditional SMC only (a state made with ``reference_x0``): the frozen state ζ_t (state_dim,).
      The N − 1 free particles draw their ancestors from all N with ``state.resampler`` (the conditional-SMC
      invariance argument, Andrieu, Doucet and Holenstein 2010, is the multinomial one: another scheme needs its
      own conditional version, Chopin and Singh 2015), the frozen particle's ancestor is itself.

  Returns:
    The ``PaRISState`` at time t and the step's ``PaRISInfo``.

  Example: see ``init``.
  """
  if state.conditional != (reference_x is not None):
    raise ValueError("`reference_x` must be given exactly when the state is conditional (made with `reference_x0`).")
  n = state.particles.shape[0]
  model, proposal, sharding = state.model, state.proposal, state.particle_sharding
  x_prev, lw_prev, tau_prev = state.particles, state.log_weights, state.statistics
  k_res, k_prop, k_back = jax.random.split(key, 3)
  if state.conditional:
    free = state.resampler(k_res, jnp.exp(resampling.normalize_log_weights(lw_prev)), n - 1)
    ancestors = jnp.concatenate([free, jnp.array([n - 1], free.dtype)])
    lw_carry = jnp.zeros_like(lw_prev)
    resampled = jnp.array(True)
  else:
    decision = resampling.adaptive_resample(
      k_res, lw_prev, ess_threshold=state.ess_threshold, resampler=state.resampler
    )
    ancestors, lw_carry, resampled = decision.ancestors, decision.log_weights, decision.resampled
  x_anc = x_prev[ancestors]
  x = _sample_transition(k_prop, model, x_anc, y, t, proposal)
  if state.conditional:
    x = x.at[n - 1].set(reference_x)
  x = _constrain(x, sharding)
  lw = _constrain(lw_carry + _transition_log_weight(model, x_anc, x, y, t, proposal), sharding)
  log_likelihood_increment = jax.nn.logsumexp(lw) - jax.nn.logsumexp(lw_carry)

  draws = state.backward(k_back, model, x_prev, lw_prev, x, ancestors, t, state.num_backward)
  J = draws.indices
  h = jax.vmap(lambda js, xi: jax.vmap(lambda j: state.additive_fn(x_prev[j], xi, t))(js))(J, x)
  tau = jax.tree.map(lambda tp, hh: jnp.mean(tp[J] + hh, axis=1), tau_prev, h)
  new_state = state.replace(
    particles=x,
    log_weights=lw,
    statistics=tau,
    log_likelihood=state.log_likelihood + log_likelihood_increment,
  )
  info = PaRISInfo(
    log_likelihood_increment=log_likelihood_increment,
    ess=resampling.ess(lw),
    resampled=resampled,
    ancestors=ancestors,
    backward_indices=J,
    fallback_fraction=draws.fallback_fraction,
  )
  return new_state, info


def smoothed_estimate(state: PaRISState) -> Any:
  """Σ_i ω_t^i τ_t^i / Σ_i ω_t^i: the estimate of E[h_t(X_{0:t}) | y_{0:t}] held by ``state``."""
  # A PaRISOutput has the same fields, but its `estimate` already is this sum, with a NaN run reported as NaN.
  if not isinstance(state, PaRISState):
    raise TypeError(
      f"`state` must be a PaRISState (from init or step), got {type(state).__name__}"
      + (" (its `estimate` already is the smoothed estimate)." if isinstance(state, PaRISOutput) else ".")
    )
  w = jnp.exp(resampling.normalize_log_weights(state.log_weights))
  return jax.tree.map(lambda a: jnp.tensordot(w, a, axes=1), state.statistics)


def collect_output(initial: PaRISState, final: PaRISState, infos: PaRISInfo) -> PaRISOutput:
  """The ``PaRISOutput`` of a run from its first and last states and its stacked ``PaRISInfo`` (leading axis:
  steps; only ``ess``, ``resampled`` and ``fallback_fraction`` are read)."""
  for name, value in (("initial", initial), ("final", final)):
    if not isinstance(value, PaRISState):
      raise TypeError(f"`{name}` must be a PaRISState (from init or step), got {type(value).__name__}.")
  if not isinstance(infos, PaRISInfo):
    raise TypeError(f"`infos` must be the steps' stacked PaRISInfo, got {type(infos).__name__}.")
  if jnp.ndim(infos.ess) != 1:
    raise ValueError(
      f"`infos` must be the steps' PaRISInfo stacked along a leading axis (as lax.scan returns it), got an `ess` "
      f"of shape {jnp.shape(infos.ess)}."
    )
  ess = jnp.concatenate([resampling.ess(initial.log_weights)[None], infos.ess])
  # A NaN weight at any step breaks every later estimate, even once resampling has made the weights finite again.
  nan_detected = jnp.any(jnp.isnan(ess)) | jnp.isnan(final.log_likelihood)
  return PaRISOutput(
    estimate=jax.tree.map(lambda e: jnp.where(nan_detected, jnp.nan, e), smoothed_estimate(final)),
    log_likelihood=jnp.where(nan_detected, jnp.nan, final.log_likelihood),
    statistics=final.statistics,
    particles=final.particles,
    log_weights=final.log_weights,
    ess=ess,
    resampled=infos.resampled,
    fallback_fraction=infos.fallback_fraction,
    nan_detected=nan_detected,
    collapsed=jnp.any(ess < COLLAPSED_ESS),
  )


def check_observations(ys: jax.Array, model: StateSpaceModel | None = None) -> None:
  """``ys`` must have a leading time axis of length >= 2 and, given ``model``, one observation of the model's shape
  per time (ValueError otherwise: broadcasting a wrong-shaped ``ys`` would give a finite, meaningless estimate)."""
  if model is not None and not isinstance(model, StateSpaceModel):
    raise TypeError(f"`model` must be a toolkit.smc.ssm.StateSpaceModel or None, got {type(model).__name__}.")
  if jnp.ndim(ys) < 1 or jnp.shape(ys)[0] < 2:
    raise ValueError(f"`ys` must have a leading time axis of length >= 2, got shape {jnp.shape(ys)}.")
  if isinstance(model, StateSpaceModel):
    x0 = jax.ShapeDtypeStruct((model.state_dim,), jnp.result_type(float))
    y_shape = jax.eval_shape(
      lambda key, x: jnp.asarray(model.observation(model.params, x, 0).sample(key)), jax.random.key(0), x0
    ).shape
    if tuple(jnp.shape(ys)[1:]) != tuple(y_shape):
      raise ValueError(
        f"`ys` must have shape (T, {', '.join(map(str, y_shape))}) for this model (one observation of shape "
        f"{tuple(y_shape)} per time), got {jnp.shape(ys)}."
      )


def paris(
  key: jax.Array,
  model: StateSpaceModel,
  ys: jax.Array,
  additive_fn: AdditiveFn,
  *,
  num_particles: int,
  num_backward: int = 2,
  backward: BackwardKernel = backward_exact,
  proposal: Proposal | None = None,
  resampler: resampling.Resampler = resampling.multinomial,
  ess_threshold: float = 1.0,
  particle_sharding: jax.sharding.Sharding | None = None,
) -> PaRISOutput:
  """PaRIS estimate of E[Σ_t h̃_t(X_{t-1}, X_t) + h_0(X_0) | y_{0:n}] and of log p(y_{0:n}).

  ``init`` on the first half of ``key`` and ``y_0``, then a ``lax.scan`` of ``step`` over y_1..y_n with the second
  half split into n keys.

  Args:
    key: PRNG key.
    model: a ``StateSpaceModel``.
    ys: observations with a leading time axis of length T = n + 1.
    additive_fn, num_particles, num_backward, backward, proposal, resampler, ess_threshold, particle_sharding:
      as in ``init``.

  Returns:
    ``PaRISOutput``.

  Example:
    >>> import jax
    >>> from toolkit.smc import paris, ssm
    >>> model = ssm.linear_gaussian(A=0.9, Q=0.5, C=1.0, R=1.0, m0=0.0, P0=1.0)
    >>> _, ys = ssm.simulate(jax.random.key(0), model, 30)
    >>> run = jax.jit(lambda key: paris.paris(key, model, ys, lambda x_prev, x, t: x[0], num_particles=128,
    ...                                       backward=paris.backward_mcmc))
    >>> out = run(jax.random.key(1))
    >>> truth = ssm.kalman_smoother(model, ys).smoothed_means.sum()
    >>> print(out.ess.shape, bool(abs(out.estimate - truth) < 1.5))
    (30,) True
  """
  check_observations(ys, model)
  k_init, k_scan = jax.random.split(key)
  state = init(
    k_init,
    model,
    ys[0],
    additive_fn,
    num_particles=num_particles,
    num_backward=num_backward,
    backward=backward,
    proposal=proposal,
    resampler=resampler,
    ess_threshold=ess_threshold,
    particle_sharding=particle_sharding,
  )

  def one_step(state, inputs):
    k, y, t = inputs
    state, info = step(k, state, y, t)
    return state, info._replace(ancestors=None, backward_indices=None)  # not stacked: O(N K) memory

  T = jnp.shape(ys)[0]
  final, infos = jax.lax.scan(one_step, state, (jax.random.split(k_scan, T - 1), ys[1:], jnp.arange(1, T)))
  return collect_output(state, final, infos)


# ---------------------------------------------------------------------------------------------------------------
# Additive functionals.


def score_functional(model_fn: Callable[[Any], StateSpaceModel], theta: Any, ys: jax.Array) -> AdditiveFn:
  """The Fisher-identity functional: its smoothed expectation is ∇_θ log p_θ(y_{0:n}).

  h̃_t(x_{t−1}, x_t) = ∇_θ [log m_θ(x_{t−1}, x_t) + log g_θ(x_t, y_t)],
  h_0(x_0) = ∇_θ [log χ_θ(x_0) + log g_θ(x_0, y_0)].
  ``model_fn(theta)`` builds the model; the result has the pytree structure of ``theta``. Particles carry no
  gradient: only the complete-data log-density is differentiated, never the resampling.
  """
  if not callable(model_fn):
    raise TypeError(f"`model_fn` must be a function theta -> StateSpaceModel, got {type(model_fn).__name__}.")
  if jnp.ndim(ys) < 1:
    raise ValueError(f"`ys` must have a leading time axis, got shape {jnp.shape(ys)}.")

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
