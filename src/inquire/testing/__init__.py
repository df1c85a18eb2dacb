"""Builders for tests and demos: fixture servers, tiny models, synthetic results.

None of this imports pytest; every area's tests may use any of it.
"""
