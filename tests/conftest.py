"""Shared fixtures: a PRNG key and float64 mode."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import jax
import pytest


@pytest.fixture
def key():
  return jax.random.key(0)


@pytest.fixture
def x64():
  """Runs the test with float64 enabled (jax's default dtype becomes float64 inside)."""
  with jax.enable_x64(True):
    yield
