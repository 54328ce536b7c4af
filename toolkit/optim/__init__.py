"""Optimizer pieces as ``optax.GradientTransformation``s."""

from toolkit.optim.perpgrad import perp_adamw
from toolkit.optim.perpgrad import perpgrad
from toolkit.optim.perpgrad import PerpGradState

__all__ = ["perp_adamw", "perpgrad", "PerpGradState"]
