"""Files written so that a crash never leaves half of one: the one atomic writer of the package.

Every run file (checkpoints, training state, persisted flows, run records) is written to a temporary file in the
same folder, flushed to disk, then moved over the final name with ``os.replace`` (atomic on POSIX and Windows).
A reader sees the old file or the new one, never a truncated one, whatever moment a process is killed.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[BinaryIO], object]) -> Path:
    """Write ``data`` to ``path`` atomically and return the path.

    Args:
        path: the final file name; its folder must exist.
        data: bytes, text (written as UTF-8), or a function that writes into the open binary stream (for
            example ``lambda stream: torch.save(obj, stream)``).
    Raises:
        FileNotFoundError: the folder does not exist (named in the message).
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {path.parent} does not exist")
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            if callable(data):
                data(stream)
            else:
                stream.write(data.encode("utf-8") if isinstance(data, str) else data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
