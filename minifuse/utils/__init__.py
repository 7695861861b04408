"""minifuse.utils: helpers around training (``minifuse.utils.data``: datasets and loaders)."""
from . import data  # noqa: F401
