"""Multi-device tests: run in their own process with 8 CPU devices (``make test`` does this):

XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m pytest tests/multidevice
"""

import jax
import pytest

NUM_DEVICES = 8


def pytest_collection_modifyitems(config, items):
  del config
  if jax.device_count() < NUM_DEVICES:
    skip = pytest.mark.skip(
      reason=f"needs {NUM_DEVICES} devices: run with XLA_FLAGS=--xla_force_host_platform_device_count={NUM_DEVICES}"
    )
    for item in items:
      item.add_marker(skip)
