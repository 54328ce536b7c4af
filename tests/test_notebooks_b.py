"""The notebooks of shard 1 of tests/test_notebooks.py (see its NUM_SHARDS)."""

import os

import pytest

from tests.test_notebooks import run_and_check, shard


@pytest.mark.slow
@pytest.mark.parametrize("path", shard(1), ids=os.path.basename)
def test_notebook_executes(path):
  run_and_check(path)
