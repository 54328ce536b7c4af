"""A student with two heads over shared features, and its distillation training step (Dual-Head KD).

Yang, Zong, Huang, Feng, An. "Dual-Head Knowledge Distillation: Enhancing Logits Utilization with an Auxiliary
Head", arXiv 2411.08937 (2024), Sec. 5.

:class:`DualHeadMLP` is a ReLU MLP backbone with the original linear head (``head``, used at test time) and an
auxiliary head (``aux_head``) over the same features. Every training arm of the paper's comparison uses this same
network; an *objective* (``(outputs, labels, teacher_logits) -> DistillationTerms``) decides which head each loss
sees:

- :func:`single_head_objective`: cross-entropy and (optionally) a distillation loss both on the original head
  (plain CE, CE + KD, CE + BinaryKL, or BinaryKL alone with ``ce_weight=0``); the auxiliary head is left untrained.
- :func:`dual_head_objective`: CE on the original head, the logit loss on the auxiliary head (DHKD).

:func:`step` takes one optimiser step on ``ce_weight * CE + distillation_weight * distillation`` (batch means), with
the optional PCGrad-style alignment of the two gradients (``align=True``, the authors' ``--ga``), and reports the
cosine between the two gradients on the heads and on the backbone: Sec. 4 of the paper predicts they conflict on a
shared classifier but not in the backbone. :func:`train` is :func:`init` followed by a ``lax.scan`` of
:func:`step` over shuffled mini-batches.

Our choices: the authors' non-linear auxiliary head (Linear -> Dropout 0.1 -> BatchNorm -> ReLU -> Linear) is
Dense -> ReLU -> Dense here (``aux_hidden``), without dropout or batch norm; ``aux_hidden=None`` gives their linear
auxiliary head.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from toolkit import _checks
from toolkit.losses import distillation
from toolkit.losses.distillation import DistillationTerms, LogitLoss
from toolkit.models.mlp import torch_linear_init


class DualHeadOutput(NamedTuple):
  """Logits of both heads: ``logits`` (original head, used at test time) and ``aux_logits`` (auxiliary head)."""

  logits: jax.Array
  aux_logits: jax.Array


class DualHeadMLP(nn.Module):
  """ReLU MLP backbone (``dense_i``) with a linear head ``head`` and an auxiliary head ``aux_head`` on its features.

  Attributes:
    hidden: widths of the backbone's hidden layers (each followed by a ReLU); the last one is the feature width.
    num_classes: number of classes of both heads.
    aux_hidden: ``None`` for a linear auxiliary head, else the width of its hidden ReLU layer.

  Example:
    >>> model = DualHeadMLP(hidden=(16,), num_classes=3, aux_hidden=8)
    >>> params = model.init(jax.random.key(0), jnp.ones((2, 5)))
    >>> out = model.apply(params, jnp.ones((2, 5)))
    >>> out.logits.shape, out.aux_logits.shape, sorted(params["params"])
    ((2, 3), (2, 3), ['aux_head', 'dense_0', 'head'])
  """

  hidden: Sequence[int] = (64, 64)
  num_classes: int = 10
  aux_hidden: int | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> DualHeadOutput:
    if x.ndim < 2:
      raise ValueError(f"`x` must have shape (batch, ..., features), got {x.shape}.")
    h = x.reshape(x.shape[0], -1)
    for i, width in enumerate(self.hidden):
      h = nn.relu(nn.Dense(width, kernel_init=torch_linear_init, name=f"dense_{i}")(h))
    logits = nn.Dense(self.num_classes, kernel_init=torch_linear_init, name="head")(h)
    aux = _AuxHead(self.num_classes, self.aux_hidden, name="aux_head")(h)
    return DualHeadOutput(logits, aux)


class _AuxHead(nn.Module):
  num_classes: int
  hidden: int | None

  @nn.compact
  def __call__(self, h):
    if self.hidden is not None:
      h = nn.relu(nn.Dense(self.hidden, kernel_init=torch_linear_init, name="hidden")(h))
    return nn.Dense(self.num_classes, kernel_init=torch_linear_init, name="out")(h)


Objective = Callable[[DualHeadOutput, jax.Array, jax.Array], DistillationTerms]
"""``(outputs, labels, teacher_logits) -> DistillationTerms`` of per-example values."""


def single_head_objective(distillation_loss: LogitLoss | None = None) -> Objective:
  """CE and ``distillation_loss(logits, teacher_logits)`` both on the original head (zero when ``None``)."""
  if distillation_loss is not None and not callable(distillation_loss):
    raise TypeError(
      f"`distillation_loss` must be None or a callable (student_logits, teacher_logits) -> loss, got "
      f"{distillation_loss!r}."
    )

  def objective(outputs: DualHeadOutput, labels: jax.Array, teacher_logits: jax.Array) -> DistillationTerms:
    ce = optax.losses.softmax_cross_entropy_with_integer_labels(outputs.logits, labels)
    if distillation_loss is None:
      return DistillationTerms(ce, jnp.zeros_like(ce))
    return DistillationTerms(ce, distillation_loss(outputs.logits, jax.lax.stop_gradient(teacher_logits)))

  return objective


def dual_head_objective(logit_loss: LogitLoss = distillation.binary_kl_norm) -> Objective:
  """Dual-Head KD: CE on the original head, ``logit_loss`` on the auxiliary head (``dual_head_terms``)."""
  if not callable(logit_loss):
    raise TypeError(f"`logit_loss` must be a callable (student_logits, teacher_logits) -> loss, got {logit_loss!r}.")

  def objective(outputs: DualHeadOutput, labels: jax.Array, teacher_logits: jax.Array) -> DistillationTerms:
    return distillation.dual_head_terms(
      outputs.logits, outputs.aux_logits, labels, teacher_logits, logit_loss=logit_loss
    )

  return objective


class DistillationState(NamedTuple):
  """``params`` (flax variables of the student) and the optimiser state."""

  params: dict
  opt_state: optax.OptState


class DistillationStepInfo(NamedTuple):
  """Batch means of the two terms, and gradient cosines between them (before alignment).

  ``head_cosine`` is over the parameters of both heads, ``backbone_cosine`` over the rest; a cosine is 0 when
  either gradient is 0 there (e.g. plain CE, or the heads under DHKD, where each loss reaches one head only).
  """

  cross_entropy: jax.Array
  distillation: jax.Array
  head_cosine: jax.Array
  backbone_cosine: jax.Array


def init(
  key: jax.Array, model: nn.Module, x_example: jax.Array, optimizer: optax.GradientTransformation
) -> DistillationState:
  """Initialises the student's variables on ``x_example`` (one batch) and the optimiser state."""
  _check_model_and_optimizer(model, optimizer)
  params = model.init(key, x_example)
  return DistillationState(params, optimizer.init(params))


def _check_model_and_optimizer(model, optimizer) -> None:
  if not isinstance(model, nn.Module):
    raise TypeError(f"`model` must be a flax.linen Module such as DualHeadMLP, got {type(model).__name__}.")
  if not isinstance(optimizer, optax.GradientTransformation):
    raise TypeError(f"`optimizer` must be an optax.GradientTransformation, got {type(optimizer).__name__}.")


def _check_data(x, labels, teacher_logits) -> None:
  """One label and one row of teacher logits per example of ``x``; concrete labels must name a class."""
  if jnp.ndim(x) < 2:
    raise ValueError(f"`x` must have shape (num_examples, ..., features), got {jnp.shape(x)}.")
  num = jnp.shape(x)[0]
  if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
    raise TypeError(f"`labels` must be an integer array of class indices, got dtype {jnp.result_type(labels)}.")
  if jnp.shape(labels) != (num,):
    raise ValueError(f"`labels` must have shape ({num},) (one per example of `x`), got {jnp.shape(labels)}.")
  if not jnp.issubdtype(jnp.result_type(teacher_logits), jnp.floating):
    raise TypeError(f"`teacher_logits` must be a floating-point array, got dtype {jnp.result_type(teacher_logits)}.")
  if jnp.ndim(teacher_logits) != 2 or jnp.shape(teacher_logits)[0] != num:
    raise ValueError(
      f"`teacher_logits` must have shape ({num}, num_classes) (one row per example of `x`), got "
      f"{jnp.shape(teacher_logits)}."
    )
  _checks.check_ids(labels, jnp.shape(teacher_logits)[1], "labels", "the classes")


def _check_step_options(objective, ce_weight, distillation_weight, align) -> None:
  if not callable(objective):
    raise TypeError(
      f"`objective` must be a callable (outputs, labels, teacher_logits) -> DistillationTerms, got {objective!r}."
    )
  distillation._check_loss_weight(ce_weight, "ce_weight")
  distillation._check_loss_weight(distillation_weight, "distillation_weight")
  if not isinstance(align, bool):
    raise TypeError(f"`align` must be a Python bool, got {align!r}.")


def _split(tree: dict) -> tuple[list, list]:
  head, backbone = [], []
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    names = [getattr(p, "key", "") for p in path]
    (head if "head" in names or "aux_head" in names else backbone).append(leaf)
  return head, backbone


def _cosine(a: list, b: list) -> jax.Array:
  if not a:
    return jnp.zeros(())
  dot = sum(jnp.vdot(x, y) for x, y in zip(a, b))
  na = jnp.sqrt(sum(jnp.vdot(x, x) for x in a))
  nb = jnp.sqrt(sum(jnp.vdot(y, y) for y in b))
  return jnp.where((na > 0) & (nb > 0), dot / jnp.maximum(na * nb, 1e-30), 0.0)


def step(
  state: DistillationState,
  x: jax.Array,
  labels: jax.Array,
  teacher_logits: jax.Array,
  *,
  model: nn.Module,
  optimizer: optax.GradientTransformation,
  objective: Objective,
  ce_weight: float = 1.0,
  distillation_weight: float = 1.0,
  align: bool = False,
) -> tuple[DistillationState, DistillationStepInfo]:
  """One optimiser step on ``ce_weight * mean CE + distillation_weight * mean distillation``.

  With ``align=True`` the distillation gradient is first projected by
  :func:`toolkit.losses.distillation.align_gradients` against the CE gradient (the authors' ``--ga``).

  Returns:
    The new state and the :class:`DistillationStepInfo` of this batch (measured before the update).

  Example:
    >>> model = DualHeadMLP(hidden=(8,), num_classes=3)
    >>> opt = optax.sgd(0.1)
    >>> x, y = jnp.ones((4, 5)), jnp.array([0, 1, 2, 0])
    >>> state = init(jax.random.key(0), model, x, opt)
    >>> state, info = step(state, x, y, jnp.zeros((4, 3)), model=model, optimizer=opt,
    ...                    objective=dual_head_objective(), align=True)
    >>> bool(info.cross_entropy > 0), float(info.head_cosine)  # each loss reaches only its own head
    (True, 0.0)
  """
  _check_model_and_optimizer(model, optimizer)
  _check_data(x, labels, teacher_logits)
  _check_step_options(objective, ce_weight, distillation_weight, align)

  def term(params, which):
    terms = objective(model.apply(params, x), labels, teacher_logits)
    return jnp.mean(terms[which])

  ce, g_ce = jax.value_and_grad(term)(state.params, 0)
  dist, g_d = jax.value_and_grad(term)(state.params, 1)
  g_ce = jax.tree.map(lambda g: ce_weight * g, g_ce)
  g_d = jax.tree.map(lambda g: distillation_weight * g, g_d)
  (head_ce, body_ce), (head_d, body_d) = _split(g_ce), _split(g_d)
  info = DistillationStepInfo(ce, dist, _cosine(head_ce, head_d), _cosine(body_ce, body_d))
  if align:
    g_d = distillation.align_gradients(g_d, g_ce)
  grads = jax.tree.map(jnp.add, g_ce, g_d)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  return DistillationState(optax.apply_updates(state.params, updates), opt_state), info


class DistillationResult(NamedTuple):
  """The trained ``params`` and ``history``, a :class:`DistillationStepInfo` of per-epoch means (epochs first)."""

  params: dict
  history: DistillationStepInfo


def train(
  key: jax.Array,
  x: jax.Array,
  labels: jax.Array,
  teacher_logits: jax.Array,
  *,
  model: nn.Module,
  optimizer: optax.GradientTransformation,
  objective: Objective,
  num_epochs: int,
  batch_size: int,
  ce_weight: float = 1.0,
  distillation_weight: float = 1.0,
  align: bool = False,
) -> DistillationResult:
  """:func:`init`, then ``num_epochs`` epochs of :func:`step` over reshuffled mini-batches (the last partial batch
  of each epoch is dropped), as one ``lax.scan``; jit-able (all keyword arguments static) and vmap-able over
  ``key``.

  Args:
    key: PRNG key for the initialisation and the batch order.
    x: ``[num_train, ...]`` inputs; ``labels``: ``[num_train]`` integers; ``teacher_logits``: ``[num_train, C]``.
    model, optimizer, objective, ce_weight, distillation_weight, align: as in :func:`step`.
    num_epochs: number of passes over the data.
    batch_size: examples per step, at most ``num_train``.

  Returns:
    :class:`DistillationResult`.
  """
  # Checked here, where the data are still whole (and concrete when closed over): inside the scan they are traced.
  _check_data(x, labels, teacher_logits)
  num_train = x.shape[0]
  num_epochs = _checks.check_int(num_epochs, "num_epochs")
  batch_size = _checks.check_int(batch_size, "batch_size")
  if batch_size > num_train:
    raise ValueError(f"`batch_size` must be at most the number of examples {num_train}, got {batch_size}.")
  _check_step_options(objective, ce_weight, distillation_weight, align)
  num_batches = num_train // batch_size
  k_init, k_data = jax.random.split(key)
  state = init(k_init, model, x[:batch_size], optimizer)

  def batch_step(state, idx):
    return step(
      state,
      x[idx],
      labels[idx],
      teacher_logits[idx],
      model=model,
      optimizer=optimizer,
      objective=objective,
      ce_weight=ce_weight,
      distillation_weight=distillation_weight,
      align=align,
    )

  def epoch(state, k):
    order = jax.random.permutation(k, num_train)[: num_batches * batch_size].reshape(num_batches, batch_size)
    state, infos = jax.lax.scan(batch_step, state, order)
    return state, jax.tree.map(jnp.mean, infos)

  state, history = jax.lax.scan(epoch, state, jax.random.split(k_data, num_epochs))
  return DistillationResult(state.params, history)


def accuracy(model: nn.Module, params: dict, x: jax.Array, labels: jax.Array) -> jax.Array:
  """Top-1 accuracy of the original head (the one used at test time).

  Args:
    model: the student (a :class:`DualHeadMLP`).
    params: its variables.
    x: ``[num, ...]`` inputs.
    labels: ``[num]`` integer class indices.

  Returns:
    A scalar in [0, 1].
  """
  logits = model.apply(params, x).logits
  # A (num, 1) label array would broadcast against the (num,) predictions into a (num, num) table.
  if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
    raise TypeError(f"`labels` must be an integer array of class indices, got dtype {jnp.result_type(labels)}.")
  if jnp.shape(labels) != logits.shape[:1]:
    raise ValueError(f"`labels` must have shape {logits.shape[:1]} (one per example of `x`), got {jnp.shape(labels)}.")
  _checks.check_ids(labels, logits.shape[-1], "labels", "the classes")
  return jnp.mean(jnp.argmax(logits, axis=-1) == labels)
