"""The package's own mock kit: tiny models, fixture files and fake servers for tests.

Free of pytest imports; every builder works offline.
"""
