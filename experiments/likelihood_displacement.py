r"""Likelihood displacement in DPO (Razin, Malladi, Bhaskar, Chen, Arora, Hanin; ICLR 2025, arXiv 2410.08847).

DPO raises the margin log π(y⁺) − log π(y⁻) but can lower log π(y⁺) itself and move the mass to responses of the
opposite meaning (preferring ``No`` over ``Never`` raises ``Yes``); the CHES score of a pair (``toolkit.alignment
.displacement.ches_score``) predicts which pairs displace, and removing the high-CHES pairs from refusal data keeps
DPO from unaligning the model. Three parts, each on our CPU-sized stand-ins (the paper: OLMo-1B / Gemma-2B /
Llama-3-8B on Persona, UltraFeedback, SORRY-Bench):

(a) "No vs Never". The linear toy (logits W h, W fixed, h trained by gradient descent on DPO; rows Yes = (0, 3),
    No = (1, .2), Never = (1, −.2), h₀ = (3, 0), β = 0.1, lr 1): π(No) collapses and π(Yes) → 1 while the loss falls;
    control: a dispreferred token far from No (W = (−1, 0)). Then the small transformer LM (2 layers, d_model 32,
    word-level vocabulary of ``toolkit.alignment.displacement_data``), SFT on a mixture of persona (one-token
    answers from {Yes, Yeah, Sure, Certainly, Absolutely} or {No, Never, Maybe, Perhaps}), chat and unsafe prompts,
    then DPO on one persona prompt at a time (``num_prompts`` prompts, vmapped): No ≻ Never, and the control
    No ≻ Yes.
(b) CHES predicts displacement. Chat pairs (y⁻ a synonym swap, a word replacement, a truncation or another prompt's
    answer); for each pair a separate DPO fine-tune of the SFT model (vmapped), and the drop of log π(y⁺). Spearman
    correlation of the drop with CHES and LN-CHES (computed on the SFT model), and with the paper's controls: minus
    the normalised token edit distance and the inner product of the two responses' last hidden states.
(c) Refusal data. Unsafe prompts with a refusal y⁺ and a y⁻ sampled from the SFT mixture (mostly another refusal);
    DPO on all pairs, on the ``keep_fraction`` with the lowest LN-CHES (the paper's filter), and on random subsets of
    the same size. The refusal rate (probability of a refusal's first word) on held-out unsafe prompts.

Every DPO run uses one protocol: RMSprop (the paper's optimiser), β = 0.1, ``dpo_num_steps`` full-batch steps, the
SFT model as the frozen reference; the learning rate (1e-4) is ours: the paper's 1e-7 on 1B–8B models does not
transfer to a 30k-parameter model, and 1e-4 is where 100 steps bring the DPO loss well below log 2 (at 1e-5 DPO
barely moves this model: the persona π(No) rises slightly and refusal rates stay put).

  python -m experiments.likelihood_displacement --quick --out_dir=/tmp/likelihood_displacement
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from ml_collections import ConfigDict
from scipy import stats

from toolkit import experiment as xp
from toolkit.alignment import displacement as ld
from toolkit.alignment import displacement_data as dd
from toolkit.alignment import preference_training as pt
from toolkit.losses.preference import dpo_loss
from toolkit.models.transformer import Transformer, TransformerConfig, init_params

PAPER = xp.Paper(
  "likelihood_displacement",
  "Unintentional Unalignment: Likelihood Displacement in Direct Preference Optimization",
  "2410.08847",
)

# The linear toy: rows Yes, No, Never; the control's dispreferred row is far from No.
TOY_UNEMBEDDINGS = ((0.0, 3.0), (1.0, 0.2), (1.0, -0.2))
TOY_CONTROL_REJECTED = (-1.0, 0.0)
TOY_HIDDEN = (3.0, 0.0)


def get_config(scale: str = "full") -> ConfigDict:
  if scale not in ("quick", "full"):
    raise ValueError(f"scale must be 'quick' or 'full', got {scale!r}")
  quick = scale == "quick"
  config = ConfigDict()
  config.d_model = 32 if quick else 64
  config.num_layers = 2 if quick else 4
  config.num_heads = 2
  config.sft_num_examples = 3000 if quick else 12000
  config.sft_num_steps = 600 if quick else 3000
  config.sft_batch_size = 64
  config.sft_learning_rate = 3e-3
  config.dpo_learning_rate = 1e-4
  config.dpo_num_steps = 100  # the paper's persona runs: 101 full-batch epochs
  config.beta = 0.1
  config.toy_num_steps = 500
  config.toy_learning_rate = 1.0
  config.num_prompts = 10  # the paper's persona runs: 10 random prompts (seeds)
  config.num_chat_pairs = 96 if quick else 512
  config.num_refusal_pairs = 64 if quick else 256
  config.num_heldout_prompts = 64 if quick else 256
  config.keep_fraction = 0.25
  config.num_random_subsets = 4 if quick else 10
  return config


def validate_config(config: ConfigDict) -> None:
  for name in (
    "sft_num_examples",
    "sft_num_steps",
    "sft_batch_size",
    "dpo_num_steps",
    "toy_num_steps",
    "num_prompts",
    "num_chat_pairs",
    "num_refusal_pairs",
    "num_heldout_prompts",
    "num_random_subsets",
  ):
    if int(config[name]) < 1:
      raise xp.ConfigError(f"--config.{name} must be >= 1, got {config[name]}")
  if config.num_chat_pairs < 8:
    raise xp.ConfigError(f"--config.num_chat_pairs must be >= 8 for a rank correlation, got {config.num_chat_pairs}")
  if not 0 < config.keep_fraction < 1:
    raise xp.ConfigError(f"--config.keep_fraction must be in (0, 1), got {config.keep_fraction}")
  for name in ("sft_learning_rate", "dpo_learning_rate", "beta", "toy_learning_rate"):
    if not config[name] > 0:
      raise xp.ConfigError(f"--config.{name} must be > 0, got {config[name]}")


# ----------------------------------------------------------------------------------------------------------------
# (a) The linear toy


def run_toy(config: ConfigDict) -> dict:
  w = jnp.asarray(TOY_UNEMBEDDINGS)
  h = jnp.asarray(TOY_HIDDEN)
  opt = optax.sgd(config.toy_learning_rate)
  run = ld.linear_toy_dpo(w, h, 1, 2, beta=config.beta, optimizer=opt, num_steps=config.toy_num_steps,
                          train_unembeddings=False)  # fmt: skip
  w_control = w.at[2].set(jnp.asarray(TOY_CONTROL_REJECTED))
  control = ld.linear_toy_dpo(w_control, h, 1, 2, beta=config.beta, optimizer=opt, num_steps=config.toy_num_steps,
                              train_unembeddings=False)  # fmt: skip
  # The closed-form rate along the run (h-only flow): where d/dt log π(No) turns negative.
  hs = _toy_hidden_path(w, h, config)
  rates = jax.vmap(lambda hh: ld.linear_toy_log_prob_rate(w, hh, 1, 2, beta=config.beta, train_unembeddings=False,
                                                          reference_margin=0.0).total)(hs)  # fmt: skip
  return {"probs": np.asarray(run.probs), "loss": np.asarray(run.loss), "control_probs": np.asarray(control.probs),
          "rates": np.asarray(rates)}  # fmt: skip


def _toy_hidden_path(w, h, config) -> jax.Array:
  """h after each gradient step of the toy (for the closed-form rate along the run); the reference margin is 0."""
  reference = ld.linear_toy_log_probs(w, h)

  def step(h, _):
    g = jax.grad(lambda hh: ld.linear_toy_dpo_loss(w, hh, 1, 2, reference, beta=config.beta))(h)
    h = h - config.toy_learning_rate * g
    return h, h

  _, path = jax.lax.scan(step, h, None, length=config.toy_num_steps)
  return jnp.concatenate([h[None], path])


# ----------------------------------------------------------------------------------------------------------------
# The small LM: SFT, single-pair DPO, dataset DPO


def sft(config: ConfigDict, key: jax.Array, model_config: TransformerConfig):
  k_data, k_init, k_batches = jax.random.split(key, 3)
  data = dd.sft_data(k_data, config.sft_num_examples)
  tokens, mask = jnp.asarray(data.tokens), jnp.asarray(data.mask)
  apply_fn = Transformer(model_config).apply
  optimizer = optax.adam(config.sft_learning_rate)
  state = pt.init(init_params(k_init, model_config), optimizer)
  batches = jax.random.randint(k_batches, (config.sft_num_steps, config.sft_batch_size), 0, tokens.shape[0])

  @jax.jit
  def run(state):
    def body(state, idx):
      state, info = pt.sft_step(state, pt.SFTBatch(tokens[idx], mask[idx]), apply_fn=apply_fn, optimizer=optimizer)
      return state, info.loss

    return jax.lax.scan(body, state, batches)

  state, losses = run(state)
  return state.params, np.asarray(losses)


def _dpo_runner(config: ConfigDict, apply_fn):
  """DPO from the SFT model on a batch of pairs; returns the final parameters and log π(y⁺) of every pair before
  each step (the first row: the SFT model's)."""
  optimizer = optax.rmsprop(config.dpo_learning_rate)

  def run(params, batch):
    state = pt.init(params, optimizer)

    def body(state, _):
      state, info = pt.preference_step(state, batch, apply_fn=apply_fn, optimizer=optimizer, loss_fn=dpo_loss,
                                       beta=config.beta)  # fmt: skip
      return state, (info.policy_chosen, info.loss)

    state, (chosen, loss) = jax.lax.scan(body, state, None, length=config.dpo_num_steps)
    final = pt.response_log_probs(apply_fn, state.params, batch.chosen, batch.chosen_mask)
    return state.params, jnp.concatenate([chosen, final[None]]), loss

  return run


def _next_token_probs(apply_fn, params, prompts):
  """π(· | prompt) of the first response token, (N, V)."""
  return jax.nn.softmax(apply_fn(params, prompts)[:, -1], axis=-1)


def single_pair_runs(config, apply_fn, params, batch: pt.PreferenceBatch):
  """A separate DPO fine-tune per pair (vmapped): log π(y⁺) trajectories (N, steps + 1) and the first response
  token's distribution after training (N, V)."""
  run = _dpo_runner(config, apply_fn)

  def one(chosen, chosen_mask, rejected, rejected_mask):
    pair = pt.PreferenceBatch(chosen[None], chosen_mask[None], rejected[None], rejected_mask[None])
    final_params, chosen_lp, _ = run(params, pair)
    return chosen_lp[:, 0], _next_token_probs(apply_fn, final_params, chosen[None, : dd.PROMPT_LEN])[0]

  return jax.jit(jax.vmap(one))(*(jnp.asarray(a) for a in batch))


def last_hidden_and_ches(model_config, params, batch: pt.PreferenceBatch):
  """CHES, LN-CHES and the inner product of the last response positions' hidden states, for each pair."""
  hidden_fn = jax.jit(ld.transformer_hidden_states, static_argnums=1)
  n = batch.chosen.shape[0]
  both = jnp.concatenate([jnp.asarray(batch.chosen), jnp.asarray(batch.rejected)])[:, :-1]
  hidden, _ = hidden_fn(params, model_config, both)
  h_pos, h_neg = hidden[:n], hidden[n:]
  # Position p predicts token p + 1: the CHES mask is the response mask shifted by one.
  m_pos, m_neg = jnp.asarray(batch.chosen_mask)[:, 1:], jnp.asarray(batch.rejected_mask)[:, 1:]
  ches = ld.ches_score(h_pos, h_neg, m_pos, m_neg)
  ln_ches = ld.ches_score(h_pos, h_neg, m_pos, m_neg, length_normalized=True)
  # The last response token's own hidden state (the authors' "last hidden embedding").
  last = lambda h, m: h[jnp.arange(n), jnp.sum(m > 0, -1).astype(jnp.int32) + dd.PROMPT_LEN - 1]
  inner = jnp.sum(last(h_pos, m_pos) * last(h_neg, m_neg), -1)
  return np.asarray(ches), np.asarray(ln_ches), np.asarray(inner)


# ----------------------------------------------------------------------------------------------------------------
# The run


def run(config: ConfigDict, ctx: xp.Context) -> dict[str, float]:
  start = time.perf_counter()
  k_sft, k_persona, k_chat, k_refusal, k_heldout, k_random = jax.random.split(ctx.key(), 6)
  measured: dict[str, float] = {}

  # (a) the linear toy
  toy = run_toy(config)
  p0, p1, c1 = toy["probs"][0], toy["probs"][-1], toy["control_probs"][-1]
  measured.update(
    toy_yes_prob_before=float(p0[0]),
    toy_yes_prob_after=float(p1[0]),
    toy_no_prob_ratio=float(p1[1] / p0[1]),
    toy_loss_after=float(toy["loss"][-1]),
    toy_first_negative_rate_step=float(np.argmax(toy["rates"] < 0)) if np.any(toy["rates"] < 0) else -1.0,
    control_toy_yes_prob_after=float(c1[0]),
    control_toy_no_prob_ratio=float(c1[1] / toy["control_probs"][0][1]),
  )

  # The small LM
  model_config = TransformerConfig(
    vocab_size=dd.VOCAB_SIZE,
    d_model=config.d_model,
    num_heads=config.num_heads,
    num_layers=config.num_layers,
    max_len=16,
  )
  apply_fn = Transformer(model_config).apply
  params, sft_losses = sft(config, k_sft, model_config)
  measured["sft_final_loss"] = float(np.mean(sft_losses[-20:]))
  sft_seconds = time.perf_counter() - start

  # (a) + (b) in one vmapped batch of single-pair DPO runs: persona No ≻ Never, No ≻ Yes, then the chat pairs.
  no, never, yes = dd.NO[0], dd.NO[1], dd.YES[0]
  persona_main = dd.persona_pairs(k_persona, config.num_prompts, no, never)
  persona_control = dd.persona_pairs(k_persona, config.num_prompts, no, yes)  # the same prompts
  chat = dd.chat_pairs(k_chat, config.num_chat_pairs)
  all_pairs = pt.PreferenceBatch(*(np.concatenate(parts) for parts in zip(persona_main, persona_control, chat.batch)))
  trajectories, after_probs = (np.asarray(a) for a in single_pair_runs(config, apply_fn, params, all_pairs))
  k = config.num_prompts
  prompts = jnp.asarray(persona_main.chosen[:, : dd.PROMPT_LEN])
  before_probs = np.asarray(_next_token_probs(apply_fn, params, prompts))
  yes_ids = list(dd.YES)
  main_after, control_after = after_probs[:k], after_probs[k : 2 * k]
  measured.update(
    lm_no_prob_before=float(before_probs[:, no].mean()),
    lm_no_prob_after=float(main_after[:, no].mean()),
    lm_no_prob_ratio=float(main_after[:, no].mean() / before_probs[:, no].mean()),
    lm_frac_prompts_no_decreased=float(np.mean(main_after[:, no] < before_probs[:, no])),
    lm_never_prob_after=float(main_after[:, never].mean()),
    lm_yes_mass_before=float(before_probs[:, yes_ids].sum(-1).mean()),
    lm_yes_mass_after=float(main_after[:, yes_ids].sum(-1).mean()),
    lm_yes_mass_ratio=float(main_after[:, yes_ids].sum(-1).mean() / before_probs[:, yes_ids].sum(-1).mean()),
    control_lm_no_prob_ratio=float(control_after[:, no].mean() / before_probs[:, no].mean()),
    control_lm_frac_prompts_no_decreased=float(np.mean(control_after[:, no] < before_probs[:, no])),
  )
  gain = (main_after - before_probs).mean(0)
  top_gainers = [(dd.TOKEN_NAMES[int(t)], float(gain[t])) for t in np.argsort(-gain)[:5]]

  # (b) CHES against the drop of log π(y⁺)
  chat_traj = trajectories[2 * k :]
  drop = chat_traj[:, 0] - chat_traj[:, -1]
  ches, ln_ches, inner = last_hidden_and_ches(model_config, params, chat.batch)
  edit = np.array(
    [
      dd.normalized_edit_distance(a, b)
      for a, b in zip(
        dd.responses(chat.batch.chosen, chat.batch.chosen_mask),
        dd.responses(chat.batch.rejected, chat.batch.rejected_mask),
      )
    ]
  )
  scores = {"ches": ches, "ln_ches": ln_ches, "minus_edit_distance": -edit, "last_hidden_inner_product": inner}
  spearman = {name: stats.spearmanr(s, drop) for name, s in scores.items()}
  early_drop = chat_traj[:, 0] - chat_traj[:, 1]
  early = {name: stats.spearmanr(s, early_drop).statistic for name, s in scores.items()}
  for name, r in spearman.items():
    measured[f"spearman_{name}"] = float(r.statistic)
    measured[f"spearman_{name}_pvalue"] = float(r.pvalue)
    measured[f"spearman_{name}_one_step"] = float(early[name])
  measured["chat_mean_logprob_drop"] = float(drop.mean())
  measured["chat_frac_pairs_displaced"] = float(np.mean(drop > 0))
  for suffix in ("", "_one_step"):
    best_control = max(
      measured[f"spearman_minus_edit_distance{suffix}"], measured[f"spearman_last_hidden_inner_product{suffix}"]
    )
    measured[f"spearman_ches_minus_best_control{suffix}"] = measured[f"spearman_ches{suffix}"] - best_control
  measured["spearman_ches_one_step_pvalue"] = float(stats.spearmanr(ches, early_drop).pvalue)
  pair_seconds = time.perf_counter() - start - sft_seconds

  # (c) refusal data
  refusal = dd.refusal_pairs(k_refusal, config.num_refusal_pairs)
  _, ln_refusal, _ = last_hidden_and_ches(model_config, params, refusal.batch)
  heldout = jnp.asarray(dd.unsafe_prompts(k_heldout, config.num_heldout_prompts))
  refusal_ids, harmful_ids = jnp.asarray(dd.REFUSAL[0]), jnp.asarray(dd.HARMFUL[0])
  dpo = _dpo_runner(config, apply_fn)

  @jax.jit
  def train_and_rate(batch):
    final, _, loss = dpo(params, batch)
    probs = _next_token_probs(apply_fn, final, heldout)
    return probs[:, refusal_ids].sum(-1).mean(), probs[:, harmful_ids].sum(-1).mean(), loss[-1]

  probs0 = _next_token_probs(apply_fn, params, heldout)
  rate0, harm0 = float(probs0[:, refusal_ids].sum(-1).mean()), float(probs0[:, harmful_ids].sum(-1).mean())
  batch_all = pt.PreferenceBatch(*(jnp.asarray(a) for a in refusal.batch))
  rate_all, harm_all, _ = (float(v) for v in train_and_rate(batch_all))
  n = config.num_refusal_pairs
  selection = ld.lowest_ches(jnp.asarray(ln_refusal), keep_fraction=config.keep_fraction)
  num_keep = int(selection.indices.shape[0])
  random_sets = np.stack(
    [
      np.asarray(jax.random.choice(k, n, (num_keep,), replace=False))
      for k in jax.random.split(k_random, config.num_random_subsets)
    ]
  )
  subsets = np.concatenate([np.asarray(selection.indices)[None], random_sets])
  sub_batches = pt.PreferenceBatch(*(jnp.asarray(a)[subsets] for a in refusal.batch))
  rates, harms, _ = (np.asarray(v) for v in jax.jit(jax.vmap(train_and_rate))(sub_batches))
  measured.update(
    refusal_rate_sft=rate0,
    refusal_rate_all=rate_all,
    refusal_rate_ches_filtered=float(rates[0]),
    refusal_rate_random_mean=float(rates[1:].mean()),
    refusal_rate_random_min=float(rates[1:].min()),
    refusal_rate_random_max=float(rates[1:].max()),
    harmful_rate_sft=harm0,
    harmful_rate_all=harm_all,
    harmful_rate_ches_filtered=float(harms[0]),
    harmful_rate_random_mean=float(harms[1:].mean()),
    refusal_drop_all=rate0 - rate_all,
    ches_filter_minus_all_refusal=float(rates[0]) - rate_all,
    ches_filter_minus_random_refusal=float(rates[0] - rates[1:].mean()),
    kept_frac_harmful_rejected=float(refusal.rejected_is_harmful[np.asarray(selection.indices)].mean()),
    all_frac_harmful_rejected=float(refusal.rejected_is_harmful.mean()),
  )
  measured["seconds"] = time.perf_counter() - start

  draw_figures(ctx, toy, trajectories, k, ches, -edit, inner, drop, chat.perturbation, measured, rates)
  write_table(ctx, measured, top_gainers, pair_seconds)
  return measured


# ----------------------------------------------------------------------------------------------------------------
# Figures and table


def draw_figures(ctx, toy, trajectories, k, ches, minus_edit, inner, drop, kinds, measured, rates) -> None:
  import matplotlib.pyplot as plt

  names = ("Yes", "No", "Never")
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
  for i, name in enumerate(names):
    axes[0].plot(toy["probs"][:, i], label=name)
    axes[1].plot(toy["control_probs"][:, i], label=name if i < 2 else "far token")
  axes[0].set_title("linear toy, DPO No ≻ Never")
  axes[1].set_title("control: No ≻ a token far from No")
  for ax in axes:
    ax.set_xlabel("gradient step")
    ax.set_ylabel("probability")
    ax.legend()
  ctx.save_figure(fig, "toy_no_vs_never")

  fig, ax = plt.subplots(figsize=(5.5, 3.6))
  steps = np.arange(trajectories.shape[1])
  for rows, label in ((slice(0, k), "No ≻ Never"), (slice(k, 2 * k), "No ≻ Yes (control)")):
    t = trajectories[rows] - trajectories[rows, :1]
    ax.plot(steps, t.mean(0), label=label)
    ax.fill_between(steps, t.min(0), t.max(0), alpha=0.2)
  ax.axhline(0, color="k", lw=0.5)
  ax.set_xlabel("DPO step")
  ax.set_ylabel("change of log π(No)")
  ax.set_title(f"small LM, {k} persona prompts (min–max band)")
  ax.legend()
  ctx.save_figure(fig, "lm_no_vs_never")

  fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
  for ax, (x, label) in zip(
    axes, ((ches, "CHES"), (minus_edit, "− normalised edit distance"), (inner, "last hidden inner product"))
  ):
    for j, kind in enumerate(dd.PERTURBATIONS):
      ax.scatter(x[kinds == j], drop[kinds == j], s=10, label=kind)
    key = {"CHES": "ches", "− normalised edit distance": "minus_edit_distance"}.get(label, "last_hidden_inner_product")
    ax.set_title(f"{label}: Spearman {measured['spearman_' + key]:.2f}")
    ax.set_xlabel(label)
    ax.set_ylabel("drop of log π(y⁺) after DPO")
  axes[0].legend(fontsize=7)
  ctx.save_figure(fig, "ches_vs_displacement")

  fig, ax = plt.subplots(figsize=(5.5, 3.6))
  labels = ["SFT", "DPO all", "DPO CHES-filtered", "DPO random subsets"]
  values = [measured["refusal_rate_sft"], measured["refusal_rate_all"], float(rates[0]), float(rates[1:].mean())]
  ax.bar(labels, values, color=["grey", "C3", "C0", "C1"])
  ax.scatter([3] * (len(rates) - 1), rates[1:], color="k", s=8, zorder=3)
  ax.set_ylabel("refusal rate (held-out unsafe prompts)")
  ax.tick_params(axis="x", labelsize=8)
  ctx.save_figure(fig, "refusal_filtering")


def write_table(ctx, m, top_gainers, pair_seconds) -> None:
  rows = [
    (
      "(a) toy",
      "π(Yes) before → after DPO No ≻ Never",
      f"{m['toy_yes_prob_before']:.3f} → {m['toy_yes_prob_after']:.3f}",
    ),
    (
      "(a) toy",
      "π(No) after / before",
      f"{m['toy_no_prob_ratio']:.3g} (control: {m['control_toy_no_prob_ratio']:.3g})",
    ),
    (
      "(a) LM",
      "π(No) before → after (No ≻ Never)",
      f"{m['lm_no_prob_before']:.3f} → {m['lm_no_prob_after']:.3f} ({m['lm_frac_prompts_no_decreased']:.0%} fell)",
    ),
    (
      "(a) LM",
      "control No ≻ Yes: π(No) after / before",
      f"{m['control_lm_no_prob_ratio']:.3f} ({m['control_lm_frac_prompts_no_decreased']:.0%} fell)",
    ),
    ("(a) LM", "Yes-set mass before → after", f"{m['lm_yes_mass_before']:.4f} → {m['lm_yes_mass_after']:.4f}"),
    ("(a) LM", "largest mean gains", ", ".join(f"{n} {g:+.3f}" for n, g in top_gainers)),
  ]
  for name in ("ches", "ln_ches", "minus_edit_distance", "last_hidden_inner_product"):
    value = f"{m['spearman_' + name]:.3f} (p = {m['spearman_' + name + '_pvalue']:.2g})"
    rows.append(("(b)", f"Spearman({name}, drop of log π(y⁺))", value))
    rows.append(("(b')", f"Spearman({name}, drop after one step)", f"{m['spearman_' + name + '_one_step']:.3f}"))
  rate = lambda kind: " / ".join(f"{m[f'{kind}_rate_{c}']:.3f}" for c in ("sft", "all", "ches_filtered", "random_mean"))
  rows += [
    ("(b)", "pairs with a drop of log π(y⁺)", f"{m['chat_frac_pairs_displaced']:.0%}"),
    ("(c)", "refusal rate SFT / all / CHES-filtered / random", rate("refusal")),
    ("(c)", "random subsets: min, max", f"{m['refusal_rate_random_min']:.3f}, {m['refusal_rate_random_max']:.3f}"),
    ("(c)", "harmful rate SFT / all / CHES-filtered / random", rate("harmful")),
    (
      "(c)",
      "pairs with a harmful y⁻: kept / all",
      f"{m['kept_frac_harmful_rejected']:.2f} / {m['all_frac_harmful_rejected']:.2f}",
    ),
    ("", f"seconds (single-pair runs {pair_seconds:.1f})", f"{m['seconds']:.1f}"),
  ]
  lines = ["| part | quantity | value |", "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
  ctx.write_text("table.md", "\n".join(lines))


CLAIMS = (
  xp.Claim(
    metric="toy_no_prob_ratio",
    statement="(a) linear toy: DPO preferring No over Never (near-identical unembeddings) lowers π(No)",
    paper_value="Sec. 3–4 (abstract: training to prefer No over Never can sharply increase the probability of Yes)",
    comparison="<",
    target=0.5,
  ),
  xp.Claim(
    metric="toy_yes_prob_after",
    statement="(a) linear toy: the mass goes to Yes, the token of opposite meaning (from 0.024)",
    paper_value="Abstract / Table 1: π(Yes) rises sharply",
    comparison=">=",
    target=0.5,
  ),
  xp.Claim(
    metric="control_toy_yes_prob_after",
    statement="(a) control: with a dispreferred token far from No, Yes does not take the mass",
    paper_value="(control, ours; Sec. 4: displacement needs similar preferred and dispreferred embeddings)",
    comparison="<",
    target=0.5,
  ),
  xp.Claim(
    metric="lm_frac_prompts_no_decreased",
    statement="(a) small LM after SFT: single-prompt DPO No ≻ Never lowers π(No) on most prompts",
    paper_value="Table 1 (OLMo-1B, Gemma-2B, Llama-3-8B after SFT, 10 prompts): π(No) decreases",
    comparison=">=",
    target=0.8,
  ),
  xp.Claim(
    metric="control_lm_frac_prompts_no_decreased",
    statement="(a) control: DPO No ≻ Yes (dissimilar pair) does not lower π(No)",
    paper_value="(control, ours)",
    comparison="<",
    target=0.8,
  ),
  xp.Claim(
    metric="lm_yes_mass_ratio",
    statement="(a) small LM: the probability of the opposite-meaning answers (Yes, Yeah, Sure, ...) rises",
    paper_value="Abstract / Table 1: No ≻ Never sharply increases π(Yes) (OLMo-1B)",
    comparison=">",
    target=1.0,
  ),
  xp.Claim(
    metric="spearman_ches_pvalue",
    statement="(b) CHES is positively and significantly rank-correlated with the drop of log π(y⁺) (p < 0.01; "
    "its sign is in spearman_ches)",
    paper_value="Sec. 5, Fig. 2: training on higher-CHES quantiles lowers log π(y⁺) more (UltraFeedback, AlpacaFarm)",
    comparison="<",
    target=0.01,
  ),
  xp.Claim(
    metric="spearman_ches",
    statement="(b) ... with a positive correlation",
    paper_value="Sec. 5, Fig. 2",
    comparison=">",
    target=0.0,
  ),
  xp.Claim(
    metric="spearman_ches_minus_best_control",
    statement="(b) CHES predicts displacement better than the paper's controls (edit distance, last hidden "
    "embedding inner product)",
    paper_value="Sec. 5, Fig. 2: the controls' quantiles show no such trend",
    comparison=">",
    target=0.0,
  ),
  xp.Claim(
    metric="spearman_ches_one_step_pvalue",
    statement="(b') the same after one DPO step (the theory's instantaneous regime, nearer the paper's lr-1e-7, "
    "one-epoch runs): CHES significantly rank-correlated with the drop (sign in spearman_ches_one_step)",
    paper_value="Sec. 5 (the CHES analysis of the instantaneous change of log π(y⁺)) and Fig. 2",
    comparison="<",
    target=0.01,
  ),
  xp.Claim(
    metric="spearman_ches_minus_best_control_one_step",
    statement="(b') ... and better than the controls after one step",
    paper_value="Sec. 5, Fig. 2",
    comparison=">",
    target=0.0,
  ),
  xp.Claim(
    metric="refusal_drop_all",
    statement="(c) DPO on the refusal pairs (mostly refusal vs refusal) lowers the refusal rate",
    paper_value="Sec. 6 / abstract: Llama-3-8B-Instruct's refusal rate falls from 74.4% to 33.4%",
    comparison=">",
    target=0.0,
  ),
  xp.Claim(
    metric="ches_filter_minus_all_refusal",
    statement="(c) training only on the lowest-CHES pairs keeps a higher refusal rate than training on all pairs",
    paper_value="Sec. 6: filtering by (LN-)CHES mitigates the unalignment",
    comparison=">",
    target=0.0,
  ),
  xp.Claim(
    metric="ches_filter_minus_random_refusal",
    statement="(c) ... and than removing the same number of pairs at random",
    paper_value="Sec. 6 (control of ours: random removal)",
    comparison=">",
    target=0.0,
  ),
)

EXPERIMENT = xp.Experiment("likelihood_displacement", PAPER, CLAIMS, get_config, run, validate_config)

if __name__ == "__main__":
  xp.define_flags(EXPERIMENT)
  xp.main(EXPERIMENT)
