"""Atomic files: every result, checkpoint and cached download is written to a temporary file
in its folder and renamed over the target, so a crash, a full disk or Ctrl-C never leaves a
partial file under the final name. The file gets the usual permissions (mkstemp makes 0600;
results and checkpoints are for sharing, as the user's umask allows)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)


def shareable(path) -> None:
    """The permissions a plainly created file would have (0666 less the umask)."""
    os.chmod(path, 0o666 & ~_UMASK)


def write_atomic(target, data, *, fsync: bool = False) -> Path:
    """`data` (str, bytes, or a callable that writes a given temporary path) -> `target`, via a
    temporary file in the same folder and a rename: never a partial file, even on Ctrl-C.
    `fsync`: flushed to the disk before the rename (checkpoints: a power cut keeps the last
    complete one)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=target.suffix, dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, str):
                f.write(data.encode())
            elif isinstance(data, bytes):
                f.write(data)
        if callable(data):
            data(tmp)
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        shareable(tmp)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return target
