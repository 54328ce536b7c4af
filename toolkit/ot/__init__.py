"""Optimal transport on ott-jax."""

from toolkit.ot.sinkhorn_newton_sparse import SinkhornNewtonSparse
from toolkit.ot.sinkhorn_newton_sparse import SNSOutput
from toolkit.ot.sinkhorn_newton_sparse import dual_objective
from toolkit.ot.sinkhorn_newton_sparse import solve

__all__ = ["SinkhornNewtonSparse", "SNSOutput", "dual_objective", "solve"]
