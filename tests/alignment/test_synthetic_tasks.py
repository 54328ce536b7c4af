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


@pytest.mark.parametrize(
  "options, match",
  [
    ({"num_topics": 0}, "`num_topics`"),
    ({"num_content": 2.0}, "`num_content`"),
    ({"num_good": True}, "`num_good`"),
    ({"num_good": 12}, "`num_good` must be < `num_content`"),
    ({"num_distractors": -1}, "`num_distractors`"),
    ({"response_len": 0}, "`response_len`"),
    ({"num_prompt_distractors": -1}, "`num_prompt_distractors`"),
  ],
)
def test_make_topic_task_bad_input(options, match):
  with pytest.raises(ValueError, match=match):
    st.make_topic_task(jax.random.key(0), **options)


def test_task_functions_bad_task():
  not_a_task = {"good_tokens": np.ones((2, 3), bool)}
  with pytest.raises(TypeError, match="`task`"):
    st.all_prompts(not_a_task)
  with pytest.raises(TypeError, match="`task`"):
    st.response_mask(not_a_task, 4)
  with pytest.raises(TypeError, match="`task`"):
    st.distinct_perfect_fraction(not_a_task, np.zeros((1, 1, 6), int))


def test_response_mask_bad_input(task):
  assert st.response_mask(task, np.int64(2)).shape == (2, 6)
  for bad in (-1, 2.0, True):
    with pytest.raises(ValueError, match="`num_sequences`"):
      st.response_mask(task, bad)


@pytest.mark.parametrize(
  "prompts, good_prob, error, match",
  [
    ("ok", 1.5, ValueError, "`good_prob`"),
    ("ok", -0.1, ValueError, "`good_prob`"),
    ("ok", float("nan"), ValueError, "`good_prob`"),
    ("ok", np.ones(2) / 2, ValueError, "`good_prob`"),
    ("first_column", 0.5, ValueError, "`prompts` must have 3 tokens"),
    ("float", 0.5, TypeError, "`prompts`"),
    ("flat", 0.5, ValueError, "`prompts` must have shape"),
    # A first token that is not a topic indexed G(topic) out of range, which jnp clamped to a real topic.
    ("no_topic", 0.5, ValueError, r"`prompts` must start with a topic token in \[12, 18\)"),
  ],
)
def test_demonstrations_bad_input(task, prompts, good_prob, error, match):
  ok = st.all_prompts(task)[:4]
  prompts = {
    "ok": ok,
    "first_column": ok[:, :1],
    "float": ok.astype(jnp.float32),
    "flat": ok[0],
    "no_topic": ok.at[1, 0].set(3),
  }[prompts]
  with pytest.raises(error, match=match):
    st.demonstrations(jax.random.key(0), task, prompts, good_prob=good_prob)


def test_label_pairs_bad_input(task):
  first = st.demonstrations(jax.random.key(1), task, st.all_prompts(task)[:4], good_prob=0.5)
  second = st.demonstrations(jax.random.key(2), task, st.all_prompts(task)[:4], good_prob=0.5)
  for flip in (-0.5, 2.0, float("nan")):
    with pytest.raises(ValueError, match="`flip_prob`"):
      st.label_pairs(jax.random.key(0), task, first, second, flip_prob=flip)
  with pytest.raises(ValueError, match="`first` and `second`"):
    st.label_pairs(jax.random.key(0), task, first, second[:3], flip_prob=0.1)
  with pytest.raises(ValueError, match="`second` must have 6 tokens"):
    st.label_pairs(jax.random.key(0), task, first, second[:, :5], flip_prob=0.1)
  with pytest.raises(ValueError, match="`first` must start with a topic token"):
    st.label_pairs(jax.random.key(0), task, first.at[0, 0].set(0), second, flip_prob=0.1)


def test_distinct_perfect_fraction_bad_input(task):
  samples = np.asarray(st.demonstrations(jax.random.key(1), task, st.all_prompts(task)[:4], good_prob=1.0))
  assert 0 < st.distinct_perfect_fraction(task, samples.reshape(2, 2, 6)) <= 1
  # n = 0 samples per prompt gave 0 / 0.
  with pytest.raises(ValueError, match="`samples`"):
    st.distinct_perfect_fraction(task, samples.reshape(2, 2, 6)[:, :0])
  with pytest.raises(ValueError, match="`samples`"):
    st.distinct_perfect_fraction(task, samples)
  with pytest.raises(ValueError, match="`samples` must have 6 tokens"):
    st.distinct_perfect_fraction(task, samples.reshape(2, 2, 6)[..., :5])
  with pytest.raises(ValueError, match="`samples` must start with a topic token"):
    st.distinct_perfect_fraction(task, samples.reshape(2, 2, 6) - 12)
