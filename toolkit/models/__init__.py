"""Small flax models shared by the experiments."""

from toolkit.models.mlp import MLP

__all__ = ["MLP"]
