"""Builders for tests, the demo and benchmarks: fixture servers, tiny models, synthetic data
and results.

Only tests, :mod:`inquire.demo` and ``benchmarks/`` import this package; the library, the
command line and the web page never do. None of it imports pytest; every area's tests may
use any of it.
"""
