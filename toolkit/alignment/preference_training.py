"""Supervised fine-tuning (SFT) and direct-alignment preference fine-tuning of a causal LM, one step at a time.

The training loop of the direct alignment algorithms studied in Shi, Land, Locatelli, Geist, Bartolo,
"Understanding Likelihood Over-optimisation in Direct Alignment Algorithms", arXiv 2410.11677 (Sec. 2–3): SFT on
good responses, then a DAA loss (``toolkit.losses.preference.dpo_loss``, ``ipo_loss``, ``hinge_loss``, or any
:class:`~toolkit.losses.preference.PreferenceLoss`) against a frozen copy of the SFT model, the reference π_ref.

Data. A sequence is a prompt followed by a response, as one integer array (B, T) with a 0/1 mask (B, T) that is 1 on
the response tokens (and 0 on the prompt and on padding). A response's log-probability is the masked sum of the
teacher-forced next-token log-probabilities (:func:`response_log_probs`); position 0 has no context and is never
scored. Chosen and rejected sequences may have different lengths T.

The model is any ``apply_fn(params, tokens (B, T) int) -> logits (B, T, V)`` whose ``logits[:, t]`` predicts
``tokens[:, t + 1]``, e.g. ``toolkit.models.transformer.Transformer(config).apply``. The API is blackjax-like:
``init(params, optimizer)`` then ``preference_step(state, batch, ...)`` or ``sft_step(state, batch, ...)``, pure and
unjitted; jit them with the static pieces bound, ``jax.jit(functools.partial(preference_step, apply_fn=...,
optimizer=..., loss_fn=...))`` (``beta`` may stay a traced argument, so a β sweep compiles once).

:func:`sample_responses` draws fixed-length continuations and returns the logits of every generated position, which
the over-optimisation indicators of ``toolkit.alignment.indicators`` consume.

>>> import functools
>>> import optax
>>> from toolkit.losses.preference import dpo_loss
>>> from toolkit.models.transformer import Transformer, TransformerConfig, init_params
>>> config = TransformerConfig(vocab_size=8, d_model=16, num_heads=1, num_layers=1, max_len=8)
>>> apply_fn, optimizer = Transformer(config).apply, optax.adam(1e-2)
>>> state = init(init_params(jax.random.key(0), config), optimizer)
>>> mask = jnp.array([[0, 0, 1, 1]])
>>> batch = PreferenceBatch(jnp.array([[1, 2, 3, 3]]), mask, jnp.array([[1, 2, 4, 4]]), mask)
>>> step = jax.jit(functools.partial(preference_step, apply_fn=apply_fn, optimizer=optimizer, loss_fn=dpo_loss))
>>> state, info = step(state, batch, beta=0.1)
>>> round(float(info.loss), 4), float(info.margin[0])  # at the reference: log 2 and a zero margin
(0.6931, 0.0)
>>> bool(step(state, batch, beta=0.1)[1].margin[0] > 0)
True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from toolkit.losses.preference import PreferenceLoss, sequence_log_probs

ApplyFn = Callable[[Any, jax.Array], jax.Array]
"""``apply_fn(params, tokens (B, T) int) -> logits (B, T, V)``, logits[:, t] predicting tokens[:, t + 1]."""


class PreferenceBatch(NamedTuple):
  """Preference pairs: prompt + chosen response and prompt + rejected response.

  Attributes:
    chosen: (B, T) int, prompt followed by the preferred response y_w.
    chosen_mask: (B, T) 0/1, 1 on the response tokens of ``chosen``.
    rejected: (B, T') int, the same prompt followed by the dispreferred response y_l.
    rejected_mask: (B, T') 0/1.
  """

  chosen: jax.Array
  chosen_mask: jax.Array
  rejected: jax.Array
  rejected_mask: jax.Array


class SFTBatch(NamedTuple):
  """Prompt + response sequences ``tokens`` (B, T) int with ``mask`` (B, T) 0/1 on the response tokens."""

  tokens: jax.Array
  mask: jax.Array


class AlignmentState(NamedTuple):
  """The policy's ``params``, its optimiser state ``opt_state``, the frozen ``reference_params`` (π_ref) and the
  int32 number of steps taken ``step``."""

  params: Any
  opt_state: Any
  reference_params: Any
  step: jax.Array


class PreferenceInfo(NamedTuple):
  """What one preference step measured, before its update.

  Attributes:
    loss: the scalar objective minimised (batch mean of the DAA loss, plus ``nll_weight`` × the chosen NLL).
    margin: (B,) implicit-reward margins h (the ``chosen − rejected`` log-ratio difference).
    policy_chosen, policy_rejected: (B,) log π_θ(y_w|x), log π_θ(y_l|x).
    reference_chosen, reference_rejected: (B,) log π_ref(y_w|x), log π_ref(y_l|x).
    grad_norm: the global norm of the gradient.
  """

  loss: jax.Array
  margin: jax.Array
  policy_chosen: jax.Array
  policy_rejected: jax.Array
  reference_chosen: jax.Array
  reference_rejected: jax.Array
  grad_norm: jax.Array


class SFTInfo(NamedTuple):
  """The mean negative log-likelihood per response token ``loss`` and the gradient's global norm ``grad_norm``."""

  loss: jax.Array
  grad_norm: jax.Array


class SampledResponses(NamedTuple):
  """``tokens`` (B, P + N) int32: the prompts followed by the sampled responses; ``logits`` (B, N, V) float32: the
  (untempered) logits each response token was drawn from."""

  tokens: jax.Array
  logits: jax.Array


# ----------------------------------------------------------------------------------------------------------------
# Log-probabilities


def _check_sequences(tokens, mask, what: str, mask_name: str) -> tuple[jax.Array, jax.Array]:
  tokens, mask = jnp.asarray(tokens), jnp.asarray(mask)
  if not jnp.issubdtype(tokens.dtype, jnp.integer):
    raise TypeError(f"`{what}` must be an integer array of token ids, got dtype {tokens.dtype}.")
  if tokens.ndim != 2 or tokens.shape[1] < 2:
    raise ValueError(f"`{what}` must have shape (B, T) with T >= 2 (a prompt and a response), got {tokens.shape}.")
  if mask.shape != tokens.shape:
    raise ValueError(f"`{mask_name}` must have the shape of `{what}` {tokens.shape}, got {mask.shape}.")
  return tokens, mask


def response_log_probs(apply_fn: ApplyFn, params: Any, tokens: jax.Array, mask: jax.Array) -> jax.Array:
  """log π(response | prompt) per sequence: Σ_{t ≥ 1} mask[:, t] log π(tokens[:, t] | tokens[:, :t]).

  Args:
    apply_fn: the model (see :data:`ApplyFn`).
    params: its variables.
    tokens: (B, T) int, prompt + response.
    mask: (B, T) 0/1, 1 on the response tokens (``mask[:, 0]`` is ignored: the first token has no context).

  Returns:
    (B,) summed log-probabilities (float32 for a float32 model).
  """
  if not callable(apply_fn):
    raise TypeError(f"`apply_fn` must be a callable (params, tokens) -> logits, got {apply_fn!r}.")
  tokens, mask = _check_sequences(tokens, mask, "tokens", "mask")
  logits = apply_fn(params, tokens[:, :-1])
  return sequence_log_probs(logits, tokens[:, 1:], mask[:, 1:])


def _mean_token_nll(apply_fn: ApplyFn, params: Any, tokens: jax.Array, mask: jax.Array) -> jax.Array:
  """Σ −log π over the scored response tokens of the whole batch / their number (0 if there are none)."""
  total = -jnp.sum(response_log_probs(apply_fn, params, tokens, mask))
  return total / jnp.maximum(jnp.sum(mask[:, 1:].astype(bool)), 1)


# ----------------------------------------------------------------------------------------------------------------
# Steps


def init(params: Any, optimizer: optax.GradientTransformation, reference_params: Any = None) -> AlignmentState:
  """The starting state: the policy ``params``, a fresh optimiser state, and π_ref = ``reference_params``
  (``None`` freezes a copy of ``params``, the usual choice after SFT)."""
  if not isinstance(optimizer, optax.GradientTransformation):
    raise TypeError(f"`optimizer` must be an optax.GradientTransformation, got {type(optimizer).__name__}.")
  reference = params if reference_params is None else reference_params
  return AlignmentState(params, optimizer.init(params), reference, jnp.zeros((), jnp.int32))


def _update(state: AlignmentState, grads: Any, optimizer: optax.GradientTransformation) -> AlignmentState:
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  return AlignmentState(optax.apply_updates(state.params, updates), opt_state, state.reference_params, state.step + 1)


def sft_step(
  state: AlignmentState,
  batch: SFTBatch,
  *,
  apply_fn: ApplyFn,
  optimizer: optax.GradientTransformation,
) -> tuple[AlignmentState, SFTInfo]:
  """One SFT step: minimise the mean negative log-likelihood per response token (the reference is untouched).

  Args:
    state: from :func:`init`.
    batch: an :class:`SFTBatch`.
    apply_fn: the model (static under jit).
    optimizer: the optax transformation ``state.opt_state`` belongs to (static under jit).

  Returns:
    The new state and an :class:`SFTInfo` measured at the old parameters.
  """
  if not isinstance(batch, SFTBatch):
    raise TypeError(f"`batch` must be an SFTBatch(tokens, mask), got {type(batch).__name__}.")
  if not isinstance(optimizer, optax.GradientTransformation):
    raise TypeError(f"`optimizer` must be an optax.GradientTransformation, got {type(optimizer).__name__}.")
  tokens, mask = _check_sequences(batch.tokens, batch.mask, "batch.tokens", "batch.mask")
  loss, grads = jax.value_and_grad(_mean_token_nll, argnums=1)(apply_fn, state.params, tokens, mask)
  return _update(state, grads, optimizer), SFTInfo(loss, optax.tree.norm(grads))


def preference_step(
  state: AlignmentState,
  batch: PreferenceBatch,
  *,
  apply_fn: ApplyFn,
  optimizer: optax.GradientTransformation,
  loss_fn: PreferenceLoss,
  beta: float | jax.Array,
  nll_weight: float = 0.0,
) -> tuple[AlignmentState, PreferenceInfo]:
  """One DAA step: minimise mean(loss_fn(log π_θ(y_w), log π_θ(y_l), log π_ref(y_w), log π_ref(y_l); β)) over the
  batch (arXiv 2410.11677, Sec. 2), optionally plus ``nll_weight`` × the chosen responses' NLL per token (the SFT
  regulariser of RPO, Pang et al., arXiv 2404.19733, Eq. 3, length-normalised).

  Args:
    state: from :func:`init`; ``state.reference_params`` is π_ref (no gradient flows into it).
    batch: a :class:`PreferenceBatch`.
    apply_fn: the model (static under jit).
    optimizer: the optax transformation (static under jit).
    loss_fn: a :class:`~toolkit.losses.preference.PreferenceLoss` such as ``dpo_loss`` (static under jit).
    beta: β > 0, passed to ``loss_fn``; may be traced.
    nll_weight: the weight of the chosen-NLL term (0 for plain DPO / IPO / hinge); may be traced.

  Returns:
    The new state and a :class:`PreferenceInfo` measured at the old parameters.
  """
  chosen, chosen_mask = _check_sequences(batch.chosen, batch.chosen_mask, "batch.chosen", "batch.chosen_mask")
  rejected, rejected_mask = _check_sequences(
    batch.rejected, batch.rejected_mask, "batch.rejected", "batch.rejected_mask"
  )
  if chosen.shape[0] != rejected.shape[0]:
    raise ValueError(
      f"`batch.chosen` and `batch.rejected` must hold the same number of pairs, got {chosen.shape[0]} and "
      f"{rejected.shape[0]}."
    )
  if not callable(loss_fn):
    raise TypeError(f"`loss_fn` must be a callable PreferenceLoss such as dpo_loss, got {loss_fn!r}.")
  reference = jax.lax.stop_gradient(state.reference_params)
  reference_chosen = response_log_probs(apply_fn, reference, chosen, chosen_mask)
  reference_rejected = response_log_probs(apply_fn, reference, rejected, rejected_mask)

  def objective(params):
    policy_chosen = response_log_probs(apply_fn, params, chosen, chosen_mask)
    policy_rejected = response_log_probs(apply_fn, params, rejected, rejected_mask)
    losses = loss_fn(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta=beta)
    loss = jnp.mean(losses)
    # A traced weight always adds the term (a jitted sweep over the weight compiles once); a Python 0 skips it.
    if isinstance(nll_weight, jax.core.Tracer) or nll_weight:
      loss = loss + nll_weight * _mean_token_nll(apply_fn, params, chosen, chosen_mask)
    return loss, (policy_chosen, policy_rejected)

  (loss, (policy_chosen, policy_rejected)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
  margin = (policy_chosen - reference_chosen) - (policy_rejected - reference_rejected)
  info = PreferenceInfo(
    loss, margin, policy_chosen, policy_rejected, reference_chosen, reference_rejected, optax.tree.norm(grads)
  )
  return _update(state, grads, optimizer), info


# ----------------------------------------------------------------------------------------------------------------
# Sampling


def sample_responses(
  key: jax.Array,
  apply_fn: ApplyFn,
  params: Any,
  prompts: jax.Array,
  *,
  num_new_tokens: int,
  temperature: float = 1.0,
) -> SampledResponses:
  """Ancestral sampling of ``num_new_tokens`` tokens after each prompt, without a KV cache.

  Each step runs the model on the whole (P + N)-token buffer (causal attention makes the not-yet-written tail
  irrelevant), which is quadratic but simple and fine for the small models of the experiments. Responses are fixed
  length; mask what follows an end token yourself.

  Args:
    key: PRNG key.
    apply_fn: the model (see :data:`ApplyFn`).
    params: its variables.
    prompts: (B, P) int, all of one length P ≥ 1.
    num_new_tokens: static N ≥ 1.
    temperature: > 0; the logits are divided by it before sampling (the returned logits are not).

  Returns:
    :class:`SampledResponses` with the tokens (B, P + N) and the logits (B, N, V) of each generated position.
  """
  prompts = jnp.asarray(prompts)
  if not jnp.issubdtype(prompts.dtype, jnp.integer) or prompts.ndim != 2 or prompts.shape[1] < 1:
    raise ValueError(f"`prompts` must be a (B, P) integer array with P >= 1, got {prompts.dtype}{prompts.shape}.")
  if not isinstance(num_new_tokens, int) or isinstance(num_new_tokens, bool) or num_new_tokens < 1:
    raise ValueError(f"`num_new_tokens` must be a positive Python int, got {num_new_tokens!r}.")
  if not isinstance(temperature, jax.core.Tracer) and not float(temperature) > 0:
    raise ValueError(f"`temperature` must be > 0, got {temperature!r}.")
  b, p = prompts.shape
  buffer = jnp.concatenate([prompts.astype(jnp.int32), jnp.zeros((b, num_new_tokens), jnp.int32)], axis=1)

  def step(buffer, inputs):
    i, step_key = inputs
    logits = apply_fn(params, buffer)
    logits = jax.lax.dynamic_index_in_dim(logits, p - 1 + i, axis=1, keepdims=False).astype(jnp.float32)
    token = jax.random.categorical(step_key, logits / temperature, axis=-1).astype(jnp.int32)
    buffer = jax.lax.dynamic_update_index_in_dim(buffer, token, p + i, axis=1)
    return buffer, logits

  keys = jax.random.split(key, num_new_tokens)
  buffer, logits = jax.lax.scan(step, buffer, (jnp.arange(num_new_tokens), keys))
  return SampledResponses(buffer, jnp.swapaxes(logits, 0, 1))


__all__ = [
  "AlignmentState",
  "ApplyFn",
  "PreferenceBatch",
  "PreferenceInfo",
  "SFTBatch",
  "SFTInfo",
  "SampledResponses",
  "init",
  "preference_step",
  "response_log_probs",
  "sample_responses",
  "sft_step",
]
