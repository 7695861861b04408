"""minifuse.utils: data loading helpers."""
