"""A multi-layer perceptron in flax linen."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import flax.linen as nn
import jax

# PyTorch's nn.Linear default, U(±1/sqrt(fan_in)): the initialisation the papers' PyTorch code trained with.
torch_linear_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


class MLP(nn.Module):
  """ReLU MLP; the last entry of ``features`` is the output width (logits, no activation).

  With ``use_bias=False`` the network is positively homogeneous of degree ``len(features)``:
  ``f(c θ) = c^L f(θ)``, the property behind naïve loss minimisation in arXiv 2501.04697.
  """

  features: Sequence[int]
  use_bias: bool = False

  def __post_init__(self):
    if not self.features or not all(
      isinstance(w, numbers.Integral) and not isinstance(w, bool) and w >= 1 for w in self.features
    ):
      raise ValueError(f"`features` must be a non-empty sequence of positive ints (layer widths), got {self.features}.")
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i, width in enumerate(self.features):
      x = nn.Dense(width, use_bias=self.use_bias, kernel_init=torch_linear_init, name=f"dense_{i}")(x)
      if i < len(self.features) - 1:
        x = nn.relu(x)
    return x
