"""The web page over evaluation results and embedded collections (``inquire serve``).

Importing this package is light; FastAPI, Jinja2 and uvicorn load in :mod:`inquire.web.app`,
:mod:`inquire.web.security` and :mod:`inquire.web.server` only.
"""

from __future__ import annotations

from inquire.web.config import WebConfig

__all__ = ["WebConfig"]
