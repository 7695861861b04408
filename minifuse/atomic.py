"""Atomic file writes: a reader sees the old file or the whole new one, never half of one."""
import os
import tempfile


def write_atomic(path, write):
    """``write(file)`` into a temporary file beside ``path`` (binary mode), then rename it over
    ``path``; on any failure the temporary file is removed and ``path`` is left as it was."""
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".minifuse-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
