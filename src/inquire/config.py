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


def home_path() -> Path:
    """The cache root, as configured (not created, not checked)."""
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("inquire"))


def _make_folder(path: Path) -> None:
    """Create ``path`` (and its parents) or raise an InputError naming it and the fix."""
    from inquire.errors import InputError

    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise InputError(
            f"{str(path)!r} is a file, not a folder; inquire keeps its cache in a folder: set "
            f"{ENV_HOME} to a folder (or move that file away)"
        ) from None
    except OSError as exc:
        raise InputError(
            f"cannot create the folder {str(path)!r} ({exc.strerror or exc}); set {ENV_HOME} to "
            "a folder you can write, or create it first"
        ) from None


def home() -> Path:
    """The cache root (created on first use; an existing read-only folder is fine for
    commands that only read)."""
    root = home_path()
    _make_folder(root)
    return root


def cache_path(*parts: str) -> Path:
    """A sub-folder of the cache root, neither created nor checked (for readers: a folder that
    does not exist yet simply holds nothing)."""
    root = home_path()
    if root.exists() and not root.is_dir():
        from inquire.errors import InputError

        raise InputError(
            f"{ENV_HOME} points at {str(root)!r}, which is a file, not a folder; set "
            f"{ENV_HOME} to a folder"
        )
    return root.joinpath(*parts)


def cache_dir(*parts: str) -> Path:
    """A sub-folder of the cache root, created on first use."""
    home()
    path = cache_path(*parts)
    _make_folder(path)
    return path


def base_url() -> str | None:
    """The mirror base URL, or None to use each artifact's upstream URL."""
    value = os.environ.get(ENV_BASE_URL, "").strip()
    return value.rstrip("/") or None
