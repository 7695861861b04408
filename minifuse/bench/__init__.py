"""Benchmarks: `python -m minifuse.bench` lists them."""
