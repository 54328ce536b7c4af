"""The cache directory: where it lives, atomic writes, and the bad paths and data it refuses."""

import os

import pytest

from toolkit import cache


def test_cache_dir_follows_the_environment_and_writes_atomically(tmp_path, monkeypatch):
  monkeypatch.setenv("TOOLKIT_CACHE_DIR", str(tmp_path / "c"))
  path = cache.cache_dir("models", "lm") / "weights.bin"
  assert path.parent == tmp_path / "c" / "models" / "lm" and path.parent.is_dir()
  cache.write_atomically(path, b"123")
  assert path.read_bytes() == b"123" and os.listdir(path.parent) == ["weights.bin"]


@pytest.mark.parametrize(
  ("parts", "error"),
  [(("/etc",), ValueError), (("models", "../.."), ValueError), ((3,), TypeError), ((None,), TypeError)],
)
def test_cache_dir_bad_parts(tmp_path, monkeypatch, parts, error):
  monkeypatch.setenv("TOOLKIT_CACHE_DIR", str(tmp_path))
  with pytest.raises(error, match="`parts`"):
    cache.cache_dir(*parts)


def test_write_atomically_bad_path_or_data_leaves_nothing_behind(tmp_path):
  with pytest.raises(TypeError, match="`data`"):
    cache.write_atomically(tmp_path / "a.bin", "text, not bytes")
  with pytest.raises(TypeError, match="`data`"):
    cache.write_atomically(tmp_path / "a.bin", None)
  with pytest.raises(TypeError, match="`path`"):
    cache.write_atomically(3, b"1")
  (tmp_path / "folder").mkdir()
  with pytest.raises(ValueError, match="`path`"):
    cache.write_atomically(tmp_path / "folder", b"1")
  # These used to fail after creating the temporary file, which stayed in the cache.
  assert os.listdir(tmp_path) == ["folder"]
