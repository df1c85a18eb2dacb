"""Exceptions raised by inquire. Every message names the bad value and how to fix it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class InquireError(Exception):
    """Base class for every error inquire raises on bad input or state."""


class InputError(InquireError, ValueError):
    """A file, argument or array does not have the expected form."""


class UnknownNameError(InquireError, KeyError):
    """A name (model, artifact, split, metric, ...) is not in its registry."""

    def __init__(self, kind: str, name: str, valid: Iterable[str]) -> None:
        valid = sorted(valid)
        self.kind, self.name, self.valid = kind, name, valid
        close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        shown = ", ".join(valid[:30]) + (" ..." if len(valid) > 30 else "")
        listed = f" Valid names: {shown}" if valid else f" There is no {kind} yet."
        super().__init__(f"unknown {kind} {name!r}.{hint}{listed}")

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0])


class DownloadError(InquireError, OSError):
    """An artifact could not be fetched or failed its integrity check."""


class ChecksumError(DownloadError):
    """Downloaded bytes do not match the registered size or checksum."""


def suggest(name: str, valid: Iterable[str]) -> str:
    """Return ' Did you mean ...?' for close matches of ``name`` in ``valid`` (or '')."""
    close = difflib.get_close_matches(name, list(valid), n=3, cutoff=0.5)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


class BusyError(InquireError):
    """Another process is writing to the same folder (an embedding folder, a collection)."""
