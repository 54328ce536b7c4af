"""Direct-alignment (preference) losses: DPO, IPO and the SLiC hinge, on sequence log-probabilities.

The losses of the direct alignment algorithms (DAAs) compared in Shi, Land, Locatelli, Geist, Bartolo,
"Understanding Likelihood Over-optimisation in Direct Alignment Algorithms", arXiv 2410.11677 (Sec. 2). Each takes
the summed log-probabilities of the chosen (preferred) response y_w and the rejected response y_l under the policy
π_θ and under the frozen reference π_ref, and depends on them only through the implicit-reward margin

  h = [log π_θ(y_w|x) − log π_ref(y_w|x)] − [log π_θ(y_l|x) − log π_ref(y_l|x)]:

  DPO    −log σ(β h)              Rafailov et al., NeurIPS 2023, arXiv 2305.18290, Eq. 7;
  IPO    (h − 1/(2β))²            Azar et al., AISTATS 2024, arXiv 2310.12036, Eq. 17 (their τ is our β);
  hinge  max(0, 1 − β h)          SLiC-HF, Zhao et al., arXiv 2305.10425, Eq. 3 (as used by RSO, arXiv 2309.06657).

All three return per-example losses (the leading axes of the inputs), in the style of ``optax.losses``; the margin
h is :func:`implicit_reward_margin` and the per-response implicit reward β (log π_θ − log π_ref) is
:func:`implicit_rewards`. At initialisation (π_θ = π_ref, h = 0) DPO = log 2, IPO = 1/(4β²), hinge = 1.

:func:`sequence_log_probs` turns aligned logits and tokens into the masked sum of token log-probabilities (a
response's log-probability); ``toolkit.alignment.preference_training.response_log_probs`` does the one-token shift
for a causal LM.

>>> pc, pr = jnp.array([-3.0, -5.0]), jnp.array([-4.0, -4.0])
>>> rc, rr = jnp.array([-3.5, -4.5]), jnp.array([-3.5, -4.5])
>>> implicit_reward_margin(pc, pr, rc, rr)
Array([ 1., -1.], dtype=float32)
>>> [round(float(v), 4) for v in dpo_loss(pc, pr, rc, rr, beta=1.0)]  # −log σ(±1)
[0.3133, 1.3133]
"""

from __future__ import annotations

from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np

from toolkit import _checks


class PreferenceLoss(Protocol):
  """A direct-alignment loss: four arrays of equal shape (per-example summed log-probabilities of the chosen and
  rejected responses under the policy and the reference) and ``beta`` → per-example losses of the same shape."""

  def __call__(
    self,
    policy_chosen: jax.Array,
    policy_rejected: jax.Array,
    reference_chosen: jax.Array,
    reference_rejected: jax.Array,
    *,
    beta: float,
  ) -> jax.Array: ...


# ----------------------------------------------------------------------------------------------------------------
# Input checks


def _check_log_probs(policy_chosen, policy_rejected, reference_chosen, reference_rejected) -> tuple[jax.Array, ...]:
  names = ("policy_chosen", "policy_rejected", "reference_chosen", "reference_rejected")
  arrays = tuple(jnp.asarray(a) for a in (policy_chosen, policy_rejected, reference_chosen, reference_rejected))
  for name, a in zip(names, arrays):
    if not jnp.issubdtype(a.dtype, jnp.floating):
      raise TypeError(f"`{name}` must be a floating-point array of log-probabilities, got dtype {a.dtype}.")
  for name, a in zip(names[1:], arrays[1:]):
    if a.shape != arrays[0].shape:
      raise ValueError(
        f"`{name}` must have the same shape as `policy_chosen` {arrays[0].shape} (one value per example), got "
        f"{a.shape}."
      )
  dtype = jnp.result_type(*arrays)
  return tuple(a.astype(dtype) for a in arrays)


def _check_beta(beta, dtype) -> jax.Array:
  """β > 0: a Python number or a (possibly traced) scalar array; a concrete value is checked."""
  if isinstance(beta, bool) or jnp.ndim(beta) != 0:
    raise ValueError(f"`beta` must be a positive scalar, got {beta!r}.")
  if not isinstance(beta, jax.core.Tracer):
    concrete = np.asarray(beta)
    if concrete.dtype.kind not in "iuf":  # a string such as "0.1" would otherwise parse silently
      raise TypeError(f"`beta` must be a positive number, got {beta!r}.")
    value = float(concrete)
    if not (np.isfinite(value) and value > 0):
      raise ValueError(f"`beta` must be a positive finite number, got {value}.")
  return jnp.asarray(beta, dtype)


# ----------------------------------------------------------------------------------------------------------------
# Margins and rewards


def implicit_reward_margin(
  policy_chosen: jax.Array,
  policy_rejected: jax.Array,
  reference_chosen: jax.Array,
  reference_rejected: jax.Array,
) -> jax.Array:
  """h = (log π_θ(y_w) − log π_ref(y_w)) − (log π_θ(y_l) − log π_ref(y_l)), per example (arXiv 2410.11677, Sec. 2).

  Args:
    policy_chosen, policy_rejected, reference_chosen, reference_rejected: floating arrays of one shape (...).

  Returns:
    The margin, shape (...), in the common dtype of the inputs.
  """
  pc, pr, rc, rr = _check_log_probs(policy_chosen, policy_rejected, reference_chosen, reference_rejected)
  return (pc - rc) - (pr - rr)


def implicit_rewards(policy: jax.Array, reference: jax.Array, *, beta: float) -> jax.Array:
  """The DPO implicit reward β (log π_θ(y|x) − log π_ref(y|x)) of each response (arXiv 2305.18290, Sec. 5).

  >>> implicit_rewards(jnp.array([-2.0]), jnp.array([-3.0]), beta=0.5)
  Array([0.5], dtype=float32)
  """
  policy, reference = jnp.asarray(policy), jnp.asarray(reference)
  for name, a in (("policy", policy), ("reference", reference)):
    if not jnp.issubdtype(a.dtype, jnp.floating):
      raise TypeError(f"`{name}` must be a floating-point array of log-probabilities, got dtype {a.dtype}.")
  if policy.shape != reference.shape:
    raise ValueError(f"`policy` and `reference` must have the same shape, got {policy.shape} and {reference.shape}.")
  dtype = jnp.result_type(policy, reference)
  return _check_beta(beta, dtype) * (policy.astype(dtype) - reference.astype(dtype))


# ----------------------------------------------------------------------------------------------------------------
# Losses


def dpo_loss(
  policy_chosen: jax.Array,
  policy_rejected: jax.Array,
  reference_chosen: jax.Array,
  reference_rejected: jax.Array,
  *,
  beta: float,
) -> jax.Array:
  """DPO: −log σ(β h) per example (Rafailov et al., arXiv 2305.18290, Eq. 7); dℓ/dh = −β σ(−β h).

  Args:
    policy_chosen: (...) log π_θ(y_w|x), summed over the response tokens.
    policy_rejected: (...) log π_θ(y_l|x).
    reference_chosen: (...) log π_ref(y_w|x).
    reference_rejected: (...) log π_ref(y_l|x).
    beta: the inverse temperature β > 0 (a Python number or a scalar array; traced values are not checked).

  Returns:
    (...) per-example losses, in the inputs' dtype.

  >>> zero = jnp.zeros(3)
  >>> bool(jnp.allclose(dpo_loss(zero, zero, zero, zero, beta=0.1), jnp.log(2.0)))
  True
  """
  h = implicit_reward_margin(policy_chosen, policy_rejected, reference_chosen, reference_rejected)
  return -jax.nn.log_sigmoid(_check_beta(beta, h.dtype) * h)


def ipo_loss(
  policy_chosen: jax.Array,
  policy_rejected: jax.Array,
  reference_chosen: jax.Array,
  reference_rejected: jax.Array,
  *,
  beta: float,
) -> jax.Array:
  """IPO: (h − 1/(2β))² per example (Azar et al., arXiv 2310.12036, Eq. 17, with τ = β).

  Its minimiser sets every margin to 1/(2β), so unlike DPO it does not push h to infinity. Arguments and return as
  :func:`dpo_loss`.

  >>> zero = jnp.zeros(2)
  >>> ipo_loss(zero, zero, zero, zero, beta=0.5)  # 1 / (4 β²)
  Array([1., 1.], dtype=float32)
  """
  h = implicit_reward_margin(policy_chosen, policy_rejected, reference_chosen, reference_rejected)
  beta = _check_beta(beta, h.dtype)
  return jnp.square(h - 1 / (2 * beta))


def hinge_loss(
  policy_chosen: jax.Array,
  policy_rejected: jax.Array,
  reference_chosen: jax.Array,
  reference_rejected: jax.Array,
  *,
  beta: float,
) -> jax.Array:
  """SLiC hinge: max(0, 1 − β h) per example (Zhao et al., arXiv 2305.10425, Eq. 3; Liu et al., RSO,
  arXiv 2309.06657, Eq. 9). Zero once β h ≥ 1. Arguments and return as :func:`dpo_loss`.

  >>> zero = jnp.zeros(2)
  >>> hinge_loss(zero, zero, zero, zero, beta=0.1)
  Array([1., 1.], dtype=float32)
  """
  h = implicit_reward_margin(policy_chosen, policy_rejected, reference_chosen, reference_rejected)
  return jax.nn.relu(1 - _check_beta(beta, h.dtype) * h)


# ----------------------------------------------------------------------------------------------------------------
# Sequence log-probabilities


def token_log_probs(logits: jax.Array, tokens: jax.Array) -> jax.Array:
  """log softmax(logits)[..., t, tokens[..., t]]: the log-probability of each token under its aligned logits.

  Args:
    logits: (..., T, V) floating; ``logits[..., t, :]`` is the distribution of ``tokens[..., t]`` (already shifted:
      for a causal LM run on x, pass ``logits[..., :-1, :]`` with ``tokens = x[..., 1:]``).
    tokens: (..., T) integer ids in [0, V).

  Returns:
    (..., T) log-probabilities in the logits' dtype (computed in at least float32).
  """
  logits = jnp.asarray(logits)
  tokens = jnp.asarray(tokens)
  if not jnp.issubdtype(logits.dtype, jnp.floating):
    raise TypeError(f"`logits` must be a floating-point array, got dtype {logits.dtype}.")
  if not jnp.issubdtype(tokens.dtype, jnp.integer):
    raise TypeError(f"`tokens` must be an integer array of token ids, got dtype {tokens.dtype}.")
  if logits.ndim < 2 or tokens.shape != logits.shape[:-1]:
    raise ValueError(
      f"`tokens` must have shape logits.shape[:-1] with logits (..., T, V); got logits {logits.shape} and tokens "
      f"{tokens.shape}."
    )
  _checks.check_ids(tokens, logits.shape[-1], "tokens", "the vocabulary")
  compute = jnp.promote_types(logits.dtype, jnp.float32)
  log_probs = jax.nn.log_softmax(logits.astype(compute), axis=-1)
  picked = jnp.take_along_axis(log_probs, tokens[..., None].astype(jnp.int32), axis=-1)[..., 0]
  return picked.astype(logits.dtype)


def sequence_log_probs(logits: jax.Array, tokens: jax.Array, mask: jax.Array) -> jax.Array:
  """Σ_t mask[..., t] · log p(tokens[..., t]): the log-probability of the masked tokens (a response), per sequence.

  The sequence log-probability every DAA loss consumes (arXiv 2410.11677, Sec. 2). Positions with mask 0 (the prompt,
  padding) contribute nothing, so sequences of different lengths share one padded array.

  Args:
    logits: (..., T, V) floating, aligned with ``tokens`` (see :func:`token_log_probs`).
    tokens: (..., T) integer ids.
    mask: (..., T) 0/1 weights (bool, int or float) of the positions to score.

  Returns:
    (...) summed log-probabilities, in the logits' dtype.

  >>> logits = jnp.zeros((1, 3, 4))  # uniform over 4 tokens
  >>> float(sequence_log_probs(logits, jnp.array([[1, 2, 3]]), jnp.array([[0, 1, 1]]))[0])  # 2 log(1/4)
  -2.7725887298583984
  """
  per_token = token_log_probs(logits, tokens)
  mask = jnp.asarray(mask)
  if mask.shape != per_token.shape:
    raise ValueError(f"`mask` must have the shape of `tokens` {per_token.shape}, got {mask.shape}.")
  return jnp.sum(jnp.where(mask.astype(bool), per_token, 0), axis=-1)


__all__ = [
  "PreferenceLoss",
  "dpo_loss",
  "hinge_loss",
  "implicit_reward_margin",
  "implicit_rewards",
  "ipo_loss",
  "sequence_log_probs",
  "token_log_probs",
]
