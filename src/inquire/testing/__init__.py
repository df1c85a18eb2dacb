"""Builders for tests and demos: tiny models, fake servers, synthetic files."""
