"""Builders for tests: tiny stores, models and servers (no pytest imports)."""
