"""Benchmarks: run with `.venv/bin/python -m bench.NAME`; never part of the test suite."""
