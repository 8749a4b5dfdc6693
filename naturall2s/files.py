"""Atomic file writes: the one way this package writes a file that must never be seen half-written."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary path next to ``path`` (same suffix, so writers that go by the extension pick the same
    format); when the block succeeds it replaces ``path`` (mode 0644), when it fails it is removed.

        with atomic_path("out.wav") as tmp:
            soundfile.write(tmp, wav, 16000)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".part{path.suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a written result is readable like any other file
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
