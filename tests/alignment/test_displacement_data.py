"""The synthetic displacement data: layout, masks, the refusal mixture and the edit-distance control metric."""

import itertools

import jax
import numpy as np
import pytest

from toolkit.alignment import displacement_data as dd


def _levenshtein_brute(a, b):
  """Edit distance by breadth-first search over single edits (tiny alphabets and lengths only)."""
  alphabet = sorted(set(a) | set(b))
  frontier, seen, dist = {tuple(a)}, {tuple(a)}, 0
  while tuple(b) not in frontier:
    nxt = set()
    for s in frontier:
      for i in range(len(s) + 1):
        cands = [s[:i] + (c,) + s[i:] for c in alphabet]
        if i < len(s):
          cands += [s[:i] + s[i + 1 :]] + [s[:i] + (c,) + s[i + 1 :] for c in alphabet]
        nxt.update(c for c in cands if len(c) <= max(len(a), len(b)) + 1)
    frontier = nxt - seen
    seen |= nxt
    dist += 1
  return dist


def test_edit_distance_matches_brute_force():
  rng = np.random.default_rng(0)
  for _ in range(20):
    a = list(rng.integers(0, 3, rng.integers(0, 4)))
    b = list(rng.integers(0, 3, rng.integers(1, 4)))
    assert dd.normalized_edit_distance(a, b) == pytest.approx(_levenshtein_brute(a, b) / max(len(a), len(b)))
  assert dd.normalized_edit_distance([1, 2, 3], [1, 2, 3]) == 0
  assert dd.normalized_edit_distance([1, 2], [3, 4]) == 1


def test_sft_data_layout_and_answers():
  data = dd.sft_data(jax.random.key(0), 300)
  assert data.tokens.shape == (300, dd.SEQ_LEN) and data.tokens.max() < dd.VOCAB_SIZE
  np.testing.assert_array_equal(data.tokens[:, 0], dd.BOS)
  np.testing.assert_array_equal(data.tokens[:, dd.PROMPT_LEN - 1], dd.ASK)
  assert np.all(data.mask[:, : dd.PROMPT_LEN] == 0) and np.all(data.mask.sum(1) >= 1)
  refusals = harmful = 0
  for tokens, mask in zip(data.tokens, data.mask):
    response = list(tokens[mask > 0])
    task, t1, t2 = tokens[1], tokens[2] - dd.TOPIC0, tokens[3] - dd.TOPIC0
    assert np.all(tokens[mask == 0][dd.PROMPT_LEN :] == dd.PAD)
    if task == dd.TASK_PERSONA:
      assert response[0] in (dd.YES if dd.persona_says_yes(t1) else dd.NO) and len(response) == 1
    elif task == dd.TASK_CHAT:
      groups = [(w - dd.GROUP0) // dd.NUM_SYNONYMS for w in response[:-1]]
      assert groups == dd.chat_groups(t1, t2) and response[-1] == dd.EOS
    else:
      refusals += response[0] in dd.REFUSAL[0]
      harmful += response[0] in dd.HARMFUL[0]
  assert refusals + harmful == 100 and 0.6 < refusals / 100 < 0.9


def test_pairs_differ_and_share_the_prompt():
  chat = dd.chat_pairs(jax.random.key(1), 40)
  refusal = dd.refusal_pairs(jax.random.key(2), 40)
  persona = dd.persona_pairs(jax.random.key(3), 5, dd.NO[0], dd.NO[1])
  for batch in (chat.batch, refusal.batch, persona):
    np.testing.assert_array_equal(batch.chosen[:, : dd.PROMPT_LEN], batch.rejected[:, : dd.PROMPT_LEN])
    pos = dd.responses(batch.chosen, batch.chosen_mask)
    neg = dd.responses(batch.rejected, batch.rejected_mask)
    assert all(p != n for p, n in zip(pos, neg))
  assert set(chat.perturbation) == set(range(len(dd.PERTURBATIONS)))
  for p, n, harmful in zip(
    dd.responses(refusal.batch.chosen, refusal.batch.chosen_mask),
    dd.responses(refusal.batch.rejected, refusal.batch.rejected_mask),
    refusal.rejected_is_harmful,
  ):
    assert p[0] in dd.REFUSAL[0] and (n[0] in dd.HARMFUL[0]) == harmful
  assert all(not dd.persona_says_yes(t - dd.TOPIC0) for t in persona.chosen[:, 2])
  # The same key gives the same data.
  np.testing.assert_array_equal(dd.chat_pairs(jax.random.key(1), 40).batch.rejected, chat.batch.rejected)
  assert len(list(itertools.islice(dd.TOKEN_NAMES, None))) == dd.VOCAB_SIZE


# ----------------------------------------------------------------------------------------------------------------
# Bad input


def test_bad_input():
  key = jax.random.key(0)
  with pytest.raises(ValueError, match="`num_examples`"):  # was numpy's "need at least one array to stack"
    dd.sft_data(key, 0)
  with pytest.raises(TypeError, match="`key`"):
    dd.sft_data(0, 3)
  with pytest.raises(ValueError, match="`num_prompts`"):
    dd.persona_pairs(key, 0, dd.NO[0], dd.NO[1])
  with pytest.raises(ValueError, match="`rejected`"):  # two identical responses
    dd.persona_pairs(key, 2, dd.NO[0], dd.NO[0])
  with pytest.raises(ValueError, match="`chosen`"):
    dd.persona_pairs(key, 2, dd.VOCAB_SIZE, dd.NO[1])
  with pytest.raises(ValueError, match="`num_pairs`"):
    dd.chat_pairs(key, 0)
  with pytest.raises(ValueError, match="`num_pairs`"):
    dd.refusal_pairs(key, -1)
  with pytest.raises(ValueError, match="`num_prompts`"):
    dd.unsafe_prompts(key, 0)
  with pytest.raises(ValueError, match="`t1`"):  # a topic token, not its index: was answered False
    dd.persona_says_yes(dd.TOPIC0 + 12)
  with pytest.raises(ValueError, match="`t2`"):
    dd.chat_groups(0, -1)
  with pytest.raises(TypeError, match="`a`"):
    dd.normalized_edit_distance(5, [5])
  with pytest.raises(ValueError, match="`b`"):  # a batch, not a sequence: numpy's ambiguous truth value
    dd.normalized_edit_distance([1, 2], np.ones((2, 2)))
  data = dd.sft_data(key, 3)
  with pytest.raises(ValueError, match="`mask`"):  # zip dropped the third row
    dd.responses(data.tokens, data.mask[:2])
  with pytest.raises(ValueError, match="`tokens`"):
    dd.responses(data.tokens[0], data.mask[0])
