r"""A small class-conditional score network for diffusion models, and its denoising-score-matching trainer.

The network predicts the noise ``ε̂(x_t, t, c)`` of ``x_t = α_t x_0 + σ_t ε`` (Ho, Jain & Abbeel, "Denoising
Diffusion Probabilistic Models", NeurIPS 2020, arXiv 2006.11239, eq. (14)); the score of the noised data is then
``s(x, t) = -ε̂ / σ_t`` (denoising score matching: Vincent, "A connection between score matching and denoising
autoencoders", Neural Computation 2011; Song et al., ICLR 2021, arXiv 2011.13456, eq. (7)). ``schedule`` is any
object with ``alpha(t)`` and ``sigma(t)``, e.g. ``toolkit.smc.fkc.VPSchedule``.

>>> import jax, jax.numpy as jnp, optax
>>> from toolkit.models import score_net
>>> from toolkit.smc import fkc
>>> net = score_net.ScoreNet(hidden=16, depth=2, num_classes=1)
>>> params = score_net.init_params(jax.random.key(0), net, dim=2)
>>> def data(key, labels):  # class 0: N((1, 1), I/4)
...   return 1.0 + 0.5 * jax.random.normal(key, labels.shape + (2,))
>>> out = score_net.train(jax.random.key(1), params, net, optax.adam(1e-2), data, fkc.VPSchedule(),
...                       num_steps=20, batch_size=64, t_min=1e-3)
>>> out.losses.shape
(20,)
>>> score = score_net.score_fn(net, out.params, fkc.VPSchedule(), 0)
>>> score(jnp.zeros((5, 2)), 0.5).shape
(5, 2)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from toolkit import _checks

DataFn = Callable[[jax.Array, jax.Array], jax.Array]  # (key, labels (B,)) -> x0 (B, d)


class ScoreNet(nn.Module):
  """ε-prediction MLP ``ε̂(x, t, class)``: SiLU layers on ``[x, Fourier(t), t, one-hot(class)]``.

  Attributes:
    hidden: width of the hidden layers.
    depth: number of hidden layers.
    num_classes: number of classes of the one-hot input (one per data set / "pretrained model").
  """

  hidden: int
  depth: int
  num_classes: int

  @nn.compact
  def __call__(self, x, t, label):
    """``x`` (..., d), ``t`` scalar or (...), ``label`` int scalar or (...); returns ε̂ (..., d)."""
    freqs = jnp.arange(1, 5, dtype=x.dtype) * jnp.pi
    t = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:-1])[..., None]
    emb = jnp.concatenate([jnp.sin(freqs * t), jnp.cos(freqs * t), t], -1)
    onehot = jax.nn.one_hot(label, self.num_classes, dtype=x.dtype)
    onehot = jnp.broadcast_to(onehot, x.shape[:-1] + (self.num_classes,))
    h = jnp.concatenate([x, emb, onehot], -1)
    for _ in range(self.depth):
      h = nn.silu(nn.Dense(self.hidden)(h))
    return nn.Dense(x.shape[-1])(h)


def _check_net(net: Any) -> None:
  if not isinstance(net, ScoreNet):
    raise TypeError(f"`net` must be a ScoreNet, got {type(net).__name__}.")


def init_params(key: jax.Array, net: ScoreNet, dim: int) -> Any:
  """The network's initial parameters for data of dimension ``dim``."""
  if not isinstance(dim, int) or dim < 1:
    raise ValueError(f"`dim` must be a positive Python int, got {dim!r}.")
  return net.init(key, jnp.zeros((1, dim)), jnp.zeros(()), jnp.zeros((1,), jnp.int32))


def score_fn(net: ScoreNet, params: Any, schedule: Any, label: Any) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """The learned score ``s(x, t) = -ε̂(x, t, label) / σ_t`` of class ``label``, for x (N, d) and a scalar t."""
  _check_net(net)
  if not callable(getattr(schedule, "sigma", None)):
    raise TypeError(f"`schedule` must have a method sigma(t), such as fkc.VPSchedule(), got {schedule!r}.")
  # A float label or one outside the classes one-hot encodes to zeros: the score of no class, without an error.
  if not jnp.issubdtype(jnp.result_type(label), jnp.integer):
    raise TypeError(f"`label` must be an integer class, got dtype {jnp.result_type(label)}.")
  _checks.check_ids(label, net.num_classes, "label", "the classes")
  return lambda x, t: -net.apply(params, x, t, label) / schedule.sigma(t)


def sample_times(key: jax.Array, batch_size: int, t_min: float) -> jax.Array:
  """``(batch_size,)`` training times: half uniform on ``(t_min, 1)``, half log-uniform on ``(t_min, 1)``.

  At small t the regression target ``E[ε | x_t] = -σ_t s`` is small next to the O(1) noise of ε, so uniform times
  alone learn the small-t score poorly; a sampler whose weights use ``|s|²`` there (Feynman-Kac correctors) needs
  it.
  """
  batch_size = _checks.check_int(batch_size, "batch_size")
  # t_min <= 0 puts log-uniform times at 0 (σ_0 = 0) and t_min >= 1 outside (t_min, 1); a traced one is the
  # caller's.
  if not _checks.is_traced(t_min) and not 0.0 < float(np.asarray(t_min)) < 1.0:
    raise ValueError(f"`t_min` must lie in (0, 1), got {t_min!r}.")
  k_t, k_mix = jax.random.split(key)
  u = jax.random.uniform(k_t, (batch_size,))
  return jnp.where(jax.random.bernoulli(k_mix, 0.5, (batch_size,)), t_min + u * (1.0 - t_min), t_min ** (1.0 - u))


def dsm_loss(
  params: Any,
  key: jax.Array,
  net: ScoreNet,
  sample_data: DataFn,
  schedule: Any,
  *,
  batch_size: int,
  t_min: float,
) -> jax.Array:
  """Denoising score matching, ``E |ε̂(α_t x_0 + σ_t ε, t, c) - ε|²`` on one batch, classes uniform.

  Args:
    params: the network's parameters.
    key: PRNG key of the batch.
    net: the :class:`ScoreNet`.
    sample_data: ``(key, labels (B,)) -> x_0 (B, d)``, one data point of each requested class.
    schedule: an object with ``alpha(t)`` and ``sigma(t)``.
    batch_size: B (static).
    t_min: smallest training time (:func:`sample_times`).

  Returns:
    The scalar loss.
  """
  _check_net(net)
  batch_size = _checks.check_int(batch_size, "batch_size")
  if not callable(sample_data):
    raise TypeError(f"`sample_data` must be a function (key, labels (B,)) -> x0 (B, d), got {sample_data!r}.")
  k_c, k_x, k_t, k_e = jax.random.split(key, 4)
  labels = jax.random.randint(k_c, (batch_size,), 0, net.num_classes)
  x0 = sample_data(k_x, labels)
  if jnp.ndim(x0) != 2 or jnp.shape(x0)[0] != batch_size:  # (B,) would broadcast to (B, B) against the times
    raise ValueError(f"`sample_data` must return x0 of shape (batch_size, d) = ({batch_size}, d), got {jnp.shape(x0)}.")
  t = sample_times(k_t, batch_size, t_min)
  eps = jax.random.normal(k_e, x0.shape)
  xt = schedule.alpha(t)[:, None] * x0 + schedule.sigma(t)[:, None] * eps
  pred = jax.vmap(lambda x, s, c: net.apply(params, x, s, c))(xt, t, labels)
  return jnp.mean(jnp.sum((pred - eps) ** 2, -1))


class ScoreNetTraining(NamedTuple):
  """Result of :func:`train`: the trained ``params`` and the ``(num_steps,)`` training ``losses``."""

  params: Any
  losses: jax.Array


def train(
  key: jax.Array,
  params: Any,
  net: ScoreNet,
  optimizer: optax.GradientTransformation,
  sample_data: DataFn,
  schedule: Any,
  *,
  num_steps: int,
  batch_size: int,
  t_min: float,
) -> ScoreNetTraining:
  """``num_steps`` steps of :func:`dsm_loss` with ``optimizer``, as one jitted ``lax.scan``.

  Args:
    key: PRNG key (split into one key per step).
    params: initial parameters (:func:`init_params`).
    net: the :class:`ScoreNet`.
    optimizer: an optax optimiser, e.g. ``optax.adam(optax.cosine_decay_schedule(2e-3, num_steps, 0.05))``.
    sample_data: ``(key, labels (B,)) -> x_0 (B, d)``.
    schedule: an object with ``alpha(t)`` and ``sigma(t)``.
    num_steps: number of optimiser steps (static).
    batch_size: batch size (static).
    t_min: smallest training time.

  Returns:
    :class:`ScoreNetTraining`.
  """
  for name, value in (("num_steps", num_steps), ("batch_size", batch_size)):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
      raise ValueError(f"`{name}` must be a positive Python int, got {value!r}.")
  if not isinstance(optimizer, optax.GradientTransformation):
    raise TypeError(f"`optimizer` must be an optax.GradientTransformation, got {type(optimizer).__name__}.")
  opt_state = optimizer.init(params)

  def loss_fn(p, k):
    return dsm_loss(p, k, net, sample_data, schedule, batch_size=batch_size, t_min=t_min)

  @jax.jit
  def run(params, opt_state, key):
    def step(carry, k):
      p, s = carry
      loss, grads = jax.value_and_grad(loss_fn)(p, k)
      updates, s = optimizer.update(grads, s, p)
      return (optax.apply_updates(p, updates), s), loss

    (params, _), losses = jax.lax.scan(step, (params, opt_state), jax.random.split(key, num_steps))
    return params, losses

  params, losses = run(params, opt_state, key)
  return ScoreNetTraining(params=params, losses=losses)
