"""Atomic file writes: a reader sees the old file or the complete new one, never a torn write."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO


@contextmanager
def atomic_open(path: str | os.PathLike, mode: int | None = None) -> Iterator[BinaryIO]:
    """A binary file to write ``path`` through: a temp file in the same folder, fsynced, then
    renamed over ``path`` when the block ends cleanly; removed when it raises.

    For writers that stream (``np.savez`` of a dataset) rather than hold the bytes. ``mode``
    sets the permissions (mkstemp's are 0600, private to the owner); None keeps those.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same folder, fsync, rename."""
    with atomic_open(path) as f:
        f.write(data)


def _json_safe(value: Any) -> Any:
    """NaN/inf are not JSON: store them as null so every reader can parse the file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_json_atomic(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    atomic_write_bytes(path, (json.dumps(_json_safe(payload), indent=2, sort_keys=True) + "\n").encode())
