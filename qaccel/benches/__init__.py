"""Benchmarks run by ``make bench`` (see ``qaccel/bench.py``)."""
