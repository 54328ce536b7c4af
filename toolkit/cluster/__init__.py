"""Clustering: divisive partitions validated by Gaussian mixtures (``ppp``) and physics-informed clustering of PDE
snapshots for local reduced-order bases (``rom_cluster``). Generic names (``ppp.fit``) are reached through their
module.
"""
