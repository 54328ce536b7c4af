"""PaRIS particle Gibbs (PPG): PaRIS driven by conditional SMC, with the bias-reduced roll-out estimator.

Cardoso, Janati El Idrissi, Le Corff, Moulines and Olsson, "State and parameter learning with PaRIS particle Gibbs",
ICML 2023, arXiv 2301.00900.

One sweep maps a reference path ζ_{0:n} to (estimate, ζ'_{0:n}):

1. run PaRIS with ζ frozen as particle N − 1 (the free particles are resampled multinomially from all N, the frozen
   particle's ancestor is itself; the frozen particle's statistic τ is updated with backward draws like the others);
2. the estimate is Σ_i ω_n^i τ_n^i / Σ_i ω_n^i;
3. the next reference is drawn backwards through the stored backward indices: b_n ~ Cat(ω_n),
   b_s = J_s^{b_{s+1}, U_s} with U_s uniform on {1..K}, ζ'_s = ξ_s^{b_s}.

Given the forward cloud, each J is an exact draw of the backward kernel, so step 3 is conditional SMC with backward
sampling, which leaves the smoothing distribution φ invariant; and E[estimate | cloud] = E[h(ζ') | cloud], so the
estimate is unbiased once ζ ~ φ. The only bias left is the chain's distance from stationarity, which decays
geometrically in the burn-in k0. The roll-out estimator averages the sweeps after burn-in:

  Π_{k0,k}(h) = (k − k0)⁻¹ Σ_{l=k0+1}^{k} estimate_l.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from toolkit.smc import paris as paris_lib
from toolkit.smc import resampling
from toolkit.smc.ssm import StateSpaceModel


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


def draw_path(key: jax.Array, history: paris_lib.ForwardHistory, log_weights_final: jax.Array) -> jax.Array:
  """A path ζ'_{0:n} traced back through the stored backward indices (backward simulation): (T, state_dim)."""
  T, n, _ = history.particles.shape
  k_last, k_steps = jax.random.split(key)
  b_last = resampling.resample_log(k_last, log_weights_final, 1, "multinomial")[0]
  n_backward = history.backward_indices.shape[-1]
  picks = jax.random.randint(k_steps, (T - 1,), 0, n_backward)

  def step(b_next, inputs):
    J, u = inputs
    b = J[b_next, u].astype(b_next.dtype)
    return b, b

  _, bs = jax.lax.scan(step, b_last, (history.backward_indices, picks), reverse=True)
  bs = jnp.concatenate([bs, b_last[None]])
  return history.particles[jnp.arange(T), bs]


def sweep(key: jax.Array, model: StateSpaceModel, ys: jax.Array, additive_fn, reference: jax.Array, *,
          n_particles: int, n_backward: int = 2, backward: str = "exact",
          proposal: paris_lib.Proposal | None = None, max_rounds: int = 64) -> SweepOutput:
  """One PaRIS particle Gibbs sweep (steps 1–3 above). ``reference``: (T, state_dim)."""
  k_pass, k_path = jax.random.split(key)
  out, history = paris_lib.forward_pass(
      k_pass, model, ys, additive_fn, n_particles=n_particles, n_backward=n_backward, backward=backward,
      proposal=proposal, reference=reference, keep_history=True, max_rounds=max_rounds)
  return SweepOutput(out, draw_path(k_path, history, out.log_weights))


def initial_reference(key: jax.Array, model: StateSpaceModel, ys: jax.Array, *, n_particles: int,
                      proposal: paris_lib.Proposal | None = None) -> jax.Array:
  """A first reference path: one backward-simulated path of an unconditional PaRIS pass."""
  k_pass, k_path = jax.random.split(key)
  zero = lambda x_prev, x, t: jnp.zeros((), x.dtype)
  out, history = paris_lib.forward_pass(k_pass, model, ys, zero, n_particles=n_particles, n_backward=1,
                                        proposal=proposal, keep_history=True)
  return draw_path(k_path, history, out.log_weights)


def particle_gibbs(key: jax.Array, model: StateSpaceModel, ys: jax.Array, additive_fn, *, n_particles: int,
                   n_sweeps: int, burn_in: int, n_backward: int = 2, backward: str = "exact",
                   proposal: paris_lib.Proposal | None = None,
                   reference: jax.Array | None = None) -> ParticleGibbsOutput:
  """PPG with the roll-out estimator: ``n_sweeps`` sweeps, the last ``n_sweeps - burn_in`` averaged.

  Args:
    key: PRNG key.
    model, ys, additive_fn: as in ``toolkit.smc.paris.paris``.
    n_particles: N per sweep, including the frozen reference particle (static).
    n_sweeps: k (static). burn_in: k0 < k (static).
    n_backward: K backward draws per particle.
    backward: ``"exact"`` or ``"reject"``.
    proposal: optional guided proposal.
    reference: the starting reference path (T, state_dim); default: drawn by ``initial_reference``.

  Returns:
    ``ParticleGibbsOutput``.
  """
  if not isinstance(n_sweeps, int) or not isinstance(burn_in, int) or not 0 <= burn_in < n_sweeps:
    raise ValueError(f"need Python ints with 0 <= burn_in < n_sweeps, got burn_in={burn_in!r}, "
                     f"n_sweeps={n_sweeps!r}.")
  k_init, k_sweeps = jax.random.split(key)
  if reference is None:
    reference = initial_reference(k_init, model, ys, n_particles=n_particles, proposal=proposal)

  def one(ref, k):
    out = sweep(k, model, ys, additive_fn, ref, n_particles=n_particles, n_backward=n_backward,
                backward=backward, proposal=proposal)
    return out.reference, (out.paris.estimate, out.paris.log_likelihood)

  last, (estimates, logliks) = jax.lax.scan(one, reference, jax.random.split(k_sweeps, n_sweeps))
  estimate = jax.tree.map(lambda e: jnp.mean(e[burn_in:], axis=0), estimates)
  return ParticleGibbsOutput(estimate, estimates, logliks, last)
