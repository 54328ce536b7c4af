"""A small convolutional classifier in flax linen, with per-channel masks and sown activations.

The masks and the sown activations are what channel-pruning methods need: dynamic pruning (FTWT, arXiv 2110.08232)
multiplies each layer's output channels by a per-example mask predicted from that layer's input, and computes its
self-supervised target from the layer's unmasked output.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class CNN(nn.Module):
  """Convolutions (``kernel_size``, 'SAME' padding, bias) each followed by a ReLU, global average pooling over the
  spatial axes, and a dense head named ``head``.

  Inputs are (batch, H, W, C) for a 2-D ``kernel_size`` and (batch, L, C) for a 1-D one. Layer ``i`` is named
  ``conv_i``; under the collection ``"intermediates"`` it sows ``conv_i_input`` (its input) and ``conv_i_output``
  (its post-ReLU output before any mask).

  >>> model = CNN(features=(4, 8), num_classes=3)
  >>> variables = model.init(jax.random.key(0), jnp.ones((2, 8, 8, 1)))
  >>> logits, state = model.apply(variables, jnp.ones((2, 8, 8, 1)), mutable=["intermediates"])
  >>> logits.shape, state["intermediates"]["conv_1_output"][0].shape
  ((2, 3), (2, 8, 8, 8))
  """

  features: Sequence[int] = (16, 32, 32)
  num_classes: int = 10
  kernel_size: Sequence[int] = (3, 3)

  def _check(self, x: jax.Array, channel_masks: Sequence[jax.Array | None] | None) -> None:
    spatial = len(self.kernel_size)
    if x.ndim != spatial + 2:
      raise ValueError(
        f"`x` must have shape (batch, {', '.join(['spatial'] * spatial)}, channels) for kernel_size "
        f"{tuple(self.kernel_size)}, got shape {x.shape}."
      )
    if channel_masks is not None:
      if len(channel_masks) != len(self.features):
        raise ValueError(
          f"`channel_masks` must have one entry per layer ({len(self.features)}), got {len(channel_masks)}."
        )
      for i, (mask, width) in enumerate(zip(channel_masks, self.features)):
        if mask is not None and (mask.ndim not in (1, 2) or mask.shape[-1] != width):
          raise ValueError(f"`channel_masks[{i}]` must have shape ({width},) or (batch, {width}), got {mask.shape}.")

  def _trunk(self, x: jax.Array, channel_masks: Sequence[jax.Array | None] | None) -> jax.Array:
    self._check(x, channel_masks)
    for i, width in enumerate(self.features):
      self.sow("intermediates", f"conv_{i}_input", x)
      x = nn.relu(nn.Conv(width, tuple(self.kernel_size), padding="SAME", name=f"conv_{i}")(x))
      self.sow("intermediates", f"conv_{i}_output", x)
      mask = None if channel_masks is None else channel_masks[i]
      if mask is not None:
        # A (batch, C) mask broadcasts over the spatial axes between batch and channels.
        x = x * (
          mask.reshape(mask.shape[:1] + (1,) * len(self.kernel_size) + mask.shape[1:]) if mask.ndim == 2 else mask
        )
    return jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))

  @nn.compact
  def __call__(
    self, x: jax.Array, channel_masks: Sequence[jax.Array | None] | None = None, *, return_features: bool = False
  ) -> jax.Array:
    """Logits (batch, num_classes), or with ``return_features`` the pooled features (batch, features[-1]) that the
    head reads; ``channel_masks[i]`` ((C_i,) or (batch, C_i), or None) scales layer i's output channels."""
    pooled = self._trunk(x, channel_masks)
    head = nn.Dense(self.num_classes, name="head")
    if return_features:
      return pooled
    return head(pooled)
