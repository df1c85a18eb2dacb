"""The web pages (FastAPI). Imported only by ``inquire web`` and the page tests."""
