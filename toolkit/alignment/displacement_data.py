"""Synthetic preference data for the likelihood-displacement experiments, and the edit-distance control metric.

Small word-level stand-ins for the data of Razin et al., "Unintentional Unalignment: Likelihood Displacement in
Direct Preference Optimization", ICLR 2025, arXiv 2410.08847 (our construction; the paper uses Persona, UltraFeedback
/ AlpacaFarm and SORRY-Bench with 1B–8B models):

* **persona** (Sec. 3): a prompt states a view; the answer is one token from the set matching it,
  ``YES = (Yes, Yeah, Sure, Certainly, Absolutely)`` or ``NO = (No, Never, Maybe, Perhaps)``, uniformly, as in the
  authors' SFT phase; DPO then prefers ``No`` over ``Never`` on one prompt.
* **chat** (Sec. 5): multi-token answers (2–5 words, then EOS) built from six word groups of three synonyms each;
  the prompt fixes the group sequence and each word is a uniform synonym, so synonyms are exchangeable in the SFT
  data (as "No" and "Never" are in language). Preference pairs take an SFT answer as y⁺ and perturb it into y⁻:
  synonym swaps (same meaning, large token edit distance), word replacements from other groups, a truncation, or
  another prompt's answer, with a random number of edits.
* **refusal** (Sec. 6): an unsafe prompt is answered by a refusal ``(sorry|apologies|unfortunately)
  (cannot|can't|won't) (help|assist|comply) EOS`` with probability 0.75 (the paper's Llama-3-8B-Instruct refuses
  74.4% of SORRY-Bench) or else by a harmful compliance ``(Sure|Okay|Alright) (here|these|follow) (steps|how|guide)
  EOS``. Preference pairs prefer a refusal; the dispreferred response is drawn from the same SFT mixture (mostly
  another refusal), as the paper's pairs are two samples of the model ranked by a reward model.

Every sequence is ``[BOS, task, t₁, t₂, ASK, response..., PAD...]`` of length :data:`SEQ_LEN`, with a 0/1 mask on
the response tokens (the convention of ``toolkit.alignment.preference_training``). The refusal rate of a model on
a prompt is the probability of a refusal's first word, Σ_{z ∈ REFUSAL[0]} π(z | x), exact without sampling.

>>> pairs = chat_pairs(jax.random.key(0), 4)
>>> pairs.batch.chosen.shape, [PERTURBATIONS[k] for k in pairs.perturbation[:2]]
((4, 12), ['synonyms', 'replace'])
>>> round(normalized_edit_distance([1, 2, 3], [1, 3]), 3)  # one deletion over max length 3
0.333
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np

from toolkit import _checks
from toolkit.alignment.preference_training import PreferenceBatch, SFTBatch

PAD, BOS, ASK, EOS = 0, 1, 2, 3
TASK_PERSONA, TASK_CHAT, TASK_UNSAFE = 4, 5, 6
NUM_TOPICS = 16
TOPIC0 = 7  # topic tokens 7 … 22
YES = (23, 24, 25, 26, 27)  # Yes, Yeah, Sure, Certainly, Absolutely
NO = (28, 29, 30, 31)  # No, Never, Maybe, Perhaps
NUM_GROUPS, NUM_SYNONYMS = 6, 3
GROUP0 = 32  # chat word groups: group g holds 32 + 3g … 32 + 3g + 2 (tokens 32 … 49)
REFUSAL = ((50, 51, 52), (53, 54, 55), (56, 57, 58))
HARMFUL = ((59, 60, 61), (62, 63, 64), (65, 66, 67))
VOCAB_SIZE = 68
PROMPT_LEN = 5
SEQ_LEN = 12  # prompt 5 + at most 5 words + EOS, plus one pad
REFUSAL_PROBABILITY = 0.75

TOKEN_NAMES = {
  **{i: n for i, n in enumerate(("<pad>", "<bos>", "<ask>", "<eos>", "<persona>", "<chat>", "<unsafe>"))},
  **{TOPIC0 + i: f"t{i}" for i in range(NUM_TOPICS)},
  **dict(zip(YES, ("Yes", "Yeah", "Sure", "Certainly", "Absolutely"))),
  **dict(zip(NO, ("No", "Never", "Maybe", "Perhaps"))),
  **{GROUP0 + NUM_SYNONYMS * g + s: f"w{g}.{s}" for g in range(NUM_GROUPS) for s in range(NUM_SYNONYMS)},
  **dict(
    zip(
      sum(REFUSAL, ()), ("sorry", "apologies", "unfortunately", "cannot", "can't", "won't", "help", "assist", "comply")
    )
  ),
  **dict(zip(sum(HARMFUL, ()), ("Sure!", "Okay", "Alright", "here", "these", "follow", "steps", "how", "guide"))),
}


def _rng(key: jax.Array) -> np.random.Generator:
  try:
    data = jax.random.key_data(key)
  except TypeError:
    raise TypeError(f"`key` must be a jax.random key, got {type(key).__name__} {key!r}.") from None
  return np.random.default_rng(np.asarray(data).ravel().tolist())


def _check_index(value, name: str, upper: int, meaning: str) -> None:
  """An integer in [0, upper): a topic or a token id (``meaning`` says which)."""
  if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 0 <= value < upper:
    raise ValueError(f"`{name}` must be an integer in [0, {upper}) ({meaning}), got {value!r}.")


def _check_sequence(x, name: str) -> list:
  try:
    items = list(x)
  except TypeError:
    raise TypeError(f"`{name}` must be a sequence of tokens, got {type(x).__name__}.") from None
  for item in items:
    if np.ndim(item) != 0:
      raise ValueError(f"`{name}` must be a 1-D sequence of tokens, got an item of shape {np.shape(item)}.")
  return items


def _prompt(task: int, t1: int, t2: int) -> list[int]:
  return [BOS, task, TOPIC0 + t1, TOPIC0 + t2, ASK]


def _sequence(prompt: list[int], response: list[int]) -> tuple[np.ndarray, np.ndarray]:
  tokens = np.full(SEQ_LEN, PAD, np.int32)
  mask = np.zeros(SEQ_LEN, np.float32)
  tokens[: len(prompt)] = prompt
  tokens[len(prompt) : len(prompt) + len(response)] = response
  mask[len(prompt) : len(prompt) + len(response)] = 1.0
  return tokens, mask


def persona_says_yes(t1: int) -> bool:
  """The view of persona prompt (t₁, ·): topics below NUM_TOPICS / 2 match ``YES``."""
  _check_index(t1, "t1", NUM_TOPICS, "a topic")
  return t1 < NUM_TOPICS // 2


def chat_groups(t1: int, t2: int) -> list[int]:
  """The word-group sequence of chat prompt (t₁, t₂): 2–5 groups, a fixed function of the prompt."""
  _check_index(t1, "t1", NUM_TOPICS, "a topic")
  _check_index(t2, "t2", NUM_TOPICS, "a topic")
  length = 2 + (t1 + t2) % 4
  return [(t1 + j * (1 + t2 % (NUM_GROUPS - 1))) % NUM_GROUPS for j in range(length)]


def _chat_answer(rng, t1, t2) -> list[int]:
  return [GROUP0 + NUM_SYNONYMS * g + int(rng.integers(NUM_SYNONYMS)) for g in chat_groups(t1, t2)] + [EOS]


def _unsafe_answer(rng, refuse: bool) -> list[int]:
  groups = REFUSAL if refuse else HARMFUL
  return [int(rng.choice(g)) for g in groups] + [EOS]


def sft_data(key: jax.Array, num_examples: int) -> SFTBatch:
  """An SFT set mixing the three tasks equally: persona, chat and unsafe prompts with their answers (see above)."""
  _checks.check_int(num_examples, "num_examples")
  rng = _rng(key)
  tokens, masks = [], []
  for i in range(num_examples):
    task = (TASK_PERSONA, TASK_CHAT, TASK_UNSAFE)[i % 3]
    t1, t2 = (int(v) for v in rng.integers(NUM_TOPICS, size=2))
    if task == TASK_PERSONA:
      response = [int(rng.choice(YES if persona_says_yes(t1) else NO))]
    elif task == TASK_CHAT:
      response = _chat_answer(rng, t1, t2)
    else:
      response = _unsafe_answer(rng, rng.random() < REFUSAL_PROBABILITY)
    t, m = _sequence(_prompt(task, t1, t2), response)
    tokens.append(t)
    masks.append(m)
  return SFTBatch(np.stack(tokens), np.stack(masks))


def _batch(pairs) -> PreferenceBatch:
  chosen, chosen_mask = zip(*(p[0] for p in pairs))
  rejected, rejected_mask = zip(*(p[1] for p in pairs))
  return PreferenceBatch(np.stack(chosen), np.stack(chosen_mask), np.stack(rejected), np.stack(rejected_mask))


def persona_pairs(key: jax.Array, num_prompts: int, chosen: int, rejected: int) -> PreferenceBatch:
  """One single-token pair (chosen ≻ rejected) on each of ``num_prompts`` random prompts whose view matches ``NO``."""
  _checks.check_int(num_prompts, "num_prompts")
  _check_index(chosen, "chosen", VOCAB_SIZE, "a token id")
  _check_index(rejected, "rejected", VOCAB_SIZE, "a token id")
  if chosen == rejected:
    raise ValueError(f"`rejected` must differ from `chosen` (a pair needs two responses), got {rejected!r} for both.")
  rng = _rng(key)
  pairs = []
  for _ in range(num_prompts):
    t1, t2 = int(rng.integers(NUM_TOPICS // 2, NUM_TOPICS)), int(rng.integers(NUM_TOPICS))
    prompt = _prompt(TASK_PERSONA, t1, t2)
    pairs.append((_sequence(prompt, [chosen]), _sequence(prompt, [rejected])))
  return _batch(pairs)


PERTURBATIONS = ("synonyms", "replace", "truncate", "other_prompt")


class ChatPairs(NamedTuple):
  """Chat preference pairs: the ``batch`` and the perturbation that made each y⁻ (index into PERTURBATIONS)."""

  batch: PreferenceBatch
  perturbation: np.ndarray


def chat_pairs(key: jax.Array, num_pairs: int) -> ChatPairs:
  """Preference pairs whose y⁺ is an SFT chat answer and y⁻ a perturbation of it (perturbations cycle)."""
  _checks.check_int(num_pairs, "num_pairs")
  rng = _rng(key)
  pairs, kinds = [], []
  for i in range(num_pairs):
    kind = i % len(PERTURBATIONS)
    t1, t2 = (int(v) for v in rng.integers(NUM_TOPICS, size=2))
    prompt = _prompt(TASK_CHAT, t1, t2)
    pos = _chat_answer(rng, t1, t2)
    words = pos[:-1]
    if kind in (0, 1):
      num_edits = int(rng.integers(1, len(words) + 1))
      neg = list(words)
      for j in rng.choice(len(words), num_edits, replace=False):
        group, syn = divmod(words[j] - GROUP0, NUM_SYNONYMS)
        if kind == 0:  # another synonym of the same group
          syn = (syn + int(rng.integers(1, NUM_SYNONYMS))) % NUM_SYNONYMS
        else:  # a word of another group
          group = (group + int(rng.integers(1, NUM_GROUPS))) % NUM_GROUPS
          syn = int(rng.integers(NUM_SYNONYMS))
        neg[j] = GROUP0 + NUM_SYNONYMS * group + syn
      neg = neg + [EOS]
    elif kind == 2:  # a truncation (then EOS)
      neg = words[: int(rng.integers(1, len(words)))] + [EOS]
    else:  # the answer to another prompt
      u1, u2 = (int(v) for v in rng.integers(NUM_TOPICS, size=2))
      neg = _chat_answer(rng, u1, u2)
    if neg == pos:  # a pair needs two different responses
      neg = words[:-1] + [EOS] if len(words) > 1 else _chat_answer(rng, (t1 + 1) % NUM_TOPICS, t2)
    pairs.append((_sequence(prompt, pos), _sequence(prompt, neg)))
    kinds.append(kind)
  return ChatPairs(_batch(pairs), np.asarray(kinds))


class RefusalPairs(NamedTuple):
  """Refusal preference pairs: the ``batch`` (y⁺ always a refusal) and ``rejected_is_harmful`` (N,) bool."""

  batch: PreferenceBatch
  rejected_is_harmful: np.ndarray


def refusal_pairs(key: jax.Array, num_pairs: int) -> RefusalPairs:
  """A refusal y⁺ and a y⁻ drawn from the SFT mixture (another refusal w.p. 0.75, else harmful) per unsafe prompt;
  a refusal y⁻ differs from y⁺ in at least one word."""
  _checks.check_int(num_pairs, "num_pairs")
  rng = _rng(key)
  pairs, harmful = [], []
  for _ in range(num_pairs):
    t1, t2 = (int(v) for v in rng.integers(NUM_TOPICS, size=2))
    prompt = _prompt(TASK_UNSAFE, t1, t2)
    pos = _unsafe_answer(rng, True)
    is_harmful = not rng.random() < REFUSAL_PROBABILITY
    neg = _unsafe_answer(rng, not is_harmful)
    while neg == pos:
      neg = _unsafe_answer(rng, True)
    pairs.append((_sequence(prompt, pos), _sequence(prompt, neg)))
    harmful.append(is_harmful)
  return RefusalPairs(_batch(pairs), np.asarray(harmful))


def unsafe_prompts(key: jax.Array, num_prompts: int) -> np.ndarray:
  """(num_prompts, PROMPT_LEN) unsafe prompts (for refusal rates on prompts not in the preference data)."""
  _checks.check_int(num_prompts, "num_prompts")
  rng = _rng(key)
  return np.stack(
    [_prompt(TASK_UNSAFE, *(int(v) for v in rng.integers(NUM_TOPICS, size=2))) for _ in range(num_prompts)]
  )


def normalized_edit_distance(a, b) -> float:
  """Levenshtein distance between token sequences a and b divided by max(|a|, |b|) (the paper's control measure,
  Sec. 5, on token ids)."""
  a, b = _check_sequence(a, "a"), _check_sequence(b, "b")
  previous = list(range(len(b) + 1))
  for i in range(1, len(a) + 1):
    current = [i] + [0] * len(b)
    for j in range(1, len(b) + 1):
      current[j] = min(previous[j - 1] + (a[i - 1] != b[j - 1]), previous[j] + 1, current[j - 1] + 1)
    previous = current
  return previous[-1] / max(len(a), len(b), 1)


def responses(tokens: np.ndarray, mask: np.ndarray) -> list[list[int]]:
  """The response tokens of each row of a (N, T) batch (where the mask is 1)."""
  if np.ndim(tokens) != 2:
    raise ValueError(f"`tokens` must be a (N, T) batch, got shape {np.shape(tokens)}.")
  if np.shape(mask) != np.shape(tokens):
    raise ValueError(f"`mask` must have the shape of `tokens` {np.shape(tokens)}, got {np.shape(mask)}.")
  return [list(np.asarray(t)[np.asarray(m) > 0]) for t, m in zip(tokens, mask)]


__all__ = [
  "ChatPairs",
  "RefusalPairs",
  "chat_groups",
  "chat_pairs",
  "normalized_edit_distance",
  "persona_pairs",
  "persona_says_yes",
  "refusal_pairs",
  "responses",
  "sft_data",
  "unsafe_prompts",
]
