"""Optimizer pieces as ``optax.GradientTransformation``s."""

from toolkit.optim.perpgrad import PerpGradState, perp_adamw, perpgrad

__all__ = ["PerpGradState", "perp_adamw", "perpgrad"]
