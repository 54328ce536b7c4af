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
  root = os.environ.get(CACHE_DIR_ENV)
  if not root:
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    root = os.path.join(xdg, "toolkit")
  path = pathlib.Path(root, *parts)
  path.mkdir(parents=True, exist_ok=True)
  return path


def write_atomically(path: str | os.PathLike, data: bytes) -> None:
  """Writes ``data`` to ``path`` through a temporary file and a rename, so a reader never sees half a file."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name + ".", suffix=".tmp", delete=False) as f:
    f.write(data)
  os.chmod(f.name, 0o644)  # NamedTemporaryFile creates 0600: make the file readable like any other
  os.replace(f.name, path)
