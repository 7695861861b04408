"""The safetensors file format, read and written with NumPy alone, and an atomic file write.

    file = n (8 bytes, little-endian u64) | header (n bytes of JSON, space-padded) | data
    header = {name: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, ...,
              "__metadata__": {str: str}}           offsets are relative to the start of data

Every header entry is checked against the file before any data is read, so a truncated or
corrupt file is one clear ``ValueError`` naming the file and the tensor, never a NumPy error or
a partly filled array. Files are bit-compatible with the ``safetensors`` package.
"""
from __future__ import annotations

import json
import math
import os
import struct
import tempfile

import numpy as np

from . import dtypes

__all__ = ["read", "write", "atomic_write", "SafetensorsFileError"]

METADATA = "__metadata__"
MAX_HEADER = 100_000_000   # the safetensors package's limit

CODES = {"BOOL": np.bool_, "U8": np.uint8, "I8": np.int8, "U16": np.uint16, "I16": np.int16,
         "U32": np.uint32, "I32": np.int32, "U64": np.uint64, "I64": np.int64,
         "F16": np.float16, "F32": np.float32, "F64": np.float64}
CODES = {k: np.dtype(v).newbyteorder("<") for k, v in CODES.items()}
if dtypes.bfloat16 is not None:
    CODES["BF16"] = dtypes.bfloat16
NAMES = {v.newbyteorder("="): k for k, v in CODES.items()}


class SafetensorsFileError(ValueError):
    """A file is not a valid safetensors file, or holds what minifuse cannot load."""


def code_of(dtype):
    """The safetensors dtype code of a NumPy dtype, or None when the format has none here."""
    return NAMES.get(np.dtype(dtype).newbyteorder("="))


def write(f, arrays, metadata):
    """Write ``{name: C-contiguous ndarray}`` and ``{str: str}`` metadata to the binary file ``f``."""
    header, offset = {}, 0
    for name, a in arrays.items():
        header[name] = {"dtype": code_of(a.dtype), "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    header[METADATA] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)   # the data starts 8-byte aligned, as the package writes it
    f.write(struct.pack("<Q", len(text)))
    f.write(text)
    for a in arrays.values():
        write_array(f, a)


def write_array(f, a):
    little = a.astype(a.dtype.newbyteorder("<"), copy=False)
    if little.nbytes:
        f.write(little.reshape(-1).view(np.uint8).data)


def read(path):
    """``path`` -> ({name: ndarray}, metadata dict), every entry checked before data is read."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        def bad(what):
            return SafetensorsFileError(f"{path} is not a valid safetensors file (corrupt or truncated?): {what}")
        if size < 8:
            raise bad(f"the file has {size} bytes, fewer than the 8 of the header length")
        (n,) = struct.unpack("<Q", f.read(8))
        if n > min(MAX_HEADER, size - 8):
            raise bad(f"the header length {n} exceeds the {size - 8} bytes after it")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, ValueError) as e:
            raise bad(f"the header is not JSON ({e})") from None
        if not isinstance(header, dict):
            raise bad(f"the header is a JSON {type(header).__name__}, not an object")
        metadata = header.pop(METADATA, None) or {}
        data = size - 8 - n
        entries = {name: _entry(path, name, e, data, bad) for name, e in header.items()}
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise bad("__metadata__ must map strings to strings")
        arrays = {}
        for name, (dtype, shape, begin) in entries.items():
            a = np.empty(shape, dtype)
            f.seek(8 + n + begin)
            if a.nbytes and f.readinto(a.reshape(-1).view(np.uint8).data) != a.nbytes:
                raise bad(f"tensor '{name}' could not be read in full")   # the file shrank meanwhile
            arrays[name] = a.astype(a.dtype.newbyteorder("="), copy=False)
    return arrays, metadata


def _entry(path, name, e, data, bad):
    """Check one header entry against the data size: -> (dtype, shape, begin)."""
    if not isinstance(e, dict) or not {"dtype", "shape", "data_offsets"} <= set(e):
        raise bad(f"tensor '{name}' has no dtype, shape and data_offsets: {e!r}")
    code, shape, offsets = e["dtype"], e["shape"], e["data_offsets"]
    if code not in CODES:
        hint = " (bfloat16 needs ml_dtypes: pip install 'minifuse[bfloat16]')" if code == "BF16" else ""
        raise SafetensorsFileError(f"{path}: tensor '{name}' has dtype {code!r}, which minifuse cannot load; "
                                   f"supported: {', '.join(CODES)}{hint}")
    ints = isinstance(shape, list) and isinstance(offsets, list) and len(offsets) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in shape + offsets)
    if not ints:
        raise bad(f"tensor '{name}': shape {shape!r} and data_offsets {offsets!r} must be non-negative integers")
    nbytes = math.prod(shape) * CODES[code].itemsize
    begin, end = offsets
    if end - begin != nbytes:
        raise bad(f"tensor '{name}' of dtype {code} and shape {tuple(shape)} needs {nbytes} bytes, "
                  f"its data_offsets {offsets} span {end - begin}")
    if end > data:
        raise bad(f"tensor '{name}' ends at byte {end} of the data, but the file holds only {data} bytes of data")
    return CODES[code], tuple(shape), begin


def atomic_write(path, write_fn, caller):
    """Run ``write_fn(f)`` on a new file that replaces ``path`` only once it is complete.

    The new file has no name while it is written (Linux ``O_TMPFILE``): an exception, a kill or a
    power cut leaves ``path`` as it was and nothing else behind. Where the file system has no
    unnamed files, a hidden temporary file beside ``path`` is removed on any exception (a killed
    process leaves it). A symlink is written through: its target is replaced, the link stays.
    OS errors name ``path``, not the temporary file."""
    shown = os.fspath(path)
    dest = os.path.realpath(shown)
    folder = os.path.dirname(dest)
    try:
        mode = os.stat(dest).st_mode & 0o7777
    except FileNotFoundError:
        mode = None
    named = None
    try:
        try:
            if not os.path.isdir("/proc/self/fd"):
                raise OSError("unnamed files are linked through /proc/self/fd")
            fd = os.open(folder, os.O_TMPFILE | os.O_WRONLY, 0o666)
        except (AttributeError, OSError):
            fd, named = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(dest)}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            elif named is not None:   # mkstemp makes 0600; a saved file gets the usual 0666 & ~umask
                umask = os.umask(0)
                os.umask(umask)
                os.fchmod(f.fileno(), 0o666 & ~umask)
            if named is None:
                named = _link(f.fileno(), dest, folder)
        if named is not None:
            os.replace(named, dest)
            named = None
    except OSError as e:
        raise type(e)(e.errno, f"{caller}: cannot write {shown}: {e.strerror}") from e
    finally:
        if named is not None:
            try:
                os.unlink(named)
            except OSError:
                pass


def _link(fd, dest, folder):
    """Give the unnamed file ``fd`` the name ``dest``: directly when ``dest`` does not exist,
    else a temporary name (returned, for the caller to rename over ``dest``)."""
    proc = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)
    try:   # linkat(/proc/self/fd/N, AT_SYMLINK_FOLLOW) links the open file itself
        def link(name):
            os.link(str(fd), name, src_dir_fd=proc, follow_symlinks=True)
        try:
            link(dest)
            return None
        except FileExistsError:
            pass
        while True:
            tmp = os.path.join(folder, f".{os.path.basename(dest)}.{os.urandom(6).hex()}.tmp")
            try:
                link(tmp)
                return tmp
            except FileExistsError:
                continue
    finally:
        os.close(proc)
