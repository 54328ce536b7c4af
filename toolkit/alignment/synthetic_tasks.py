"""A synthetic preference task with a known gold reward and many equally good completions.

Built for the over-optimisation study of Shi, Land, Locatelli, Geist, Bartolo, arXiv 2410.11677 (our construction,
not the paper's data): a prompt is a *topic* token followed by distractor tokens; each topic has a set G(topic) of
good content tokens; a response is ``response_len`` content tokens and its gold reward is the fraction of them in
G(topic). Every response made only of good tokens is equally good (|G|^L of them), so quality and diversity can be
measured separately: the gold reward of samples, and how many *distinct* perfect responses a model samples.

Token layout: content tokens 0 … C − 1, topic tokens C … C + T − 1, distractor tokens after them.

>>> task = make_topic_task(jax.random.key(0), num_topics=3, num_content=6, num_good=2)
>>> task.vocab_size, task.prompt_len, int(task.good_tokens.sum())
(14, 3, 6)
>>> prompts = all_prompts(task)
>>> y = jnp.concatenate([prompts[:1], jnp.array([[0, 1, 2]])], axis=1)
>>> round(float(gold_reward(task, y)[0]) * 3)  # how many of the 3 response tokens are good
2
"""

from __future__ import annotations

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class TopicTask:
  """The task's static description.

  Attributes:
    good_tokens: (num_topics, num_content) bool numpy array, row t marks G(t).
    num_distractors: distractor token types; a prompt holds ``num_prompt_distractors`` of them after the topic.
    num_prompt_distractors: distractors per prompt.
    response_len: L, content tokens per response.
  """

  good_tokens: np.ndarray
  num_distractors: int
  num_prompt_distractors: int
  response_len: int

  @property
  def num_topics(self) -> int:
    return self.good_tokens.shape[0]

  @property
  def num_content(self) -> int:
    return self.good_tokens.shape[1]

  @property
  def vocab_size(self) -> int:
    return self.num_content + self.num_topics + self.num_distractors

  @property
  def prompt_len(self) -> int:
    return 1 + self.num_prompt_distractors

  @property
  def num_perfect(self) -> int:
    """|G|^L: the number of responses with gold reward 1 for any prompt (every topic has |G| good tokens)."""
    return int(self.good_tokens[0].sum()) ** self.response_len


def make_topic_task(
  key: jax.Array,
  *,
  num_topics: int = 6,
  num_content: int = 12,
  num_good: int = 4,
  num_distractors: int = 5,
  num_prompt_distractors: int = 2,
  response_len: int = 3,
) -> TopicTask:
  """A random task: G(t) is a uniformly random ``num_good``-subset of the content tokens for each topic t."""
  for name, value in (
    ("num_topics", num_topics),
    ("num_content", num_content),
    ("num_good", num_good),
    ("num_distractors", num_distractors),
    ("response_len", response_len),
  ):
    if not isinstance(value, int) or value < 1:
      raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
  if num_good >= num_content:
    raise ValueError(f"`num_good` must be < `num_content` ({num_content}), got {num_good}.")
  if not isinstance(num_prompt_distractors, int) or num_prompt_distractors < 0:
    raise ValueError(f"`num_prompt_distractors` must be a non-negative int, got {num_prompt_distractors!r}.")
  keys = jax.random.split(key, num_topics)
  good = np.zeros((num_topics, num_content), bool)
  for t, k in enumerate(keys):
    good[t, np.asarray(jax.random.choice(k, num_content, (num_good,), replace=False))] = True
  return TopicTask(good, num_distractors, num_prompt_distractors, response_len)


def all_prompts(task: TopicTask) -> jax.Array:
  """Every prompt (topic, distractors…), (num_topics · num_distractors^k, prompt_len) int32, topic-major."""
  c, t = task.num_content, task.num_topics
  rows = [
    (c + topic, *(c + t + d for d in ds))
    for topic in range(t)
    for ds in itertools.product(range(task.num_distractors), repeat=task.num_prompt_distractors)
  ]
  return jnp.asarray(rows, jnp.int32)


def gold_reward(task: TopicTask, tokens: jax.Array) -> jax.Array:
  """The fraction of response tokens in G(topic), (...,) for prompt + response ``tokens`` (..., P + L).

  Tokens that are not content tokens (a topic or distractor token in the response) count as bad.
  """
  tokens = jnp.asarray(tokens)
  if tokens.shape[-1] != task.prompt_len + task.response_len:
    raise ValueError(f"`tokens` must have {task.prompt_len + task.response_len} tokens, got {tokens.shape[-1]}.")
  topic = tokens[..., 0] - task.num_content
  response = tokens[..., task.prompt_len :]
  padded = jnp.concatenate([jnp.asarray(task.good_tokens), jnp.zeros((task.num_topics, 1), bool)], axis=1)
  index = jnp.where(response < task.num_content, response, task.num_content)
  good = padded[topic[..., None], index]
  return jnp.mean(good.astype(jnp.float32), axis=-1)


def response_mask(task: TopicTask, num_sequences: int) -> jax.Array:
  """(num_sequences, P + L) int32 masks, 1 on the response positions."""
  row = jnp.concatenate([jnp.zeros(task.prompt_len, jnp.int32), jnp.ones(task.response_len, jnp.int32)])
  return jnp.tile(row, (num_sequences, 1))


def demonstrations(key: jax.Array, task: TopicTask, prompts: jax.Array, *, good_prob: float) -> jax.Array:
  """Noisy demonstrations: each response token is a uniform good token w.p. ``good_prob``, else a uniform content
  token. Returns prompt + response tokens (B, P + L) int32."""
  k_which, k_good, k_any = jax.random.split(key, 3)
  b, length = prompts.shape[0], task.response_len
  topic = prompts[:, 0] - task.num_content
  logits = jnp.where(jnp.asarray(task.good_tokens)[topic], 0.0, -jnp.inf)  # (B, C)
  good = jax.random.categorical(k_good, logits[:, None, :], shape=(b, length))
  anything = jax.random.randint(k_any, (b, length), 0, task.num_content)
  response = jnp.where(jax.random.bernoulli(k_which, good_prob, (b, length)), good, anything)
  return jnp.concatenate([prompts, response.astype(jnp.int32)], axis=1)


def label_pairs(
  key: jax.Array, task: TopicTask, first: jax.Array, second: jax.Array, *, flip_prob: float
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Gold-reward preference labels with label noise: the better response is chosen w.p. 1 − ``flip_prob``.

  Returns (chosen, rejected, keep): ties (equal gold reward) have ``keep`` False.
  """
  r1, r2 = gold_reward(task, first), gold_reward(task, second)
  first_better = (r1 > r2) ^ jax.random.bernoulli(key, flip_prob, r1.shape)
  chosen = jnp.where(first_better[:, None], first, second)
  rejected = jnp.where(first_better[:, None], second, first)
  return chosen, rejected, r1 != r2


def distinct_perfect_fraction(task: TopicTask, samples: jax.Array) -> float:
  """Diversity: the mean over prompts of (distinct responses with gold reward 1) / min(n, |G|^L), for samples
  (num_prompts, n, P + L) (n samples per prompt)."""
  samples = np.asarray(samples)
  perfect = np.asarray(gold_reward(task, samples)) == 1.0
  cap = min(samples.shape[1], task.num_perfect)
  counts = [len({tuple(y[task.prompt_len :]) for y, ok in zip(rows, oks) if ok}) for rows, oks in zip(samples, perfect)]
  return float(np.mean(counts) / cap)


__all__ = [
  "TopicTask",
  "all_prompts",
  "demonstrations",
  "distinct_perfect_fraction",
  "gold_reward",
  "label_pairs",
  "make_topic_task",
  "response_mask",
]
