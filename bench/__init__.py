"""Benchmarks of the resident data vault; `python -m bench all` runs the whole suite."""
