"""Optimizer pieces as ``optax.GradientTransformation`` objects."""

from toolkit.optim.perpgrad import PerpGradState, perp_adamw, perpgrad

__all__ = ["PerpGradState", "perp_adamw", "perpgrad"]
