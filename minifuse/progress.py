"""Progress for long loops, and a notice before the first Numba compile.

    for batch in progress(batches, desc="encode"):      # tqdm if installed, else a one-line bar
        ...
    compile_notice()                                    # prints once, only if the kernel cache is cold

Both write to stderr, so a program's stdout stays its result.
"""
import os
import sys
import time

_noticed = False


def progress(iterable, total=None, desc="", disable=False, file=None, leave=True):
    """``iterable`` wrapped in a progress bar on ``file`` (stderr): tqdm's when tqdm is installed,
    else a plain one-line bar redrawn at most ten times a second. ``leave=False`` erases the bar
    when the loop ends (for many short loops, such as a benchmark's repeats)."""
    if disable:
        return iterable
    file = sys.stderr if file is None else file
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    try:
        from tqdm import tqdm
    except ImportError:
        return _plain_bar(iterable, total, desc, file, leave)
    return tqdm(iterable, total=total, desc=desc or None, file=file, leave=leave)


def _plain_bar(iterable, total, desc, file, leave):
    start = last = time.perf_counter()
    done = 0
    for item in iterable:
        yield item
        done += 1
        now = time.perf_counter()
        if now - last >= 0.1:
            last = now
            file.write("\r" + _bar_line(desc, done, total, now - start))
            file.flush()
    line = _bar_line(desc, done, total, time.perf_counter() - start)
    file.write("\r" + line + "\n" if leave else "\r" + " " * len(line) + "\r")
    file.flush()


def _bar_line(desc, done, total, elapsed):
    head = f"{desc}: " if desc else ""
    if not total:
        return f"{head}{done} it, {elapsed:.1f} s"
    filled = int(20 * done / total)
    return f"{head}[{'#' * filled}{'.' * (20 - filled)}] {done}/{total}, {elapsed:.1f} s"


def kernel_cache_is_cold():
    """True when the CPU kernels have no compiled code on disk yet (a fresh clone or a new
    machine): their first use then compiles them, which takes tens of seconds once."""
    from numba.core import config
    kernel_dir = os.path.join(os.path.dirname(__file__), "kernels", "cpu")
    if config.CACHE_DIR:
        # Numba mirrors the source tree under NUMBA_CACHE_DIR; search it rather than guess its layout.
        return not any(name.endswith(".nbi") for _, _, names in os.walk(config.CACHE_DIR) for name in names)
    cache = os.path.join(kernel_dir, "__pycache__")
    return not (os.path.isdir(cache) and any(name.endswith(".nbi") for name in os.listdir(cache)))


def compile_notice(file=None):
    """Say once, before the first fused call, that Numba is about to compile (cold cache only)."""
    global _noticed
    if _noticed:
        return
    _noticed = True
    if kernel_cache_is_cold():
        print("compiling kernels, ~20 s once; cached afterwards", file=sys.stderr if file is None else file)
