"""The package's own mock kit: tiny deterministic models and data builders for tests and demos."""
