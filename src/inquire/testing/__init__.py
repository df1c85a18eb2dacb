"""Builders for tests and demos: tiny models, fixture data, local servers (no pytest here)."""
