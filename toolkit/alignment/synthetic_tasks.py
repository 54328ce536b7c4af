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

from toolkit import _checks


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
    _checks.check_int(value, name)
  if num_good >= num_content:
    raise ValueError(f"`num_good` must be < `num_content` ({num_content}), got {num_good}.")
  _checks.check_int(num_prompt_distractors, "num_prompt_distractors", minimum=0)
  keys = jax.random.split(key, num_topics)
  good = np.zeros((num_topics, num_content), bool)
  for t, k in enumerate(keys):
    good[t, np.asarray(jax.random.choice(k, num_content, (num_good,), replace=False))] = True
  return TopicTask(good, int(num_distractors), int(num_prompt_distractors), int(response_len))


def _check_task(task) -> None:
  if not isinstance(task, TopicTask):
    raise TypeError(f"`task` must be a TopicTask (from make_topic_task), got {type(task).__name__}.")


def _check_probability(value, name: str) -> None:
  # jax.random.bernoulli takes p > 1 as always and NaN as never, without a word.
  if _checks.is_traced(value):
    return
  concrete = np.asarray(value)
  if isinstance(value, bool) or concrete.dtype.kind not in "iuf" or concrete.ndim != 0 or not 0 <= concrete <= 1:
    raise ValueError(f"`{name}` must be a probability in [0, 1], got {value!r}.")


def _check_tokens(task: TopicTask, tokens, name: str, length: int) -> jax.Array:
  """Integer (..., length) sequences that start with a topic token (checked when concrete): an id outside the
  topics would index G(topic) out of range, which jnp clamps to the last topic silently."""
  tokens = jnp.asarray(tokens)
  if not jnp.issubdtype(tokens.dtype, jnp.integer):
    raise TypeError(f"`{name}` must be an integer array of token ids, got dtype {tokens.dtype}.")
  if tokens.ndim < 1 or tokens.shape[-1] != length:
    raise ValueError(f"`{name}` must have {length} tokens on its last axis, got shape {tokens.shape}.")
  if not _checks.is_traced(tokens) and tokens.size:
    topics = np.asarray(tokens)[..., 0]
    lo, hi = task.num_content, task.num_content + task.num_topics
    if topics.min() < lo or topics.max() >= hi:
      raise ValueError(
        f"`{name}` must start with a topic token in [{lo}, {hi}), got first tokens in [{topics.min()}, {topics.max()}]."
      )
  return tokens


def all_prompts(task: TopicTask) -> jax.Array:
  """Every prompt (topic, distractors…), (num_topics · num_distractors^k, prompt_len) int32, topic-major."""
  _check_task(task)
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
  _check_task(task)
  tokens = _check_tokens(task, tokens, "tokens", task.prompt_len + task.response_len)
  topic = tokens[..., 0] - task.num_content
  response = tokens[..., task.prompt_len :]
  padded = jnp.concatenate([jnp.asarray(task.good_tokens), jnp.zeros((task.num_topics, 1), bool)], axis=1)
  index = jnp.where(response < task.num_content, response, task.num_content)
  good = padded[topic[..., None], index]
  return jnp.mean(good.astype(jnp.float32), axis=-1)


def response_mask(task: TopicTask, num_sequences: int) -> jax.Array:
  """(num_sequences, P + L) int32 masks, 1 on the response positions."""
  _check_task(task)
  num_sequences = _checks.check_int(num_sequences, "num_sequences", minimum=0)
  row = jnp.concatenate([jnp.zeros(task.prompt_len, jnp.int32), jnp.ones(task.response_len, jnp.int32)])
  return jnp.tile(row, (num_sequences, 1))


def demonstrations(key: jax.Array, task: TopicTask, prompts: jax.Array, *, good_prob: float) -> jax.Array:
  """Noisy demonstrations: each response token is a uniform good token w.p. ``good_prob``, else a uniform content
  token. Returns prompt + response tokens (B, P + L) int32."""
  _check_task(task)
  prompts = _check_tokens(task, prompts, "prompts", task.prompt_len)
  if prompts.ndim != 2:
    raise ValueError(f"`prompts` must have shape (B, {task.prompt_len}), got {prompts.shape}.")
  _check_probability(good_prob, "good_prob")
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
  _check_task(task)
  length = task.prompt_len + task.response_len
  first = _check_tokens(task, first, "first", length)
  second = _check_tokens(task, second, "second", length)
  if first.ndim != 2 or second.shape != first.shape:
    raise ValueError(
      f"`first` and `second` must be pairs of (B, {length}) sequences of one shape, got {first.shape} and "
      f"{second.shape}."
    )
  _check_probability(flip_prob, "flip_prob")
  r1, r2 = gold_reward(task, first), gold_reward(task, second)
  first_better = (r1 > r2) ^ jax.random.bernoulli(key, flip_prob, r1.shape)
  chosen = jnp.where(first_better[:, None], first, second)
  rejected = jnp.where(first_better[:, None], second, first)
  return chosen, rejected, r1 != r2


def distinct_perfect_fraction(task: TopicTask, samples: jax.Array) -> float:
  """Diversity: the mean over prompts of (distinct responses with gold reward 1) / min(n, |G|^L), for samples
  (num_prompts, n, P + L) (n samples per prompt)."""
  _check_task(task)
  samples = np.asarray(samples)
  # With no samples per prompt the fraction is 0 / 0; with no prompts it is the mean of nothing.
  if samples.ndim != 3 or 0 in samples.shape[:2]:
    raise ValueError(
      f"`samples` must have shape (num_prompts, n, P + L) with num_prompts, n >= 1, got {samples.shape}."
    )
  _check_tokens(task, samples, "samples", task.prompt_len + task.response_len)
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
