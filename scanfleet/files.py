"""File helpers written once: the sha256 of a file and atomic writes (temporary file, rename).

A file written with :func:`atomic_path` or :func:`atomic_write` is either the old one or the whole new
one, never half written: the text goes to a temporary file next to the target (same directory, so the
rename stays on one file system), which is renamed over the target only when the block succeeds; on any
error the temporary file is removed and the target is left untouched.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from scanfleet.job_model import sha256_file as sha256_file  # one implementation, on the hosts and here


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, mode: int = 0o644, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to PATH; when the block succeeds, give it MODE and rename it to PATH.

    The block writes the temporary file itself (or has a program write it) and may check it before it
    is published. DURABLE: fsync the file before the rename.
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if durable:
            _fsync(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], *, binary: bool = False, mode: int = 0o644,
                 durable: bool = False, newline: str | None = "\n") -> Iterator[IO[Any]]:
    """Open a file to write PATH atomically (see :func:`atomic_path`): UTF-8 text, or bytes with BINARY."""
    with atomic_path(path, mode=mode, durable=durable) as tmp:
        if binary:
            with open(tmp, "wb") as handle:
                yield handle
        else:
            with open(tmp, "w", encoding="utf-8", newline=newline) as handle:
                yield handle
