"""Fixtures for the whole suite (tests/ and the docstring examples of toolkit/)."""

import gc

import jax
import pytest


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
  """Drops JAX's compiled programs after each test module.

  An xdist worker runs hundreds of modules; their compilation caches used to grow to ~6.5 GB per worker, and XLA's
  compiler crashed (a segmentation fault) late in the run when the two workers and the notebook kernels shared the
  24 GiB of the CI machine.
  """
  yield
  jax.clear_caches()
  gc.collect()
