"""Where inquire keeps its cache, and where it downloads from.

- ``INQUIRE_HOME``: the cache folder (default: the user's cache dir, e.g. ``~/.cache/inquire``).
- ``INQUIRE_BASE_URL``: a mirror; every artifact URL is rewritten to
  ``{INQUIRE_BASE_URL}/{artifact.mirror_path}`` (an ``http(s)://`` or ``file://`` URL, or a
  local folder; see :mod:`inquire.data.download`).
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_HOME = "INQUIRE_HOME"
ENV_BASE_URL = "INQUIRE_BASE_URL"


def home() -> Path:
    """The cache root (created on first use)."""
    env = os.environ.get(ENV_HOME)
    if env:
        root = Path(env).expanduser()
    else:
        from platformdirs import user_cache_dir

        root = Path(user_cache_dir("inquire"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def cache_dir(*parts: str) -> Path:
    """A sub-folder of the cache root, created on first use."""
    path = home().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def base_url() -> str | None:
    """The mirror base URL, or None to use each artifact's upstream URL."""
    value = os.environ.get(ENV_BASE_URL, "").strip()
    return value.rstrip("/") or None
