"""PaRIS particle Gibbs (PPG): PaRIS driven by conditional SMC, with the bias-reduced roll-out estimator.

Cardoso, Janati El Idrissi, Le Corff, Moulines and Olsson, "State and parameter learning with PaRIS particle Gibbs",
ICML 2023, arXiv 2301.00900.

One sweep maps a reference path ζ_{0:n} to (estimate, ζ'_{0:n}):

1. run PaRIS with ζ frozen as particle N − 1 (the free particles draw their ancestors from all N, the frozen
   particle's ancestor is itself; the frozen particle's statistic τ is updated with backward draws like the others);
2. the estimate is Σ_i ω_n^i τ_n^i / Σ_i ω_n^i;
3. the next reference is drawn backwards through the stored backward indices: b_n ~ Cat(ω_n),
   b_s = J_s^{b_{s+1}, U_s} with U_s uniform on {1..K}, ζ'_s = ξ_s^{b_s}.

Given the forward cloud, each J is an exact draw of the backward kernel, so step 3 is conditional SMC with backward
sampling, which leaves the smoothing distribution φ invariant; and E[estimate | cloud] = E[h(ζ') | cloud], so the
estimate is unbiased once ζ ~ φ. The only bias left is the chain's distance from stationarity, which decays
geometrically in the burn-in k0. The roll-out estimator averages the sweeps after burn-in:

  Π_{k0,k}(h) = (k − k0)⁻¹ Σ_{l=k0+1}^{k} estimate_l.

The invariance argument of step 1 is conditional SMC's with multinomial resampling (Andrieu, Doucet and
Holenstein, JRSS B 2010), the default ``resampler``; a low-variance scheme needs its conditional version (Chopin and
Singh, Bernoulli 2015) and is accepted here without that guarantee. Step 3 needs exact backward draws
(``paris.backward_exact``, the default, or ``paris.backward_reject``).

Conditional SMC one step at a time is ``paris.init(..., reference_x0=ζ_0)`` followed by
``paris.step(..., reference_x=ζ_t)``; ``forward_pass`` scans it and keeps the cloud that ``draw_path`` needs.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from toolkit import _checks
from toolkit.smc import paris as paris_lib
from toolkit.smc import resampling
from toolkit.smc.ssm import StateSpaceModel


class ForwardHistory(NamedTuple):
  """The cloud of a forward pass, what backward path drawing needs: particles (T, N, d), log-weights (T, N) and the
  backward indices (T - 1, N, K), entry t holding the draws of the step t → t + 1."""

  particles: jax.Array
  log_weights: jax.Array
  backward_indices: jax.Array


class ForwardPass(NamedTuple):
  """A PaRIS pass (conditional SMC when it had a reference) and the cloud it went through."""

  output: paris_lib.PaRISOutput
  history: ForwardHistory


class SweepOutput(NamedTuple):
  """One PPG sweep: the PaRIS output of the conditional pass and the next reference path (T, state_dim)."""

  paris: paris_lib.PaRISOutput
  reference: jax.Array


class ParticleGibbsOutput(NamedTuple):
  """Result of ``particle_gibbs``.

  Attributes:
    estimate: the roll-out estimate Π_{k0,k}(h), the mean of the sweeps after burn-in.
    estimates: the estimate of every sweep (leading axis: sweeps).
    log_likelihoods: the conditional pass's log-likelihood estimate per sweep (not an unbiased estimate of
      p(y); reported for diagnostics).
    reference: the last reference path.
  """

  estimate: Any
  estimates: Any
  log_likelihoods: jax.Array
  reference: jax.Array


def forward_pass(
  key: jax.Array,
  model: StateSpaceModel,
  ys: jax.Array,
  additive_fn: paris_lib.AdditiveFn,
  *,
  num_particles: int,
  num_backward: int = 2,
  backward: paris_lib.BackwardKernel = paris_lib.backward_exact,
  proposal: paris_lib.Proposal | None = None,
  resampler: resampling.Resampler = resampling.multinomial,
  reference: jax.Array | None = None,
) -> ForwardPass:
  """PaRIS over ``ys`` that keeps its cloud; conditional SMC when ``reference`` (T, state_dim) is given.

  ``paris.init`` on the first half of ``key``, then a ``lax.scan`` of ``paris.step`` (with ``reference_x`` = ζ_t),
  exactly as ``paris.paris``. With a reference the pass resamples at every step and ζ stays particle N − 1.

  Args:
    key: PRNG key.
    model, ys, additive_fn, num_particles, num_backward, backward, proposal, resampler: as in
      ``toolkit.smc.paris.paris``.
    reference: the frozen path ζ_{0:n}, (T, state_dim), or ``None`` for an unconditional pass.

  Returns:
    ``ForwardPass``.
  """
  paris_lib.check_observations(ys, model)
  T = jnp.shape(ys)[0]
  conditional = reference is not None
  if conditional and jnp.shape(reference) != (T, getattr(model, "state_dim", None)):
    raise ValueError(
      f"`reference` must have shape (T, state_dim) = ({T}, {getattr(model, 'state_dim', None)}), "
      f"got {jnp.shape(reference)}."
    )
  k_init, k_scan = jax.random.split(key)
  state = paris_lib.init(
    k_init,
    model,
    ys[0],
    additive_fn,
    num_particles=num_particles,
    num_backward=num_backward,
    backward=backward,
    proposal=proposal,
    resampler=resampler,
    reference_x0=reference[0] if conditional else None,
  )

  def one_step(state, inputs):
    k, y, t, reference_x = inputs
    state, info = paris_lib.step(k, state, y, t, reference_x=reference_x)
    return state, (info._replace(ancestors=None), state.particles, state.log_weights)

  inputs = (
    jax.random.split(k_scan, T - 1),
    ys[1:],
    jnp.arange(1, T),
    reference[1:] if conditional else None,
  )
  final, (infos, xs, lws) = jax.lax.scan(one_step, state, inputs)
  history = ForwardHistory(
    particles=jnp.concatenate([state.particles[None], xs]),
    log_weights=jnp.concatenate([state.log_weights[None], lws]),
    backward_indices=infos.backward_indices,
  )
  return ForwardPass(paris_lib.collect_output(state, final, infos), history)


def _check_history(history, log_weights_final) -> None:
  if not isinstance(history, ForwardHistory):
    raise TypeError(f"`history` must be a ForwardHistory (from forward_pass), got {type(history).__name__}.")
  if jnp.ndim(history.particles) != 3:
    raise ValueError(f"`history.particles` must have shape (T, N, state_dim), got {jnp.shape(history.particles)}.")
  T, n, _ = jnp.shape(history.particles)
  J = history.backward_indices
  if jnp.ndim(J) != 3 or jnp.shape(J)[:2] != (T - 1, n) or jnp.shape(J)[2] < 1:
    raise ValueError(
      f"`history.backward_indices` must have shape (T - 1, N, K) = ({T - 1}, {n}, K), got {jnp.shape(J)}."
    )
  if not jnp.issubdtype(jnp.result_type(J), jnp.integer):
    raise TypeError(f"`history.backward_indices` must be an integer array, got dtype {jnp.result_type(J)}.")
  # Indexing clamps an out-of-range index to a real particle: the path would be wrong without any error.
  _checks.check_ids(J, n, "history.backward_indices", "the particles")
  if jnp.shape(log_weights_final) != (n,):
    raise ValueError(f"`log_weights_final` must have shape (N,) = ({n},), got {jnp.shape(log_weights_final)}.")


def draw_path(key: jax.Array, history: ForwardHistory, log_weights_final: jax.Array) -> jax.Array:
  """A path ζ'_{0:n} traced back through the stored backward indices (backward simulation): (T, state_dim)."""
  _check_history(history, log_weights_final)
  T, _n, _ = history.particles.shape
  k_last, k_steps = jax.random.split(key)
  b_last = resampling.resample_log(k_last, log_weights_final, 1, resampling.multinomial)[0]
  num_backward = history.backward_indices.shape[-1]
  picks = jax.random.randint(k_steps, (T - 1,), 0, num_backward)

  def step(b_next, inputs):
    J, u = inputs
    b = J[b_next, u].astype(b_next.dtype)
    return b, b

  _, bs = jax.lax.scan(step, b_last, (history.backward_indices, picks), reverse=True)
  bs = jnp.concatenate([bs, b_last[None]])
  return history.particles[jnp.arange(T), bs]


def sweep(
  key: jax.Array,
  model: StateSpaceModel,
  ys: jax.Array,
  additive_fn: paris_lib.AdditiveFn,
  reference: jax.Array,
  *,
  num_particles: int,
  num_backward: int = 2,
  backward: paris_lib.BackwardKernel = paris_lib.backward_exact,
  proposal: paris_lib.Proposal | None = None,
  resampler: resampling.Resampler = resampling.multinomial,
) -> SweepOutput:
  """One PaRIS particle Gibbs sweep (steps 1–3 above). ``reference``: (T, state_dim)."""
  if reference is None:  # forward_pass would run unconditionally: not a Gibbs step
    raise ValueError("`reference` must be the current reference path (T, state_dim), got None.")
  k_pass, k_path = jax.random.split(key)
  result = forward_pass(
    k_pass,
    model,
    ys,
    additive_fn,
    num_particles=num_particles,
    num_backward=num_backward,
    backward=backward,
    proposal=proposal,
    resampler=resampler,
    reference=reference,
  )
  return SweepOutput(result.output, draw_path(k_path, result.history, result.output.log_weights))


def initial_reference(
  key: jax.Array,
  model: StateSpaceModel,
  ys: jax.Array,
  *,
  num_particles: int,
  proposal: paris_lib.Proposal | None = None,
) -> jax.Array:
  """A first reference path: one backward-simulated path of an unconditional PaRIS pass."""
  k_pass, k_path = jax.random.split(key)
  zero = lambda x_prev, x, t: jnp.zeros((), x.dtype)
  result = forward_pass(k_pass, model, ys, zero, num_particles=num_particles, num_backward=1, proposal=proposal)
  return draw_path(k_path, result.history, result.output.log_weights)


def particle_gibbs(
  key: jax.Array,
  model: StateSpaceModel,
  ys: jax.Array,
  additive_fn: paris_lib.AdditiveFn,
  *,
  num_particles: int,
  num_sweeps: int,
  burn_in: int,
  num_backward: int = 2,
  backward: paris_lib.BackwardKernel = paris_lib.backward_exact,
  proposal: paris_lib.Proposal | None = None,
  resampler: resampling.Resampler = resampling.multinomial,
  reference: jax.Array | None = None,
) -> ParticleGibbsOutput:
  """PPG with the roll-out estimator: ``num_sweeps`` sweeps, the last ``num_sweeps - burn_in`` averaged.

  Args:
    key: PRNG key.
    model, ys, additive_fn: as in ``toolkit.smc.paris.paris``.
    num_particles: N per sweep, including the frozen reference particle (static).
    num_sweeps: k (static). burn_in: k0 < k (static).
    num_backward: K backward draws per particle.
    backward: a ``paris.BackwardKernel`` that draws exactly from Λ (``paris.backward_exact``,
      ``paris.backward_reject``).
    proposal: optional guided proposal.
    resampler: the free particles' resampler (multinomial: the one the invariance argument covers).
    reference: the starting reference path (T, state_dim); default: drawn by ``initial_reference``.

  Returns:
    ``ParticleGibbsOutput``.

  Example:
    >>> import jax
    >>> from toolkit.smc import particle_gibbs, ssm
    >>> model = ssm.linear_gaussian(A=0.9, Q=0.5, C=1.0, R=1.0, m0=0.0, P0=1.0)
    >>> _, ys = ssm.simulate(jax.random.key(0), model, 20)
    >>> run = jax.jit(lambda key: particle_gibbs.particle_gibbs(
    ...     key, model, ys, lambda x_prev, x, t: x[0], num_particles=16, num_sweeps=10, burn_in=2))
    >>> out = run(jax.random.key(1))
    >>> print(out.estimates.shape, out.reference.shape)
    (10,) (20, 1)
  """
  if not isinstance(num_sweeps, int) or not isinstance(burn_in, int) or not 0 <= burn_in < num_sweeps:
    raise ValueError(
      f"need Python ints with 0 <= burn_in < num_sweeps, got burn_in={burn_in!r}, num_sweeps={num_sweeps!r}."
    )
  k_init, k_sweeps = jax.random.split(key)
  if reference is None:
    reference = initial_reference(k_init, model, ys, num_particles=num_particles, proposal=proposal)

  def one(ref, k):
    out = sweep(
      k,
      model,
      ys,
      additive_fn,
      ref,
      num_particles=num_particles,
      num_backward=num_backward,
      backward=backward,
      proposal=proposal,
      resampler=resampler,
    )
    return out.reference, (out.paris.estimate, out.paris.log_likelihood)

  last, (estimates, logliks) = jax.lax.scan(one, reference, jax.random.split(k_sweeps, num_sweeps))
  estimate = jax.tree.map(lambda e: jnp.mean(e[burn_in:], axis=0), estimates)
  return ParticleGibbsOutput(estimate, estimates, logliks, last)
