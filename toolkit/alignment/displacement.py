r"""Likelihood displacement in DPO: the CHES score, CHES-based data filtering, and the linear toy model's dynamics.

Razin, Malladi, Bhaskar, Chen, Arora, Hanin, "Unintentional Unalignment: Likelihood Displacement in Direct
Preference Optimization", ICLR 2025, arXiv 2410.08847.

DPO raises the margin log π(y⁺|x) − log π(y⁻|x), yet the likelihood of the preferred response y⁺ often *falls*
("likelihood displacement"), and the mass it loses can go to responses of opposite meaning (preferring ``No`` over
``Never`` raises ``Yes``; Sec. 3). The paper traces it to preferences whose hidden embeddings are similar, measured
by the **centered hidden embedding similarity** (Definition 2, Sec. 5):

  CHES_x(y⁺, y⁻) = ⟨S⁺, S⁻⟩ − ‖S⁺‖²,   S^± = Σ_{k=1}^{|y^±|} h_{x, y^±_{<k}},

where h_{x, y_{<k}} is the model's last-layer hidden state at the position that predicts the k-th response token
(the last prompt token through the second-to-last response token); the length-normalised form (used to filter the
SORRY-Bench refusal data, Sec. 6) is

  LN-CHES = ⟨S⁺, S⁻⟩ / (|y⁺| |y⁻|) − ‖S⁺‖² / |y⁺|².

A higher score predicts more displacement; :func:`lowest_ches` keeps the lowest-scoring fraction of a preference
dataset (the paper keeps the samples with the lowest LN-CHES).

The linear toy (our construction for tests and figures, in the spirit of the paper's single-token analysis, Sec. 4)
is a one-prompt softmax model, logits z = W h with unembeddings W (V, D) and a hidden state h (D,), trained by
gradient flow on the DPO loss ℓ = −log σ(β (m − m_ref)), m = z_{y⁺} − z_{y⁻} (the normaliser cancels). With
c = β σ(−β (m − m_ref)) and π the current softmax, the instantaneous change of log π(y⁺) is (derived here)

  d/dt log π(y⁺) = c ⟨W_{y⁺} − Σ_z π_z W_z, W_{y⁺} − W_{y⁻}⟩                (h moves along W_{y⁺} − W_{y⁻})
                 + c ‖h‖² (1 − π_{y⁺} + π_{y⁻})                              (W_{y⁺} gains h, W_{y⁻} loses it),

the second term only when W is trained. The first term is negative when W_{y⁺} ≈ W_{y⁻} and some token z has a
large ⟨W_z, W_{y⁺} − W_{y⁻}⟩: that token then gains the mass (:func:`linear_toy_log_prob_rate`,
:func:`linear_toy_dpo`).

>>> s = jnp.array([[1.0, 0.0], [1.0, 0.0]])  # the summed hidden state of a one-token response
>>> float(ches_score(s[None], s[None], jnp.ones((1, 2)), jnp.ones((1, 2)))[0])  # identical responses
0.0
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from toolkit import _checks
from toolkit.losses.preference import dpo_loss
from toolkit.models.transformer import Transformer, TransformerConfig, _check_tokens

# ----------------------------------------------------------------------------------------------------------------
# CHES


def _check_hidden_and_mask(hidden, mask, hidden_name: str, mask_name: str) -> tuple[jax.Array, jax.Array]:
  hidden, mask = jnp.asarray(hidden), jnp.asarray(mask)
  if not jnp.issubdtype(hidden.dtype, jnp.floating):
    raise TypeError(f"`{hidden_name}` must be a floating-point array, got dtype {hidden.dtype}.")
  if hidden.ndim < 2:
    raise ValueError(f"`{hidden_name}` must have shape (..., positions, features), got {hidden.shape}.")
  if mask.shape != hidden.shape[:-1]:
    raise ValueError(
      f"`{mask_name}` must have shape {hidden_name}.shape[:-1] = {hidden.shape[:-1]} (..., positions), "
      f"got {mask.shape}."
    )
  if not (jnp.issubdtype(mask.dtype, jnp.integer) or jnp.issubdtype(mask.dtype, jnp.floating) or mask.dtype == bool):
    raise TypeError(f"`{mask_name}` must be a 0/1 array (bool, int or float), got dtype {mask.dtype}.")
  return hidden, mask


def summed_hidden_states(hidden: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """S = Σ_p mask[..., p] h[..., p, :] and the response length |y| = Σ_p mask[..., p].

  Args:
    hidden: (..., positions, features) last-layer hidden states.
    mask: (..., positions) 0/1, selecting the positions that predict the response tokens.

  Returns:
    S (..., features) and |y| (...) in the hidden states' dtype.
  """
  hidden, mask = _check_hidden_and_mask(hidden, mask, "hidden", "mask")
  weights = (mask != 0).astype(hidden.dtype)
  return jnp.einsum("...p,...pf->...f", weights, hidden), jnp.sum(weights, axis=-1)


def ches_score(
  hidden_chosen: jax.Array,
  hidden_rejected: jax.Array,
  mask_chosen: jax.Array,
  mask_rejected: jax.Array,
  *,
  length_normalized: bool = False,
) -> jax.Array:
  """The centered hidden embedding similarity ⟨S⁺, S⁻⟩ − ‖S⁺‖² (arXiv 2410.08847, Definition 2, Sec. 5).

  S^± sums the last-layer hidden states of the model run on (x, y^±) over the positions that predict the response
  tokens (those where the mask is non-zero; :func:`response_prediction_mask` builds such masks). With
  ``length_normalized`` the score is ⟨S⁺, S⁻⟩ / (|y⁺| |y⁻|) − ‖S⁺‖² / |y⁺|², |y^±| the number of selected positions
  (the authors' length-normalised CHES, Sec. 6); an empty mask then gives a non-finite score.

  Args:
    hidden_chosen: (..., P⁺, F) hidden states of (x, y⁺).
    hidden_rejected: (..., P⁻, F) hidden states of (x, y⁻); the same leading axes and features, P⁻ may differ.
    mask_chosen: (..., P⁺) 0/1 (bool, int or float; any non-zero counts as 1).
    mask_rejected: (..., P⁻) 0/1.
    length_normalized: static; the length-normalised form.

  Returns:
    (...) scores in the hidden states' dtype; higher means more similar preferences and more displacement.

  >>> h_pos = jnp.array([[[1.0, 0.0], [1.0, 0.0]]])  # S⁺ = (2, 0), |y⁺| = 2
  >>> h_neg = jnp.array([[[0.0, 1.0], [0.0, 1.0]]])  # S⁻ ⊥ S⁺
  >>> m = jnp.ones((1, 2))
  >>> float(ches_score(h_pos, h_neg, m, m)[0]), float(ches_score(h_pos, h_neg, m, m, length_normalized=True)[0])
  (-4.0, -1.0)
  """
  hidden_chosen, mask_chosen = _check_hidden_and_mask(hidden_chosen, mask_chosen, "hidden_chosen", "mask_chosen")
  hidden_rejected, mask_rejected = _check_hidden_and_mask(
    hidden_rejected, mask_rejected, "hidden_rejected", "mask_rejected"
  )
  if hidden_chosen.shape[:-2] != hidden_rejected.shape[:-2] or hidden_chosen.shape[-1] != hidden_rejected.shape[-1]:
    raise ValueError(
      "`hidden_chosen` (..., P⁺, F) and `hidden_rejected` (..., P⁻, F) must share their leading axes and features, "
      f"got {hidden_chosen.shape} and {hidden_rejected.shape}."
    )
  if not isinstance(length_normalized, bool):
    raise TypeError(f"`length_normalized` must be a Python bool, got {length_normalized!r}.")
  dtype = jnp.result_type(hidden_chosen, hidden_rejected)
  s_pos, n_pos = summed_hidden_states(hidden_chosen.astype(dtype), mask_chosen)
  s_neg, n_neg = summed_hidden_states(hidden_rejected.astype(dtype), mask_rejected)
  cross, self_sq = jnp.sum(s_pos * s_neg, axis=-1), jnp.sum(s_pos * s_pos, axis=-1)
  if length_normalized:
    return cross / (n_pos * n_neg) - self_sq / (n_pos * n_pos)
  return cross - self_sq


def response_prediction_mask(prompt_lengths: jax.Array, response_lengths: jax.Array, num_positions: int) -> jax.Array:
  """The positions of a sequence [prompt, response, padding] whose hidden states predict the response tokens.

  Position p of a causal LM predicts token p + 1, so for a prompt of length P and a response of length R the mask
  is 1 on P − 1 ≤ p ≤ P + R − 2 (the last prompt token through the second-to-last response token), as in the
  authors' CHES code.

  Args:
    prompt_lengths: (...) integers P ≥ 1.
    response_lengths: (...) integers R ≥ 1, broadcastable against ``prompt_lengths``.
    num_positions: static, the number of positions of the hidden states.

  Returns:
    (..., num_positions) float32 0/1 mask.

  >>> response_prediction_mask(jnp.array(2), jnp.array(3), 6)
  Array([0., 1., 1., 1., 0., 0.], dtype=float32)
  """
  if not isinstance(num_positions, int) or isinstance(num_positions, bool) or num_positions < 1:
    raise ValueError(f"`num_positions` must be a positive Python int, got {num_positions!r}.")
  for name, value in (("prompt_lengths", prompt_lengths), ("response_lengths", response_lengths)):
    if not jnp.issubdtype(jnp.result_type(value), jnp.integer):
      raise TypeError(f"`{name}` must be an integer array, got dtype {jnp.result_type(value)}.")
  start = jnp.asarray(prompt_lengths)[..., None] - 1
  stop = start + jnp.asarray(response_lengths)[..., None]
  p = jnp.arange(num_positions)
  return ((p >= start) & (p < stop)).astype(jnp.float32)


class ChesSelection(NamedTuple):
  """The examples a CHES filter keeps.

  Attributes:
    indices: (num_keep,) int32 indices of the kept examples, lowest score first.
    keep: (N,) bool, True for the kept examples.
    threshold: the largest kept score (a scalar).
  """

  indices: jax.Array
  keep: jax.Array
  threshold: jax.Array


def lowest_ches(scores: jax.Array, *, keep_fraction: float) -> ChesSelection:
  """Ranks a preference dataset by CHES and keeps the lowest-scoring fraction (arXiv 2410.08847, Sec. 6).

  The paper filters the SORRY-Bench refusal data by keeping the samples with the lowest length-normalised CHES
  (those least likely to displace the preferred refusals). ``num_keep = max(1, round(keep_fraction · N))``; ties are
  broken by index (a stable sort).

  Args:
    scores: (N,) floating CHES (or LN-CHES) scores.
    keep_fraction: static, in (0, 1].

  Returns:
    A :class:`ChesSelection`.

  >>> lowest_ches(jnp.array([3.0, -1.0, 2.0, -5.0]), keep_fraction=0.5).indices
  Array([3, 1], dtype=int32)
  """
  scores = jnp.asarray(scores)
  if scores.ndim != 1 or scores.shape[0] == 0:
    raise ValueError(f"`scores` must have shape (N,) with N >= 1, got {scores.shape}.")
  if not jnp.issubdtype(scores.dtype, jnp.floating):
    raise TypeError(f"`scores` must be a floating-point array, got dtype {scores.dtype}.")
  if isinstance(keep_fraction, bool) or not isinstance(keep_fraction, (int, float)) or not 0 < keep_fraction <= 1:
    raise ValueError(f"`keep_fraction` must be a Python number in (0, 1], got {keep_fraction!r}.")
  n = scores.shape[0]
  num_keep = max(1, round(keep_fraction * n))
  order = jnp.argsort(scores, stable=True).astype(jnp.int32)
  indices = order[:num_keep]
  keep = jnp.zeros((n,), bool).at[indices].set(True)
  return ChesSelection(indices, keep, scores[indices[-1]])


# ----------------------------------------------------------------------------------------------------------------
# The transformer LM's last-layer hidden states


def _final_hidden(module: Transformer, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
  tokens = _check_tokens(tokens, 2, "tokens", module.config.vocab_size, module.config.max_len)
  x = module.embed(tokens)
  for block in module.blocks:
    x, _, _ = block(x)
  hidden = module.final_norm(x)
  return hidden, module.lm_head(hidden).astype(jnp.float32)


def transformer_hidden_states(params: Any, config: TransformerConfig, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The last-layer hidden states of ``toolkit.models.transformer.Transformer`` (after the final RMSNorm, the input
  of ``lm_head``, as Hugging Face's ``hidden_states[-1]``) and the logits, for tokens (B, T).

  Returns:
    hidden (B, T, d_model) and logits (B, T, V) float32, equal to ``Transformer(config).apply(params, tokens)``.

  >>> from toolkit.models.transformer import init_params
  >>> config = TransformerConfig(vocab_size=16, d_model=8, num_heads=2, num_layers=1, max_len=8)
  >>> hidden, logits = transformer_hidden_states(init_params(jax.random.key(0), config), config, jnp.ones((2, 5), int))
  >>> hidden.shape, logits.shape
  ((2, 5, 8), (2, 5, 16))
  """
  if not isinstance(config, TransformerConfig):
    raise TypeError(f"`config` must be a TransformerConfig, got {type(config).__name__}.")
  return Transformer(config).apply(params, tokens, method=_final_hidden)


# ----------------------------------------------------------------------------------------------------------------
# The linear toy model


def _check_toy(unembeddings, hidden, chosen, rejected) -> tuple[jax.Array, jax.Array]:
  unembeddings, hidden = jnp.asarray(unembeddings), jnp.asarray(hidden)
  if unembeddings.ndim != 2 or not jnp.issubdtype(unembeddings.dtype, jnp.floating):
    raise ValueError(f"`unembeddings` must be a floating (V, D) array, got {unembeddings.shape} {unembeddings.dtype}.")
  if hidden.shape != unembeddings.shape[1:] or not jnp.issubdtype(hidden.dtype, jnp.floating):
    raise ValueError(
      f"`hidden` must be a floating (D,) array with D = {unembeddings.shape[1]}, got {hidden.shape} {hidden.dtype}."
    )
  for name, token in (("chosen", chosen), ("rejected", rejected)):
    if jnp.ndim(token) != 0 or not jnp.issubdtype(jnp.result_type(token), jnp.integer):
      raise TypeError(f"`{name}` must be a scalar integer token id, got {token!r}.")
    _checks.check_ids(token, unembeddings.shape[0], name, "the vocabulary")
  dtype = jnp.result_type(unembeddings, hidden)
  return unembeddings.astype(dtype), hidden.astype(dtype)


def linear_toy_log_probs(unembeddings: jax.Array, hidden: jax.Array) -> jax.Array:
  """log softmax(W h): the toy model's next-token log-probabilities, W (V, D), h (D,) → (V,)."""
  if jnp.ndim(unembeddings) != 2 or jnp.shape(hidden)[-1:] != jnp.shape(unembeddings)[1:]:
    raise ValueError(
      f"`unembeddings` must be (V, D) and `hidden` (D,), got {jnp.shape(unembeddings)} and {jnp.shape(hidden)}."
    )
  return jax.nn.log_softmax(unembeddings @ hidden)


def linear_toy_dpo_loss(
  unembeddings: jax.Array,
  hidden: jax.Array,
  chosen: jax.Array,
  rejected: jax.Array,
  reference_log_probs: jax.Array,
  *,
  beta: float,
) -> jax.Array:
  """The toy's DPO loss −log σ(β h_margin) on one prompt, with the reference's log-probabilities (V,)."""
  log_probs = linear_toy_log_probs(unembeddings, hidden)
  vocab = log_probs.shape[-1]
  for name, token in (("chosen", chosen), ("rejected", rejected)):
    # Indexing would clamp an out-of-range id to the last token without a word.
    if jnp.ndim(token) != 0:
      raise ValueError(f"`{name}` must be a scalar token id, got shape {jnp.shape(token)}.")
    _checks.check_ids(token, vocab, name, "the vocabulary")
  return dpo_loss(
    log_probs[chosen], log_probs[rejected], reference_log_probs[chosen], reference_log_probs[rejected], beta=beta
  )


class LogProbRate(NamedTuple):
  """d/dt log π(y⁺) under gradient flow on the DPO loss, and its two parts.

  Attributes:
    total: ``hidden_term + unembedding_term``.
    hidden_term: c ⟨W_{y⁺} − Σ_z π_z W_z, W_{y⁺} − W_{y⁻}⟩, from the motion of the hidden state.
    unembedding_term: c ‖h‖² (1 − π_{y⁺} + π_{y⁻}), from the motion of the unembeddings (0 if they are frozen).
  """

  total: jax.Array
  hidden_term: jax.Array
  unembedding_term: jax.Array


def linear_toy_log_prob_rate(
  unembeddings: jax.Array,
  hidden: jax.Array,
  chosen: jax.Array,
  rejected: jax.Array,
  *,
  beta: float,
  reference_margin: float | jax.Array = 0.0,
  train_unembeddings: bool = True,
) -> LogProbRate:
  """Closed-form instantaneous change of log π(y⁺) in the linear toy under DPO gradient flow (module docstring).

  The flow is θ̇ = −∇_θ ℓ with θ = (W, h) (or h alone), ℓ = −log σ(β (m − m_ref)), m = z_{y⁺} − z_{y⁻}; so
  d/dt log π(y⁺) = ⟨∇_θ log π(y⁺), −∇_θ ℓ⟩ = c ⟨∇_θ log π(y⁺), ∇_θ m⟩ with c = β σ(−β (m − m_ref)), which gives the
  two terms of :class:`LogProbRate` (the paper's single-prompt analysis, arXiv 2410.08847, Sec. 4). A negative total
  is likelihood displacement.

  Args:
    unembeddings: W (V, D).
    hidden: h (D,).
    chosen, rejected: scalar token ids y⁺, y⁻.
    beta: β > 0.
    reference_margin: m_ref = log π_ref(y⁺) − log π_ref(y⁻) (0 when the reference is the current model's start and
      y⁺, y⁻ start equally likely; in general pass the reference's margin).
    train_unembeddings: static; whether W moves too.

  Returns:
    A :class:`LogProbRate` of scalars.

  >>> w = jnp.array([[0.0, 3.0], [1.0, 0.2], [1.0, -0.2]])  # Yes, No, Never
  >>> h = jnp.array([1.5, 0.0])  # π(Yes, No, Never) = (0.10, 0.45, 0.45)
  >>> rate = linear_toy_log_prob_rate(w, h, 1, 2, beta=0.1, train_unembeddings=False)
  >>> round(float(rate.total), 4)  # DPO prefers No over Never, yet log π(No) falls
  -0.002
  """
  if not isinstance(train_unembeddings, bool):
    raise TypeError(f"`train_unembeddings` must be a Python bool, got {train_unembeddings!r}.")
  w, h = _check_toy(unembeddings, hidden, chosen, rejected)
  probs = jnp.exp(linear_toy_log_probs(w, h))
  margin = w[chosen] @ h - w[rejected] @ h
  c = beta * jax.nn.sigmoid(-beta * (margin - reference_margin))
  hidden_term = c * jnp.dot(w[chosen] - probs @ w, w[chosen] - w[rejected])
  if train_unembeddings:
    same = (jnp.asarray(chosen) == jnp.asarray(rejected)).astype(w.dtype)
    unembedding_term = c * jnp.dot(h, h) * (1.0 - same - probs[chosen] + probs[rejected])
  else:
    unembedding_term = jnp.zeros((), w.dtype)
  return LogProbRate(hidden_term + unembedding_term, hidden_term, unembedding_term)


class LinearToyTrajectory(NamedTuple):
  """A DPO run of the linear toy.

  Attributes:
    probs: (num_steps + 1, V) the softmax after each step (row 0: the start, which is also the reference).
    loss: (num_steps + 1,) the DPO loss at each row's parameters.
    unembeddings: the final W (V, D).
    hidden: the final h (D,).
  """

  probs: jax.Array
  loss: jax.Array
  unembeddings: jax.Array
  hidden: jax.Array


def linear_toy_dpo(
  unembeddings: jax.Array,
  hidden: jax.Array,
  chosen: jax.Array,
  rejected: jax.Array,
  *,
  beta: float,
  optimizer: optax.GradientTransformation,
  num_steps: int,
  train_unembeddings: bool = True,
) -> LinearToyTrajectory:
  """Trains the linear toy with DPO on one prompt (reference = the starting model) and records the softmax.

  Args:
    unembeddings: W (V, D) at the start.
    hidden: h (D,) at the start.
    chosen, rejected: scalar token ids.
    beta: β > 0.
    optimizer: an optax optimiser (``optax.sgd(lr)`` is gradient descent, the discretised flow).
    num_steps: static number of steps.
    train_unembeddings: static; whether W is trained (else only h).

  Returns:
    A :class:`LinearToyTrajectory`.

  >>> w = jnp.array([[0.0, 3.0], [1.0, 0.2], [1.0, -0.2]])  # Yes, No, Never
  >>> run = linear_toy_dpo(w, jnp.array([3.0, 0.0]), 1, 2, beta=0.1, optimizer=optax.sgd(1.0), num_steps=100,
  ...                      train_unembeddings=False)
  >>> [round(float(p), 2) for p in run.probs[-1]]  # from (0.024, 0.488, 0.488): Yes takes the mass
  [0.89, 0.07, 0.03]
  """
  if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 0:
    raise ValueError(f"`num_steps` must be a non-negative Python int, got {num_steps!r}.")
  if not isinstance(train_unembeddings, bool):
    raise TypeError(f"`train_unembeddings` must be a Python bool, got {train_unembeddings!r}.")
  w0, h0 = _check_toy(unembeddings, hidden, chosen, rejected)
  reference = jax.lax.stop_gradient(linear_toy_log_probs(w0, h0))

  # The trained parameters: (W, h), or h alone (then no optimiser, weight decay included, can move W).
  unpack = (lambda params: params) if train_unembeddings else (lambda params: (w0, params))

  def loss_fn(params):
    return linear_toy_dpo_loss(*unpack(params), chosen, rejected, reference, beta=beta)

  def step(carry, _):
    params, opt_state = carry
    updates, opt_state = optimizer.update(jax.grad(loss_fn)(params), opt_state, params)
    params = optax.apply_updates(params, updates)
    return (params, opt_state), (jnp.exp(linear_toy_log_probs(*unpack(params))), loss_fn(params))

  params = (w0, h0) if train_unembeddings else h0
  init_loss = loss_fn(params)
  (params, _), (probs, losses) = jax.lax.scan(step, (params, optimizer.init(params)), None, length=num_steps)
  w, h = unpack(params)
  probs = jnp.concatenate([jnp.exp(reference)[None], probs])
  losses = jnp.concatenate([init_loss[None], losses])
  return LinearToyTrajectory(probs, losses, w, h)


__all__ = [
  "ChesSelection",
  "LinearToyTrajectory",
  "LogProbRate",
  "ches_score",
  "linear_toy_dpo",
  "linear_toy_dpo_loss",
  "linear_toy_log_prob_rate",
  "linear_toy_log_probs",
  "lowest_ches",
  "response_prediction_mask",
  "summed_hidden_states",
  "transformer_hidden_states",
]
