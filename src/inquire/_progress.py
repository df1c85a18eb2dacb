"""Progress bars for the whole package, drawn with rich on stderr.

One library draws every bar (rich, which the CLI already uses for tables and logs):

- :func:`progress` wraps an iterable (queries re-ranked, feedback rounds) in a counting bar;
- :class:`ByteProgress` counts bytes; it has the ``total`` / ``update`` / ``reset`` /
  ``close`` interface that pooch accepts as ``progressbar=``, and the resumable downloader
  uses it too;
- :func:`hub_tqdm_class` hands huggingface_hub a ``tqdm_class`` that draws the hub's
  download bars with rich as well;
- :func:`rich_progress` is the rich ``Progress`` with count, rate and ETA columns that the
  embedding and index commands drive themselves.

Bars are shown only when the caller asks for them, stderr is a terminal and the ``inquire``
logger lets warnings through (``INQUIRE_LOG_LEVEL=ERROR`` silences them); otherwise every
helper here is a no-op with the same interface, so callers never branch on it.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def enabled(requested: bool = True) -> bool:
    """Whether a bar is drawn: ``requested``, stderr is a terminal, and logging allows it."""
    if not requested:
        return False
    if not logging.getLogger("inquire").isEnabledFor(logging.WARNING):
        return False
    return _stderr_is_terminal()


def _stderr_is_terminal() -> bool:
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def progress(
    iterable: Iterable[T],
    *,
    total: int | None = None,
    description: str = "",
    unit: str = "item",
    show: bool = True,
) -> Iterator[T]:
    """Yield the items of ``iterable`` while a bar counts them (``total`` items, if known).

    ``total`` defaults to ``len(iterable)`` when it has one; the bar shows the rate in
    ``unit``/s. ``show=False`` (or a stderr that is not a terminal) yields the items with
    no bar at all.
    """
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    if not enabled(show):
        yield from iterable
        return
    start = time.monotonic()
    with rich_progress(description) as bar:
        task = bar.add_task(description, total=total, rate="")
        for done, item in enumerate(iterable, start=1):
            yield item
            elapsed = max(time.monotonic() - start, 1e-9)
            bar.update(task, advance=1, rate=f"{done / elapsed:.2f} {unit}/s")


def rich_progress(label: str, *, console: Any = None, disable: bool = False) -> Any:
    """A rich ``Progress`` with count, percentage, a ``rate`` field, elapsed time and ETA.

    Tasks take a ``rate`` field (e.g. ``"12.3 img/s"``), updated by the caller. Drawn on
    ``console`` when given (then only ``disable`` turns it off), else on stderr when
    :func:`enabled` says so.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn(f"[bold]{label}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console or _console(),
        disable=disable or (console is None and not enabled()),
    )


class ByteProgress:
    """A byte counter drawn as a rich bar (size, speed, ETA); pooch's ``progressbar=``.

    Set ``total`` (bytes, ``None`` or 0 when unknown) before the first ``update(n)``;
    ``initial`` bytes count as done already (a resumed download). ``close()`` removes the
    bar. With ``show=False`` nothing is drawn and every method is a no-op.
    """

    def __init__(self, description: str, *, show: bool = True, initial: int = 0) -> None:
        self.description = description
        self.total: int | None = None
        self.n = initial
        self._initial = initial
        self._bar: Any = None
        self._task: Any = None
        self._show = enabled(show)

    def _start(self) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._bar = Progress(
            TextColumn(f"[bold]{self.description}[/]"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=_console(),
            transient=True,
        )
        self._bar.start()
        self._task = self._bar.add_task(self.description, total=self.total or None)
        self._bar.update(self._task, completed=self.n)

    def update(self, n: int = 1) -> None:
        """Count ``n`` more bytes."""
        self.n += n
        if not self._show:
            return
        if self._bar is None:
            self._start()
        self._bar.update(self._task, completed=self.n, total=self.total or None)

    def reset(self) -> None:
        """Back to zero bytes (pooch calls this before filling the bar to its total)."""
        self.n = 0
        if self._bar is not None:
            self._bar.reset(self._task, total=self.total or None)

    def close(self) -> None:
        """Remove the bar from the terminal."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> ByteProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def hub_tqdm_class(show: bool = True, description: str | None = None) -> Any:
    """A ``tqdm_class`` for ``huggingface_hub.hf_hub_download`` that draws with rich.

    The hub's own tqdm bar is disabled; its byte counts go to a :class:`ByteProgress`
    labelled ``description`` (default: the hub's own label, a shortened file name).
    """
    from huggingface_hub.utils import tqdm as hub_tqdm

    class _RichTqdm(hub_tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._rich = ByteProgress(
                description or str(kwargs.get("desc") or "download"),
                show=show,
                initial=int(kwargs.get("initial") or 0),
            )
            self._rich.total = kwargs.get("total")
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            self._rich.update(int(n or 0))
            return super().update(n)  # type: ignore[no-any-return]

        def close(self) -> None:
            self._rich.close()
            super().close()

    return _RichTqdm
