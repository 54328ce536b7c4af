r"""Fire Together Wire Together (FTWT): dynamic channel pruning with self-supervised mask predictors.

Elkerdawy, Elhoushi, Zhang, Ray, "Fire Together Wire Together: A Dynamic Pruning Approach with Self-Supervised Mask
Prediction", CVPR 2022, arXiv 2110.08232.

Each convolution ``i`` of a backbone gets a small mask predictor (§3.1) that reads the layer's *input* (the previous
layer's masked activation): global average pooling over the spatial axes, a softmax over the channels, and a linear
map with bias to one logit per output channel. The binary mask ``1[σ(logit) > 0.5]`` multiplies the layer's
post-ReLU output channels, per input, so a channel switched off costs no multiply-accumulates in this layer nor in
the next one's input.

The predictors are trained as binary classifiers against a self-supervised target (§3.2), the "heatmap mass"
criterion: with the per-channel heatmap score ``a_c = max_{h,w} |out_c|`` of the layer's unmasked output,
normalised to ``a_c / Σ a``, the target keeps the channels of largest score whose cumulative mass stays within the
threshold ``τ`` (``mthresh``): sorted in descending order, channel ``k`` is kept when ``Σ_{j ≤ k} â_j ≤ τ``
(+1e-5 tolerance). ``τ = 1`` keeps every channel whose normalised score exceeds 1e-5. The mask loss is the binary
cross-entropy with logits per filter, averaged over the batch and summed over filters and layers, added to the task
loss. In the *decoupled* mode the predictor reads the stop-gradient of its input, so the mask loss never reaches
the backbone; in the *joint* mode it does.

The cost of one input (§3.3) is, per masked convolution, ``active_out · H_out · W_out · active_in · k``
multiply-accumulates (``k`` the number of kernel taps; ``active_in`` the previous layer's active count, the input's
channel count for the first layer); its reduction is ``1 − mean dynamic MACs / dense MACs``. The paper's estimate
made *before* training applies the same count to the targets of the pretrained dense network (§4, "FLOPs
estimate").

Choices of ours, beside the authors' CIFAR code (github.com/selkerdawy/FTWT, ``utils/layers.py``):

* Every convolution of the backbone gets a predictor. The first one reads the image: with a single input channel its
  softmax is the constant 1, so that predictor learns an input-independent (static) mask through its bias.
* The predictors' biases start at ``initial_bias = 3`` (σ ≈ 0.95: every channel kept), so fine-tuning starts from the
  dense pretrained network; the authors' PyTorch default initialisation starts from a random mask instead.
* ``straight_through=True`` (the paper's straight-through estimator) lets the task loss reach the predictors through
  the binary mask; the authors' code computes the binary mask without gradient, which is ``straight_through=False``.
* Besides the authors' ``τ = 1`` rule, a channel whose normalised score is ≤ 1e-5 is never a target for any ``τ``
  (the authors' sort-and-cumsum gives the same except within 1e-5 of ``τ = 1``).
* FLOPs count the convolutions only, as the paper does; :func:`predictor_flops` gives the predictors' overhead.

The static comparison of the paper's tables, filter pruning by the L1 norm of the filters (Li et al., ICLR 2017),
is :func:`l1_channel_masks`, with :func:`uniform_keep_counts` matching a FLOPs budget.

The backbone is any flax module with the interface of :class:`toolkit.models.cnn.CNN`: ``apply(variables, x,
channel_masks)`` with one (batch, C_i) mask per layer applied after the ReLU, a ``features`` field, a
``kernel_size`` field, and the sown intermediates ``conv_{i}_input`` and ``conv_{i}_output`` (before the mask).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from toolkit import _checks

TOLERANCE = 1e-5  # the authors' ``delta``: cumulative-mass tolerance and dead-channel level


# ----------------------------------------------------------------------------------------------------------------------
# The self-supervised target.


def _check_threshold(threshold: Any) -> None:
  if isinstance(threshold, bool):
    raise TypeError(f"`threshold` must be a number in (0, 1], got {threshold!r}.")
  if isinstance(threshold, (int, float, np.floating, np.integer)):
    if not 0.0 < float(threshold) <= 1.0:
      raise ValueError(f"`threshold` must be in (0, 1], got {threshold}.")
  elif jnp.ndim(threshold) != 0:
    raise ValueError(f"`threshold` must be a scalar, got shape {jnp.shape(threshold)}.")


def heatmap_scores(activation: jax.Array) -> jax.Array:
  """Per-channel heatmap scores ``max over the spatial axes of |activation|`` (FTWT §3.2).

  Args:
    activation: ``(batch, *spatial, channels)``, e.g. a layer's post-ReLU output.

  Returns:
    (batch, channels) scores.

  >>> heatmap_scores(jnp.array([[[1.0, -3.0], [2.0, 0.5]]])).tolist()
  [[2.0, 3.0]]
  """
  activation = jnp.asarray(activation)
  if activation.ndim < 3:
    raise ValueError(f"`activation` must have shape (batch, *spatial, channels), got shape {activation.shape}.")
  return jnp.max(jnp.abs(activation), axis=tuple(range(1, activation.ndim - 1)))


def mass_target(scores: jax.Array, threshold: float | jax.Array, *, tolerance: float = TOLERANCE) -> jax.Array:
  """The 0/1 target of FTWT's heatmap-mass criterion (§3.2) for per-channel heatmap scores.

  Channels sorted by decreasing normalised score ``â = a / Σ a`` are kept while their cumulative mass is
  ``≤ threshold + tolerance``; ``threshold = 1`` keeps every channel with ``â > tolerance``, and a channel with
  ``â ≤ tolerance`` is never kept. Ties keep the lower channel index first.

  Args:
    scores: (..., channels) non-negative heatmap scores (:func:`heatmap_scores`).
    threshold: the mass threshold ``τ`` in (0, 1] (a Python number, checked, or a traced scalar).
    tolerance: the cumulative-mass tolerance and the dead-channel level.

  Returns:
    (..., channels) target of the dtype of ``scores``: 1 keep, 0 prune. All zeros where every score is 0.

  >>> mass_target(jnp.array([0.5, 0.1, 0.3, 0.1, 0.0]), 0.8).tolist()
  [1.0, 0.0, 1.0, 0.0, 0.0]
  >>> mass_target(jnp.array([0.5, 0.1, 0.3, 0.1, 0.0]), 1.0).tolist()
  [1.0, 1.0, 1.0, 1.0, 0.0]
  """
  scores = jnp.asarray(scores)
  if scores.ndim < 1 or scores.shape[-1] < 1:
    raise ValueError(f"`scores` must have shape (..., channels) with channels >= 1, got shape {scores.shape}.")
  if not jnp.issubdtype(scores.dtype, jnp.floating):
    raise TypeError(f"`scores` must be a floating array, got dtype {scores.dtype}.")
  _check_threshold(threshold)
  if not tolerance >= 0:
    raise ValueError(f"`tolerance` must be >= 0, got {tolerance}.")
  total = jnp.sum(scores, axis=-1, keepdims=True)
  normalised = jnp.where(total > 0, scores / jnp.where(total > 0, total, 1), 0)
  order = jnp.argsort(-normalised, axis=-1, stable=True)
  sorted_mass = jnp.take_along_axis(normalised, order, axis=-1)
  within = jnp.cumsum(sorted_mass, axis=-1) <= threshold + tolerance
  keep_sorted = within & (sorted_mass > tolerance)
  keep_mass = jnp.take_along_axis(keep_sorted, jnp.argsort(order, axis=-1), axis=-1)
  keep = jnp.where(jnp.asarray(threshold) >= 1, normalised > tolerance, keep_mass)
  return keep.astype(scores.dtype)


# ----------------------------------------------------------------------------------------------------------------------
# Mask predictors and the dynamic forward pass.


class MaskPredictor(nn.Module):
  """FTWT's mask predictor (§3.1): spatial mean pooling, softmax over channels, linear map with bias to logits.

  Attributes:
    num_channels: the number of output channels of the layer it masks.
    initial_bias: the bias at initialisation (3: σ ≈ 0.95, every channel kept at the start).
  """

  num_channels: int
  initial_bias: float = 3.0

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Mask logits (batch, num_channels) from the layer input ``x`` (batch, *spatial, C_in)."""
    pooled = jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))
    return nn.Dense(self.num_channels, bias_init=nn.initializers.constant(self.initial_bias), name="linear")(
      jax.nn.softmax(pooled, axis=-1)
    )


def _check_model(model: nn.Module) -> tuple[int, ...]:
  features = getattr(model, "features", None)
  if features is None or not all(isinstance(f, int) and f >= 1 for f in features) or not features:
    raise TypeError(f"`model` must be a CNN-like flax module with positive int `features`, got {model!r}.")
  return tuple(features)


def init_predictors(
  key: jax.Array, model: nn.Module, x: jax.Array, *, initial_bias: float = 3.0
) -> tuple[dict[str, Any], ...]:
  """Parameters of one :class:`MaskPredictor` per convolution of ``model``, sized for inputs like ``x``.

  >>> from toolkit.models.cnn import CNN
  >>> predictors = init_predictors(jax.random.key(0), CNN(features=(4, 8)), jnp.ones((1, 8, 8, 3)))
  >>> [p["linear"]["kernel"].shape for p in predictors]
  [(3, 4), (4, 8)]
  """
  features = _check_model(model)
  in_channels = (jnp.shape(x)[-1], *features[:-1])
  keys = jax.random.split(key, len(features))
  return tuple(
    MaskPredictor(c_out, initial_bias).init(k, jnp.zeros((1, 1, c_in), jnp.result_type(x)))[
      "params"
    ]  # only the channel axis matters
    for k, c_in, c_out in zip(keys, in_channels, features)
  )


def binarize(mask_logits: jax.Array, *, straight_through: bool = True) -> jax.Array:
  """The binary mask ``1[σ(logit) > 0.5]``; with ``straight_through`` its gradient is that of ``σ(logit)`` (STE).

  >>> binarize(jnp.array([-1.0, 0.0, 2.0])).tolist()
  [0.0, 0.0, 1.0]
  """
  if not jnp.issubdtype(jnp.result_type(mask_logits), jnp.floating):
    raise TypeError(f"`mask_logits` must be a floating array of logits, got dtype {jnp.result_type(mask_logits)}.")
  probs = jax.nn.sigmoid(mask_logits)
  hard = (probs > 0.5).astype(probs.dtype)
  if not straight_through:
    return jax.lax.stop_gradient(hard)
  return hard + (probs - jax.lax.stop_gradient(probs))  # exactly `hard` in the forward pass


class DynamicOutput(NamedTuple):
  """One dynamic forward pass.

  Attributes:
    logits: (batch, num_classes) of the masked network.
    mask_logits: per layer, (batch, C_i) predictor logits.
    masks: per layer, (batch, C_i) binary masks applied (with the STE gradient when training).
    targets: per layer, (batch, C_i) mass-criterion targets from the layer's unmasked output (no gradient).
    active_channels: (batch, num_layers) number of channels kept per layer.
  """

  logits: jax.Array
  mask_logits: tuple[jax.Array, ...]
  masks: tuple[jax.Array, ...]
  targets: tuple[jax.Array, ...]
  active_channels: jax.Array


def _intermediates(model: nn.Module, params: Any, x: jax.Array, masks: Sequence[jax.Array | None]):
  logits, state = model.apply({"params": params}, x, list(masks), mutable=["intermediates"])
  return logits, {name: value[0] for name, value in state["intermediates"].items()}


def dynamic_forward(
  model: nn.Module,
  params: Any,
  predictors: Sequence[Any],
  x: jax.Array,
  *,
  threshold: float | jax.Array,
  decoupled: bool = True,
  training: bool = False,
  straight_through: bool = True,
) -> DynamicOutput:
  """The backbone with FTWT's per-input channel masks, predicted layer by layer, and the mass targets.

  Layer ``i``'s predictor reads the input of convolution ``i``, which depends on the masks of the layers before it,
  so the pass is run once per layer with the masks known so far (then XLA shares the common prefix under ``jit``).

  Args:
    model: a CNN-like flax module (see the module docstring).
    params: the backbone's parameters (``variables["params"]``).
    predictors: one :class:`MaskPredictor` parameter dict per layer (:func:`init_predictors`).
    x: a batch of inputs.
    threshold: the mass threshold of the targets, in (0, 1].
    decoupled: the predictors read the stop-gradient of their input (FTWT's decoupled mode); ``False`` is the joint
      mode.
    training: masks carry the straight-through gradient; ``False`` (inference) gives plain binary masks.
    straight_through: in training, the STE gradient flows through the masks (see :func:`binarize`).

  Returns:
    A :class:`DynamicOutput`.

  >>> from toolkit.models.cnn import CNN
  >>> model, x = CNN(features=(4, 8), num_classes=3), jnp.ones((2, 8, 8, 1))
  >>> params = model.init(jax.random.key(0), x)["params"]
  >>> out = dynamic_forward(model, params, init_predictors(jax.random.key(1), model, x), x, threshold=0.9)
  >>> out.logits.shape, out.active_channels.tolist()
  ((2, 3), [[4.0, 8.0], [4.0, 8.0]])
  """
  features = _check_model(model)
  if len(predictors) != len(features):
    raise ValueError(f"`predictors` must have one entry per layer ({len(features)}), got {len(predictors)}.")
  _check_threshold(threshold)
  masks: list[jax.Array] = []
  mask_logits = []
  layer_input = jnp.asarray(x)
  for i, predictor in enumerate(predictors):
    if i > 0:
      layer_input = _intermediates(model, params, x, masks + [None] * (len(features) - i))[1][f"conv_{i}_input"]
    inp = jax.lax.stop_gradient(layer_input) if decoupled else layer_input
    logits_i = MaskPredictor(features[i]).apply({"params": predictor}, inp)
    mask_logits.append(logits_i)
    masks.append(binarize(logits_i, straight_through=straight_through and training))
  logits, inter = _intermediates(model, params, x, masks)
  targets = tuple(
    mass_target(jax.lax.stop_gradient(heatmap_scores(inter[f"conv_{i}_output"])), threshold)
    for i in range(len(features))
  )
  active = jnp.stack([jax.lax.stop_gradient(m).sum(-1) for m in masks], axis=-1)
  return DynamicOutput(logits, tuple(mask_logits), tuple(masks), targets, active)


def mask_loss(mask_logits: Sequence[jax.Array], targets: Sequence[jax.Array]) -> jax.Array:
  """FTWT's mask loss: binary cross-entropy with logits, averaged over the batch, summed over filters and layers.

  >>> round(float(mask_loss([jnp.zeros((2, 3))], [jnp.ones((2, 3))])), 4)  # 3 log 2
  2.0794
  """
  if len(mask_logits) != len(targets):
    raise ValueError(
      f"`mask_logits` and `targets` must have one entry per layer, got {len(mask_logits)} and {len(targets)}."
    )
  total = jnp.zeros(())
  for logits, target in zip(mask_logits, targets):
    if logits.shape != target.shape:
      raise ValueError(f"mask logits and targets must have equal shapes, got {logits.shape} and {target.shape}.")
    total = total + jnp.sum(jnp.mean(optax.losses.sigmoid_binary_cross_entropy(logits, target), axis=0))
  return total


def predictor_accuracy(masks: Sequence[jax.Array], targets: Sequence[jax.Array]) -> jax.Array:
  """The fraction of (input, channel) pairs, over all layers, where the binary mask equals the target."""
  if len(masks) != len(targets):
    raise ValueError(f"`masks` and `targets` must have one entry per layer, got {len(masks)} and {len(targets)}.")
  for i, (m, t) in enumerate(zip(masks, targets)):
    if jnp.shape(m) != jnp.shape(t):
      raise ValueError(
        f"`masks[{i}]` and `targets[{i}]` must have equal shapes, got {jnp.shape(m)} and {jnp.shape(t)}."
      )
  hits = sum(jnp.sum(jax.lax.stop_gradient(m) == t) for m, t in zip(masks, targets))
  return hits / sum(t.size for t in targets)


# ----------------------------------------------------------------------------------------------------------------------
# FLOPs.


def conv_flops(
  active_channels: jax.Array, *, input_channels: int, spatial_sizes: Sequence[int], kernel_taps: int
) -> jax.Array:
  """Multiply-accumulates of the convolutions for each input (FTWT §3.3).

  Layer ``i`` costs ``active_i · spatial_sizes[i] · active_{i-1} · kernel_taps`` with ``active_{-1} =
  input_channels``; bias additions are not counted.

  Args:
    active_channels: (..., num_layers) number of kept output channels per layer (the dense counts for the dense cost).
    input_channels: channels of the network's input.
    spatial_sizes: output positions (H_out · W_out) of each layer.
    kernel_taps: positions of a kernel (k² for a k × k kernel).

  Returns:
    (...,) MACs per input.

  >>> float(conv_flops(jnp.array([2.0, 3.0]), input_channels=1, spatial_sizes=(16, 16), kernel_taps=9))
  1152.0
  """
  active = jnp.asarray(active_channels)
  if active.ndim < 1 or active.shape[-1] != len(spatial_sizes):
    raise ValueError(
      f"`active_channels` must have shape (..., {len(spatial_sizes)}) (one count per layer of `spatial_sizes`), "
      f"got shape {active.shape}."
    )
  if not isinstance(input_channels, int) or input_channels < 1:
    raise ValueError(f"`input_channels` must be a Python int >= 1, got {input_channels!r}.")
  if not isinstance(kernel_taps, int) or kernel_taps < 1:
    raise ValueError(f"`kernel_taps` must be a Python int >= 1, got {kernel_taps!r}.")
  active = active.astype(jnp.result_type(active.dtype, jnp.float32))
  previous = jnp.concatenate([jnp.full(active.shape[:-1] + (1,), input_channels, active.dtype), active[..., :-1]], -1)
  sizes = jnp.asarray(spatial_sizes, active.dtype)
  return jnp.sum(active * previous * sizes, axis=-1) * kernel_taps


def model_geometry(model: nn.Module, x: jax.Array) -> dict[str, Any]:
  """``input_channels``, ``spatial_sizes`` and ``kernel_taps`` of ``model`` on inputs like ``x`` (for
  :func:`conv_flops`), read from the shapes of its sown outputs."""
  features = _check_model(model)
  variables = jax.eval_shape(model.init, jax.random.key(0), x[:1])
  _, inter = jax.eval_shape(lambda v: _intermediates(model, v["params"], x[:1], [None] * len(features)), variables)
  return {
    "input_channels": int(jnp.shape(x)[-1]),
    "spatial_sizes": tuple(math.prod(inter[f"conv_{i}_output"].shape[1:-1]) for i in range(len(features))),
    "kernel_taps": math.prod(model.kernel_size),
  }


def dense_flops(model: nn.Module, x: jax.Array) -> float:
  """Convolution MACs per input of the dense ``model``."""
  return float(conv_flops(jnp.asarray(_check_model(model), jnp.float32), **model_geometry(model, x)))


def predictor_flops(model: nn.Module, x: jax.Array) -> int:
  """MACs per input of the predictors' linear maps (their overhead; pooling and softmax not counted)."""
  features = _check_model(model)
  return int(sum(c_in * c_out for c_in, c_out in zip((jnp.shape(x)[-1], *features[:-1]), features)))


class FlopsEstimate(NamedTuple):
  """FTWT's FLOPs estimate before training, from the dense pretrained network's targets.

  Attributes:
    reduction: ``1 − mean MACs / dense MACs``.
    flops: (batch,) estimated MACs per input.
    dense: the dense network's MACs per input.
    active_channels: (batch, num_layers) target counts.
  """

  reduction: jax.Array
  flops: jax.Array
  dense: float
  active_channels: jax.Array


def flops_estimate(model: nn.Module, params: Any, x: jax.Array, *, threshold: float | jax.Array) -> FlopsEstimate:
  """The FLOPs reduction FTWT predicts before training: the mass targets of the pretrained dense network at
  ``threshold`` counted by :func:`conv_flops` (§4).

  >>> from toolkit.models.cnn import CNN
  >>> model, x = CNN(features=(4, 8), num_classes=3), jax.random.normal(jax.random.key(0), (16, 8, 8, 1))
  >>> params = model.init(jax.random.key(1), x)["params"]
  >>> float(flops_estimate(model, params, x, threshold=1.0).reduction) < float(
  ...   flops_estimate(model, params, x, threshold=0.5).reduction)
  True
  """
  features = _check_model(model)
  _check_threshold(threshold)
  _, inter = _intermediates(model, params, x, [None] * len(features))
  active = jnp.stack(
    [mass_target(heatmap_scores(inter[f"conv_{i}_output"]), threshold).sum(-1) for i in range(len(features))], -1
  )
  geometry = model_geometry(model, x)
  flops = conv_flops(active, **geometry)
  dense = float(conv_flops(jnp.asarray(features, jnp.float32), **geometry))
  return FlopsEstimate(1.0 - jnp.mean(flops) / dense, flops, dense, active)


# ----------------------------------------------------------------------------------------------------------------------
# Training.


class FTWTState(NamedTuple):
  """The backbone's and the predictors' parameters, and the optimiser state over ``{"backbone", "predictors"}``."""

  params: Any
  predictors: tuple[Any, ...]
  opt_state: optax.OptState


class FTWTStepInfo(NamedTuple):
  """Per-step diagnostics: task cross-entropy, mask loss, predictor accuracy and mean convolution MACs per input."""

  task_loss: jax.Array
  mask_loss: jax.Array
  predictor_accuracy: jax.Array
  flops: jax.Array


def init(params: Any, predictors: Sequence[Any], optimizer: optax.GradientTransformation) -> FTWTState:
  """The training state; ``optimizer`` sees the pytree ``{"backbone": params, "predictors": predictors}`` (use
  ``optax.multi_transform`` for the paper's separate predictor learning rate)."""
  if not (callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))):
    raise TypeError(
      f"`optimizer` must be an optax.GradientTransformation (e.g. optax.adam(1e-3)), got {type(optimizer).__name__}."
    )
  predictors = tuple(predictors)
  return FTWTState(params, predictors, optimizer.init({"backbone": params, "predictors": predictors}))


def loss_terms(
  trainable: dict[str, Any],
  x: jax.Array,
  y: jax.Array,
  *,
  model: nn.Module,
  threshold: float | jax.Array,
  decoupled: bool = True,
  straight_through: bool = True,
) -> tuple[jax.Array, jax.Array, DynamicOutput]:
  """The task cross-entropy and the mask loss of a training forward pass, and the pass itself."""
  if not isinstance(trainable, Mapping) or not {"backbone", "predictors"} <= trainable.keys():
    raise ValueError(
      f"`trainable` must be a dict with keys 'backbone' and 'predictors', got "
      f"{sorted(trainable) if isinstance(trainable, Mapping) else type(trainable).__name__}."
    )
  if jnp.shape(y) != jnp.shape(x)[:1]:
    raise ValueError(f"`y` must have shape ({jnp.shape(x)[0]},) (one label per input), got shape {jnp.shape(y)}.")
  if not jnp.issubdtype(jnp.result_type(y), jnp.integer):
    raise TypeError(f"`y` must be integer class labels, got dtype {jnp.result_type(y)}.")
  out = dynamic_forward(
    model,
    trainable["backbone"],
    trainable["predictors"],
    x,
    threshold=threshold,
    decoupled=decoupled,
    training=True,
    straight_through=straight_through,
  )
  _checks.check_ids(y, out.logits.shape[-1], "y", "the classes")
  task = optax.losses.softmax_cross_entropy_with_integer_labels(out.logits, y).mean()
  return task, mask_loss(out.mask_logits, out.targets), out


def step(
  state: FTWTState,
  x: jax.Array,
  y: jax.Array,
  *,
  model: nn.Module,
  optimizer: optax.GradientTransformation,
  threshold: float | jax.Array,
  mask_weight: float | jax.Array = 1.0,
  decoupled: bool = True,
  straight_through: bool = True,
) -> tuple[FTWTState, FTWTStepInfo]:
  """One gradient step on ``task loss + mask_weight · mask loss`` over the backbone and the predictors (FTWT §3.4).

  ``mask_weight`` is 0 after the paper's cool-down (half of training by default in the authors' code).
  """
  trainable = {"backbone": state.params, "predictors": state.predictors}

  def objective(t):
    task, masks_loss, out = loss_terms(
      t, x, y, model=model, threshold=threshold, decoupled=decoupled, straight_through=straight_through
    )
    return task + mask_weight * masks_loss, (task, masks_loss, out)

  grads, (task, masks_loss, out) = jax.grad(objective, has_aux=True)(trainable)
  updates, opt_state = optimizer.update(grads, state.opt_state, trainable)
  trainable = optax.apply_updates(trainable, updates)
  geometry = model_geometry(model, x)
  info = FTWTStepInfo(
    task,
    masks_loss,
    predictor_accuracy(out.masks, out.targets),
    jnp.mean(conv_flops(out.active_channels, **geometry)),
  )
  return FTWTState(trainable["backbone"], tuple(trainable["predictors"]), opt_state), info


# ----------------------------------------------------------------------------------------------------------------------
# The static baseline: filter pruning by L1 norm.


def l1_channel_masks(params: Any, keep_counts: Sequence[int]) -> tuple[jax.Array, ...]:
  """Static channel masks keeping, in each convolution ``conv_i``, the ``keep_counts[i]`` filters of largest L1 norm
  (Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017): the static pruning FTWT compares with.

  >>> params = {"conv_0": {"kernel": jnp.array([[[[1.0, -3.0, 0.5]]]])}}
  >>> l1_channel_masks(params, (2,))[0].tolist()
  [1.0, 1.0, 0.0]
  """
  masks = []
  for i, keep in enumerate(keep_counts):
    kernel = params[f"conv_{i}"]["kernel"]
    width = kernel.shape[-1]
    if not isinstance(keep, (int, np.integer)) or not 0 <= keep <= width:
      raise ValueError(f"`keep_counts[{i}]` must be an int in [0, {width}], got {keep!r}.")
    norms = jnp.sum(jnp.abs(kernel), axis=tuple(range(kernel.ndim - 1)))
    order = jnp.argsort(-norms, stable=True)
    masks.append(jnp.zeros(width, kernel.dtype).at[order[: int(keep)]].set(1))
  return tuple(masks)


def uniform_keep_counts(
  features: Sequence[int], target_flops: float, *, input_channels: int, spatial_sizes: Sequence[int], kernel_taps: int
) -> tuple[int, ...]:
  """Per-layer keep counts ``max(1, ⌊f · C_i + ½⌋)`` for the smallest common fraction ``f`` whose
  :func:`conv_flops` is at least ``target_flops`` (the static network gets no fewer MACs than the target).

  >>> uniform_keep_counts((4, 8), 300.0, input_channels=1, spatial_sizes=(16, 16), kernel_taps=1)
  (3, 6)
  """
  spatial_sizes = tuple(spatial_sizes)
  channels = None if isinstance(features, str) else np.asarray(features)
  if (
    channels is None
    or channels.ndim != 1
    or channels.size == 0
    or not np.issubdtype(channels.dtype, np.number)
    or not (channels >= 1).all()
  ):
    raise ValueError(f"`features` must be a non-empty sequence of channel counts >= 1, got {features!r}.")
  if channels.size != len(spatial_sizes):
    raise ValueError(
      f"`features` and `spatial_sizes` must have one entry per layer, got {channels.size} and {len(spatial_sizes)}."
    )
  try:
    target = float(target_flops)
  except (TypeError, ValueError):
    raise TypeError(f"`target_flops` must be a number >= 0, got {target_flops!r}.") from None
  if not (math.isfinite(target) and target >= 0):
    raise ValueError(f"`target_flops` must be a finite number >= 0, got {target_flops!r}.")
  geometry = {"input_channels": input_channels, "spatial_sizes": spatial_sizes, "kernel_taps": kernel_taps}
  fractions = np.linspace(0.0, 1.0, 1001)[:, None]
  counts = np.maximum(1, np.floor(fractions * np.asarray(features) + 0.5))
  flops = np.asarray(conv_flops(jnp.asarray(counts, jnp.float32), **geometry))
  first = int(np.argmax(flops >= target_flops)) if np.any(flops >= target_flops) else len(counts) - 1
  return tuple(int(c) for c in counts[first])
