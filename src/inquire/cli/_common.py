"""Helpers shared by the CLI modules: one place that turns failures into one-line messages.

:func:`error_message` is the rule, used by :func:`friendly_errors` (every command) and by
``main()``: inquire's own errors are printed as they are; a full disk (``ENOSPC``,
``EDQUOT``, or numpy's short write "N requested and M written"), a folder that cannot be
written (``EACCES``, ``EPERM``, ``EROFS``, SQLite's read-only database) and SQLite's "database
or disk is full" become one line naming the folder and what to do. Anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import sqlite3
import threading
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar, overload

import typer

F = TypeVar("F", bound=Callable[..., Any])

# (kwargs of the command) -> a sentence on what was kept and how to go on, or "".
Hint = Callable[[dict[str, Any]], str]

_FULL = (errno.ENOSPC, errno.EDQUOT)
_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)
_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")  # numpy's tofile on a full disk
_FULL_TEXT = ("no space left on device", "disk quota exceeded", "database or disk is full")


def _home() -> str:
    from inquire import config

    return str(config.home_path())


def _folder_of(exc: BaseException, out: Path | None = None) -> str:
    """The folder a failed write was aimed at: the file's folder when the error names it, else
    the command's ``--out`` folder (``out``), else the cache root."""
    name = getattr(exc, "filename", None)
    if name:
        p = Path(str(name))
        return str(p if p.is_dir() else p.parent)
    if out is not None and not isinstance(exc, sqlite3.Error):  # the database is in the cache
        return str(out)
    return _home()


def _out_folder(kwargs: dict[str, Any]) -> Path | None:
    """The folder a command writes its output to (its ``--out``: a folder, or a file's folder),
    or None when it has none (it writes in the cache)."""
    out = kwargs.get("out")
    if not isinstance(out, Path):
        return None
    return out if out.is_dir() or not out.suffix else out.parent


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk (or the user's quota) is full."""
    if isinstance(exc, OSError) and exc.errno in _FULL:
        return True
    text = str(exc).lower()
    return isinstance(exc, OSError | sqlite3.OperationalError) and (
        any(t in text for t in _FULL_TEXT) or bool(_SHORT_WRITE.search(text))
    )


def not_writable(exc: BaseException) -> bool:
    """Whether ``exc`` says a file or folder cannot be written (permissions, read-only)."""
    if isinstance(exc, sqlite3.OperationalError):
        return "readonly database" in str(exc)
    return isinstance(exc, PermissionError) or (
        isinstance(exc, OSError) and exc.errno in _NOT_WRITABLE
    )


def error_message(exc: BaseException, hint: str = "", out: Path | None = None) -> str | None:
    """The one-line message for ``exc``, or None when it is not a user's problem (a bug).
    ``out``: the folder the command writes its output to (named when a full disk's error
    does not say which file it was writing)."""
    from inquire.errors import InquireError

    tail = f"; {hint}" if hint else ""
    if isinstance(exc, InquireError):
        return f"{exc}"
    if disk_full(exc):
        return (
            f"the disk is full: no space left to write in {_folder_of(exc, out)!r} ({exc}); free "
            f"some space there{tail or ' and run the command again'}"
        )
    if not_writable(exc):
        what = getattr(exc, "filename", None)
        if what and out is not None and Path(str(what)).resolve().is_relative_to(out.resolve()):
            return (  # the command's own --out, not the cache: INQUIRE_HOME would not help
                f"cannot write in {str(out)!r}: it is not writable "
                f"({getattr(exc, 'strerror', None) or exc}); choose an --out you can write"
            )
        where = repr(str(what)) if what else f"the cache folder {_home()!r}"
        return (
            f"cannot write {where}: it is not writable ({getattr(exc, 'strerror', None) or exc});"
            f" commands that only read work there, this one must write: make it writable or set "
            f"INQUIRE_HOME to a folder you can write"
        )
    return None


def say(text: str, colour: str) -> None:
    """``text`` on stderr in ``colour``, or plain where NO_COLOR is set (https://no-color.org:
    present and not empty), as rich's tables already are."""
    if os.environ.get("NO_COLOR"):
        typer.echo(text, err=True)
    else:
        typer.secho(text, fg=colour, err=True)


def _said(hint: Hint | None, kwargs: dict[str, Any]) -> str:
    """``hint(kwargs)``, or "" when there is none or it fails (the first error matters)."""
    if hint is None:
        return ""
    try:
        return hint(kwargs)
    except Exception:
        return ""


class _Terminated(KeyboardInterrupt):
    """SIGTERM (``kill PID``), raised where Ctrl-C would be so that it stops the same way."""


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _ignore(signum: int, frame: Any) -> None:
    """A Python-level no-op, not SIG_IGN: a signal already pending when the handler changes
    would otherwise raise "Signal N ignored due to race condition"."""


def _stop(signum: int, frame: Any) -> None:
    """The first Ctrl-C or SIGTERM stops the command; any further one is ignored from then on,
    so the clean-up and the sentence on what was kept are never cut short by a traceback."""
    for s in _STOP_SIGNALS:
        signal.signal(s, _ignore)
    raise _Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _catch_stop_signals(enabled: bool) -> dict[signal.Signals, Any] | None:
    """While a command runs (main thread only), Ctrl-C and SIGTERM stop it the same way: one
    clean-up, one sentence on what was kept. Returns the handlers to put back, or None."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        return None
    before = {s: signal.getsignal(s) for s in _STOP_SIGNALS}
    for s in _STOP_SIGNALS:
        signal.signal(s, _stop)
    return before


def _restore_signals(before: dict[signal.Signals, Any] | None) -> None:
    for s, handler in (before or {}).items():
        signal.signal(s, handler)


def ignore_stop_signals() -> None:
    """From here on a Ctrl-C or SIGTERM is ignored (the process is exiting after one)."""
    if threading.current_thread() is threading.main_thread():
        for s in _STOP_SIGNALS:
            signal.signal(s, _ignore)


@overload
def friendly_errors(fn: F) -> F: ...


@overload
def friendly_errors(
    fn: None = None, *, on_stop: Hint | None = None, on_interrupt: Hint | None = None
) -> Callable[[F], F]: ...


def friendly_errors(
    fn: Any = None, *, on_stop: Hint | None = None, on_interrupt: Hint | None = None
) -> Any:
    """Turn an :class:`~inquire.errors.InquireError`, a full disk or an unwritable folder into
    a red one-line message and exit 2 (see :func:`error_message`).

    ``on_stop(kwargs)``: a sentence added to the disk-full message (what was kept, how to
    resume). ``on_interrupt(kwargs)``: when given, Ctrl-C prints "interrupted: " and that
    sentence and exits 130; SIGTERM prints "terminated: " and the same sentence and exits 143
    (a second signal while the sentence is written is ignored). (``main()`` handles errors too;
    the decorator makes it hold under typer's test runner.)
    """

    def decorate(func: F) -> F:
        @wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            handlers = _catch_stop_signals(on_interrupt is not None)
            try:
                return func(*args, **kwargs)
            except KeyboardInterrupt as stop:
                if on_interrupt is None:
                    raise
                said = _said(on_interrupt, kwargs) or "nothing more to say"
                how = "terminated" if isinstance(stop, _Terminated) else "interrupted"
                say(f"{how}: {said}", typer.colors.YELLOW)
                raise typer.Exit(143 if isinstance(stop, _Terminated) else 130) from None
            except (typer.Exit, typer.Abort):
                raise
            except Exception as exc:
                hint = _said(on_stop, kwargs) if disk_full(exc) else ""
                msg = error_message(exc, hint, _out_folder(kwargs))
                if msg is None:
                    raise
                say(f"error: {msg}", typer.colors.RED)
                raise typer.Exit(2) from None
            finally:
                _restore_signals(handlers)

        return wrapper  # type: ignore[return-value]

    return decorate(fn) if fn is not None else decorate


def check_device_precision(device: str, precision: str) -> None:
    """A model's --precision must be one inquire knows (or ``auto``); a --device other than
    cpu must exist on this machine: both checked before any work, not when (or whether) a
    model happens to read them."""
    from inquire.embed._torch import PRECISIONS
    from inquire.errors import InputError, UnknownNameError

    if precision not in (*PRECISIONS, "auto"):
        raise UnknownNameError("--precision", precision, [*PRECISIONS, "auto"])
    if device == "cpu":
        return
    try:
        from inquire.embed._torch import check_device

        check_device(device)
    except ImportError:  # pragma: no cover - torch is a dependency
        raise InputError(f"--device {device!r} needs torch, which is not installed") from None
