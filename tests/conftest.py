"""Shared fixtures: a PRNG key and float64 mode."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import jax
import pytest
from hypothesis import settings

# Property tests draw a fixed set of examples, so a red run can be replayed; HYPOTHESIS_PROFILE=explore draws new
# ones each run (for hunting, not for CI).
settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def key():
  return jax.random.key(0)


@pytest.fixture
def x64():
  """Runs the test with float64 enabled (jax's default dtype becomes float64 inside)."""
  with jax.enable_x64(True):
    yield
