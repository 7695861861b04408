"""``progress(iterable, total, desc)``: a progress bar on stderr, tqdm's when it is installed.

Without tqdm the bar is one line redrawn in place (``desc: 3/10 [=====     ]``), at most a few
times a second, and finished with a newline.
"""
from __future__ import annotations

import sys
import time

__all__ = ["progress"]


def progress(iterable, total=None, desc="", enabled=True, file=None):
    """Yield from ``iterable`` while drawing a bar of ``total`` steps (``len(iterable)`` by default)."""
    if not enabled:
        return iter(iterable)
    total = len(iterable) if total is None else total
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _plain(iterable, total, desc, file or sys.stderr)
    return iter(tqdm(iterable, total=total, desc=desc or None, file=file))


def _plain(iterable, total, desc, file, width=30, every=0.2):
    last = 0.0

    def draw(done):
        filled = width * done // max(total, 1)
        file.write(f"\r{desc + ': ' if desc else ''}{done}/{total} [{'=' * filled}{' ' * (width - filled)}]")
        file.flush()

    done = 0
    draw(0)
    for item in iterable:
        yield item
        done += 1
        if time.monotonic() - last >= every or done == total:
            draw(done)
            last = time.monotonic()
    file.write("\n")
    file.flush()
