"""Where the toolkit keeps what it computes once and reuses: pretrained checkpoints, trained score networks.

The directory is ``$TOOLKIT_CACHE_DIR`` when set, else ``$XDG_CACHE_HOME/toolkit``, else ``~/.cache/toolkit``:
the user's cache, never the installed package or the working tree.

>>> import os, tempfile
>>> os.environ["TOOLKIT_CACHE_DIR"] = tempfile.mkdtemp()
>>> path = cache_dir("models") / "weights.bin"
>>> write_atomically(path, b"123")
>>> path.read_bytes()
b'123'
>>> del os.environ["TOOLKIT_CACHE_DIR"]
"""

from __future__ import annotations

import os
import pathlib
import tempfile

CACHE_DIR_ENV = "TOOLKIT_CACHE_DIR"


def cache_dir(*parts: str) -> pathlib.Path:
  """The toolkit's cache directory (or a folder under it), created if missing."""
  for part in parts:
    if not isinstance(part, str | os.PathLike):
      raise TypeError(f"`parts` must be folder names (str), got {part!r}.")
    # An absolute part or a `..` would put the folder outside the cache, where nothing cleans it up.
    if os.path.isabs(part) or ".." in pathlib.PurePath(part).parts:
      raise ValueError(f"`parts` must be relative folder names inside the cache, without '..', got {part!r}.")
  root = os.environ.get(CACHE_DIR_ENV)
  if not root:
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    root = os.path.join(xdg, "toolkit")
  path = pathlib.Path(root, *parts)
  path.mkdir(parents=True, exist_ok=True)
  return path


def write_atomically(path: str | os.PathLike, data: bytes) -> None:
  """Writes ``data`` to ``path`` through a temporary file and a rename, so a reader never sees half a file."""
  if not isinstance(path, str | os.PathLike):
    raise TypeError(f"`path` must be a str or os.PathLike, got {type(path).__name__}.")
  if not isinstance(data, bytes | bytearray | memoryview):
    raise TypeError(f"`data` must be bytes (encode text first), got {type(data).__name__}.")
  path = pathlib.Path(path)
  if path.is_dir():
    raise ValueError(f"`path` must name a file, got the directory {str(path)!r}.")
  path.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name + ".", suffix=".tmp", delete=False) as f:
    try:
      f.write(data)
    except BaseException:
      # A failed write (disk full, interrupted) must not leave its temporary file behind in the cache.
      os.unlink(f.name)
      raise
  os.chmod(f.name, 0o644)  # NamedTemporaryFile creates 0600: make the file readable like any other
  os.replace(f.name, path)
