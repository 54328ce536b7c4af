r"""Knowledge-distillation losses: classic KD, the binary-KL logit losses and Dual-Head KD.

Yang, Zong, Huang, Feng, An. "Dual-Head Knowledge Distillation: Enhancing Logits Utilization with an Auxiliary
Head", arXiv 2411.08937 (2024).

The paper adds a *logit-level* loss to the usual *probability-level* one. Its logit-level loss, BinaryKL (Sec. 3),
treats each class as a binary problem and matches ``sigmoid(z_s / T)`` to ``sigmoid(z_t / T)``:

  BinaryKL(z_s, z_t) = T^2 sum_c KL(Bern(sigmoid(z_t,c / T)) || Bern(sigmoid(z_s,c / T))).

Put on the same linear head as the cross-entropy, the two losses pull the classifier in contradictory directions
and the student ends below either loss alone (Fig. 1(b); Sec. 4 argues it from neural collapse). Dual-Head KD
(Sec. 5) gives the logit loss its own *auxiliary* head over the same features: the cross-entropy trains the
original head, the logit loss trains the auxiliary head, both train the backbone, and only the original head is
used at test time. The authors' code uses the normalised form

  BinaryKLNorm(z_s, z_t) = T^2 sum_c KL(Bern(1/2) || Bern(sigmoid((z_s,c - z_t,c) / T)))
                         = T^2 sum_c log cosh((z_s,c - z_t,c) / (2T)),

(the second line is our closed form: KL(Bern(1/2) || Bern(sigmoid(x))) = log cosh(x / 2)), a Huber-like logit
matching loss (about (z_s - z_t)^2 / 8 for small gaps, T |z_s - z_t| / 2 for large ones), and optionally a
PCGrad-style gradient alignment (:func:`align_gradients`) that removes from the distillation gradient its
component against the cross-entropy gradient when the two conflict.

Every loss here returns one value per example (summed over classes), in the style of ``optax.losses``; the
authors' code averages it over the batch. Their code clamps the probabilities to ``[1e-8, 1 - 1e-8]``; we compute
the Bernoulli KLs from log-sigmoids instead (the same values while ``|z / T| < 18``, finite beyond).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from toolkit import _checks

LogitLoss = Callable[..., jax.Array]
"""``(student_logits, teacher_logits) -> per-example loss``, e.g. :func:`binary_kl_norm` or :func:`kd_loss`."""


def _check_pair(student_logits, teacher_logits) -> tuple[jax.Array, jax.Array]:
  student_logits, teacher_logits = jnp.asarray(student_logits), jnp.asarray(teacher_logits)
  for name, value in (("student_logits", student_logits), ("teacher_logits", teacher_logits)):
    if not jnp.issubdtype(value.dtype, jnp.floating):
      raise TypeError(f"`{name}` must be a floating-point array, got dtype {value.dtype}.")
    if value.ndim < 1:
      raise ValueError(f"`{name}` must have at least one (class) axis, got a scalar.")
  if student_logits.shape != teacher_logits.shape:
    raise ValueError(
      f"`student_logits` and `teacher_logits` must have the same shape, got {student_logits.shape} and "
      f"{teacher_logits.shape}."
    )
  return student_logits, teacher_logits


def _check_temperature(temperature) -> None:
  # Any concrete scalar (np.float32(2.0) included) is checked; a traced one is the caller's.
  if isinstance(temperature, bool):
    raise TypeError(f"`temperature` must be a scalar > 0, got {temperature!r}.")
  _checks.check_positive(temperature, "temperature")


def _check_loss_weight(value, name: str) -> None:
  """A concrete loss weight must be a finite scalar >= 0 (0 switches its term off); a negative one would ascend it."""
  if _checks.is_traced(value):
    return
  if isinstance(value, bool) or np.asarray(value).dtype.kind not in "iuf" or np.ndim(value) != 0:
    raise TypeError(f"`{name}` must be a scalar number >= 0, got {value!r}.")
  if not (np.isfinite(value) and value >= 0):
    raise ValueError(f"`{name}` must be a finite number >= 0, got {value!r}.")


def kd_loss(student_logits: jax.Array, teacher_logits: jax.Array, *, temperature: float = 4.0) -> jax.Array:
  """Classic KD (Hinton, Vinyals, Dean 2015): ``T^2 KL(softmax(z_t / T) || softmax(z_s / T))`` per example.

  Args:
    student_logits: ``[..., num_classes]`` floating array.
    teacher_logits: same shape (treated as constants by the caller: wrap in ``jax.lax.stop_gradient`` if needed).
    temperature: softening temperature ``T > 0``; the ``T^2`` factor keeps the gradient scale independent of ``T``.

  Returns:
    ``[...]`` per-example loss, ``>= 0`` and zero when the softened distributions agree.

  Example:
    >>> import jax.numpy as jnp
    >>> round(float(kd_loss(jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0]), temperature=1.0)), 4)
    0.4621
  """
  student_logits, teacher_logits = _check_pair(student_logits, teacher_logits)
  _check_temperature(temperature)
  log_p_student = jax.nn.log_softmax(student_logits / temperature, axis=-1)
  p_teacher = jax.nn.softmax(teacher_logits / temperature, axis=-1)
  return temperature**2 * optax.losses.kl_divergence(log_p_student, p_teacher)


def _bernoulli_kl_from_logits(target_logits: jax.Array, logits: jax.Array) -> jax.Array:
  """``KL(Bern(sigmoid(a)) || Bern(sigmoid(b)))`` elementwise, from log-sigmoids (no clamping needed)."""
  p = jax.nn.sigmoid(target_logits)
  log_p, log_q = jax.nn.log_sigmoid(target_logits), jax.nn.log_sigmoid(logits)
  log_1mp, log_1mq = jax.nn.log_sigmoid(-target_logits), jax.nn.log_sigmoid(-logits)
  return p * (log_p - log_q) + (1.0 - p) * (log_1mp - log_1mq)


def binary_kl(student_logits: jax.Array, teacher_logits: jax.Array, *, temperature: float = 2.0) -> jax.Array:
  """BinaryKL (arXiv 2411.08937, Sec. 3): ``T^2 sum_c KL(Bern(σ(z_t,c/T)) || Bern(σ(z_s,c/T)))`` per example.

  Unlike softmax KD it is not invariant to adding a constant to all logits: it matches the logits themselves.

  Args:
    student_logits: ``[..., num_classes]`` floating array.
    teacher_logits: same shape.
    temperature: ``T > 0`` (the authors' ``BinaryKL_T`` = 2).

  Returns:
    ``[...]`` per-example loss, ``>= 0``, zero exactly at ``student_logits == teacher_logits``.

  Example:
    >>> import jax.numpy as jnp
    >>> round(float(binary_kl(jnp.array([2.0, 0.0]), jnp.array([2.0, 0.0]))), 6)
    0.0
    >>> round(float(binary_kl(jnp.array([0.0, 0.0]), jnp.array([2.0, -2.0]))), 4)  # 2 T^2 KL(Bern(σ(1)) || Bern(1/2))
    0.8876
  """
  student_logits, teacher_logits = _check_pair(student_logits, teacher_logits)
  _check_temperature(temperature)
  per_class = _bernoulli_kl_from_logits(teacher_logits / temperature, student_logits / temperature)
  return temperature**2 * jnp.sum(per_class, axis=-1)


def binary_kl_norm(student_logits: jax.Array, teacher_logits: jax.Array, *, temperature: float = 2.0) -> jax.Array:
  """BinaryKLNorm, the logit loss of Dual-Head KD's auxiliary head (arXiv 2411.08937; the authors' code).

  ``T^2 sum_c KL(Bern(1/2) || Bern(σ((z_s,c − z_t,c) / T)))``, which equals ``T^2 sum_c log cosh(Δ_c / 2T)`` with
  ``Δ = z_s − z_t``: symmetric in ``Δ``, invariant to adding the same constant to both logits, zero with zero
  gradient at ``Δ = 0``, quadratic (``Δ²/8``) near 0 and linear (``T|Δ|/2``) far from it.

  Args:
    student_logits: ``[..., num_classes]`` floating array.
    teacher_logits: same shape.
    temperature: ``T > 0`` (the authors' ``BinaryKL_T`` = 2).

  Returns:
    ``[...]`` per-example loss (summed over classes, times ``T^2``).

  Example:
    >>> import jax.numpy as jnp
    >>> z_s, z_t = jnp.array([[1.0, -1.0, 0.5]]), jnp.array([[0.0, 0.0, 0.5]])
    >>> loss = binary_kl_norm(z_s, z_t, temperature=2.0)
    >>> round(float(loss[0]), 5), round(float(2 * 4 * jnp.log(jnp.cosh(0.25))), 5)  # T^2 (2 log cosh(1/4))
    (0.24744, 0.24744)
  """
  student_logits, teacher_logits = _check_pair(student_logits, teacher_logits)
  _check_temperature(temperature)
  # Evaluated as T^2 log cosh(Δ / 2T), the same value as the authors' Bernoulli-KL form (tested).
  half_gap = (student_logits - teacher_logits) / (2 * temperature)
  return temperature**2 * jnp.sum(_log_cosh(half_gap), axis=-1)


def _log_cosh(x: jax.Array) -> jax.Array:
  """``log cosh x`` without cancellation: ``log1p(sinh² x) / 2`` where ``sinh`` is finite, ``a + log1p(expm1(-2a) / 2)``
  with ``a = |x|`` beyond (smooth at 0, gradient ``tanh x``). The authors' form ``KL(Bern(1/2) || Bern(σ(2x)))``
  evaluated in float32 loses the digits of small gaps (``-log 2 - (log σ(2x) + log σ(-2x)) / 2`` cancels)."""
  small = jnp.abs(x) < 10.0
  a_small, a_big = jnp.where(small, x, 0.0), jnp.where(small, 10.0, jnp.abs(x))
  return jnp.where(small, 0.5 * jnp.log1p(jnp.sinh(a_small) ** 2), a_big + jnp.log1p(0.5 * jnp.expm1(-2.0 * a_big)))


def _check_labels(logits: jax.Array, labels) -> jax.Array:
  labels = jnp.asarray(labels)
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise TypeError(f"`labels` must be an integer array of class indices, got dtype {labels.dtype}.")
  if labels.shape != logits.shape[:-1]:
    raise ValueError(f"`labels` must have shape logits.shape[:-1] = {logits.shape[:-1]}, got {labels.shape}.")
  # An id outside [0, C) selects no class: the cross-entropy would be NaN or a wrapped-around class's.
  _checks.check_ids(labels, logits.shape[-1], "labels", "the classes")
  return labels


class DistillationTerms(NamedTuple):
  """The two per-example terms of a distillation objective, before weighting.

  Attributes:
    cross_entropy: ``[...]`` cross-entropy of the original head against the labels.
    distillation: ``[...]`` the teacher-matching loss (on the original head, or on the auxiliary head for DHKD).
  """

  cross_entropy: jax.Array
  distillation: jax.Array


def dual_head_terms(
  logits: jax.Array,
  aux_logits: jax.Array,
  labels: jax.Array,
  teacher_logits: jax.Array,
  *,
  logit_loss: LogitLoss = binary_kl_norm,
) -> DistillationTerms:
  """The two terms of Dual-Head KD (arXiv 2411.08937, Sec. 5): CE on the original head, the logit loss on the
  auxiliary head.

  Args:
    logits: ``[..., num_classes]`` the original head (the one used at test time).
    aux_logits: ``[..., num_classes]`` the auxiliary head over the same features.
    labels: ``[...]`` integer class indices.
    teacher_logits: ``[..., num_classes]`` the teacher's logits (not differentiated through).
    logit_loss: ``(student_logits, teacher_logits) -> per-example loss`` for the auxiliary head; the authors use
      :func:`binary_kl_norm` with ``T = 2``.

  Returns:
    :class:`DistillationTerms` of per-example values.

  Example:
    >>> import jax.numpy as jnp
    >>> z = jnp.array([[2.0, 0.0, -1.0]])
    >>> terms = dual_head_terms(z, z, jnp.array([0]), z)
    >>> round(float(terms.cross_entropy[0]), 4), round(float(terms.distillation[0]), 4)
    (0.1698, 0.0)
  """
  logits = jnp.asarray(logits)
  if not jnp.issubdtype(logits.dtype, jnp.floating):
    raise TypeError(f"`logits` must be a floating-point array, got dtype {logits.dtype}.")
  if not callable(logit_loss):
    raise TypeError(f"`logit_loss` must be a callable (student_logits, teacher_logits) -> loss, got {logit_loss!r}.")
  aux_logits, teacher_logits = _check_pair(aux_logits, teacher_logits)
  if logits.shape != aux_logits.shape:
    raise ValueError(
      f"`logits` and `aux_logits` must have the same shape (two heads over the same classes), got {logits.shape} "
      f"and {aux_logits.shape}."
    )
  labels = _check_labels(logits, labels)
  ce = optax.losses.softmax_cross_entropy_with_integer_labels(logits, labels)
  return DistillationTerms(ce, logit_loss(aux_logits, jax.lax.stop_gradient(teacher_logits)))


def dual_head_loss(
  logits: jax.Array,
  aux_logits: jax.Array,
  labels: jax.Array,
  teacher_logits: jax.Array,
  *,
  logit_loss: LogitLoss = binary_kl_norm,
  ce_weight: float = 1.0,
  distillation_weight: float = 1.0,
) -> jax.Array:
  """Dual-Head KD's loss ``γ CE(logits, y) + α logit_loss(aux_logits, z_t)`` per example (arXiv 2411.08937,
  Sec. 5; the authors' defaults γ = α = 1 on CIFAR-100).

  See :func:`dual_head_terms` for the arguments. Only ``logits`` (the original head) is used at test time.

  Example:
    >>> import jax.numpy as jnp
    >>> z = jnp.array([[2.0, 0.0, -1.0]])
    >>> round(float(dual_head_loss(z, z + 1.0, jnp.array([0]), z)[0]), 4)  # CE 0.1698 + 4 * 3 log cosh(1/4)
    0.541
  """
  _check_loss_weight(ce_weight, "ce_weight")
  _check_loss_weight(distillation_weight, "distillation_weight")
  terms = dual_head_terms(logits, aux_logits, labels, teacher_logits, logit_loss=logit_loss)
  return ce_weight * terms.cross_entropy + distillation_weight * terms.distillation


def _tree_vdot(a, b) -> jax.Array:
  leaves = jax.tree.leaves(jax.tree.map(lambda x, y: jnp.vdot(x, y), a, b))
  return sum(leaves[1:], leaves[0])


def align_gradients(distillation_grads, ce_grads):
  """PCGrad-style gradient alignment of Dual-Head KD (the authors' ``--ga``; Yu et al. 2020, "Gradient Surgery").

  With ``g_d`` and ``g_ce`` flattened over every parameter: if ``g_d · g_ce < 0``, returns
  ``g_d − (g_d · g_ce / ‖g_ce‖²) g_ce`` (the distillation gradient without its component against the
  cross-entropy gradient), else ``g_d`` unchanged. Only the cross-entropy gradient acts as the reference. The
  update is then ``g_ce + align_gradients(g_d, g_ce)``.

  Args:
    distillation_grads: a pytree of gradients of the distillation term.
    ce_grads: a pytree of the same structure and shapes: gradients of the cross-entropy term.

  Returns:
    A pytree like ``distillation_grads`` whose dot product with ``ce_grads`` is ``>= 0`` (up to rounding).

  Example:
    >>> import jax.numpy as jnp
    >>> g = align_gradients({"w": jnp.array([-1.0, 1.0])}, {"w": jnp.array([1.0, 0.0])})
    >>> g["w"].tolist()
    [0.0, 1.0]
  """
  if jax.tree.structure(distillation_grads) != jax.tree.structure(ce_grads):
    raise ValueError(
      "`distillation_grads` and `ce_grads` must be pytrees of the same structure, got "
      f"{jax.tree.structure(distillation_grads)} and {jax.tree.structure(ce_grads)}."
    )
  if not jax.tree.leaves(ce_grads):
    raise ValueError("`ce_grads` must have at least one leaf.")
  for d, c in zip(jax.tree.leaves(distillation_grads), jax.tree.leaves(ce_grads)):
    if jnp.shape(d) != jnp.shape(c):
      raise ValueError(
        f"`distillation_grads` and `ce_grads` leaves must have equal shapes, got {jnp.shape(d)} and {jnp.shape(c)}."
      )
  dot = _tree_vdot(distillation_grads, ce_grads)
  sq_norm = _tree_vdot(ce_grads, ce_grads)
  conflict = dot < 0  # implies ‖g_ce‖ > 0
  coef = jnp.where(conflict, dot / jnp.where(conflict, sq_norm, 1.0), 0.0)
  return jax.tree.map(lambda d, c: d - (coef * c).astype(d.dtype), distillation_grads, ce_grads)
