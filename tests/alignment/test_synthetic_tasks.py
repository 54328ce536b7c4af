"""The synthetic topic task: gold reward by brute force, label noise rates, demonstrations and diversity."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toolkit.alignment import synthetic_tasks as st


@pytest.fixture(scope="module")
def task():
  return st.make_topic_task(jax.random.key(0))


def test_layout_and_prompts(task):
  assert task.vocab_size == 12 + 6 + 5 and task.prompt_len == 3 and task.num_perfect == 4**3
  assert np.all(task.good_tokens.sum(1) == 4)
  prompts = np.asarray(st.all_prompts(task))
  assert prompts.shape == (6 * 25, 3) and len({tuple(p) for p in prompts}) == 150
  assert np.all((prompts[:, 0] >= 12) & (prompts[:, 0] < 18)) and np.all(prompts[:, 1:] >= 18)


def test_gold_reward_matches_a_loop(task, key):
  prompts = st.all_prompts(task)[:20]
  responses = jax.random.randint(key, (20, 3), 0, task.vocab_size)  # includes non-content tokens: bad
  tokens = jnp.concatenate([prompts, responses], axis=1)
  expected = [
    np.mean([int(y) < 12 and task.good_tokens[int(p[0]) - 12, int(y)] for y in r])
    for p, r in zip(np.asarray(prompts), np.asarray(responses))
  ]
  np.testing.assert_allclose(st.gold_reward(task, tokens), expected, rtol=1e-6)
  with pytest.raises(ValueError, match="tokens"):
    st.gold_reward(task, tokens[:, :5])


@pytest.mark.slow
def test_demonstrations_and_labels_have_the_stated_rates(task, key):
  prompts = jnp.repeat(st.all_prompts(task), 40, axis=0)
  demos = st.demonstrations(key, task, prompts, good_prob=0.5)
  # E[gold] = 0.5 + 0.5 · 4/12 per token.
  np.testing.assert_allclose(float(jnp.mean(st.gold_reward(task, demos))), 0.5 + 0.5 / 3, atol=0.01)
  other = st.demonstrations(jax.random.key(9), task, prompts, good_prob=0.5)
  chosen, _, keep = st.label_pairs(jax.random.key(3), task, demos, other, flip_prob=0.2)
  better = jnp.maximum(st.gold_reward(task, demos), st.gold_reward(task, other))
  correct = (st.gold_reward(task, chosen) == better)[keep]
  np.testing.assert_allclose(float(jnp.mean(correct)), 0.8, atol=0.015)


def test_diversity_counts_distinct_perfect_responses(task):
  prompt = np.asarray(st.all_prompts(task)[0])
  good = np.flatnonzero(task.good_tokens[prompt[0] - 12])
  bad = np.flatnonzero(~task.good_tokens[prompt[0] - 12])
  rows = [[*good[[0, 0, 0]]], [*good[[0, 0, 0]]], [*good[[0, 1, 2]]], [*bad[[0, 0, 0]]]]
  samples = np.array([[np.concatenate([prompt, r]) for r in rows]])
  assert st.distinct_perfect_fraction(task, samples) == 2 / 4
