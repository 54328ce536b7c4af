"""Experiment binaries: one absl binary per paper, plus ``reproduce`` (the main job) and ``bench_*``."""
