"""minifuse.nn: layers and the functions they are made of."""
from . import functional
