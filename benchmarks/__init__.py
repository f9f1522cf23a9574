"""Benchmarks: ``python -m benchmarks.suite`` (everything, one process) and the older single-topic scripts."""
