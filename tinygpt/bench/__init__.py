"""Benchmarks, run as `python -m tinygpt.bench NAME`."""
