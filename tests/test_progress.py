"""The package's progress bars (rich): shown only on a terminal, counted right, quiet else."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from rich.console import Console

from inquire import _progress
from inquire._progress import ByteProgress, enabled, hub_tqdm_class, progress


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> list[Console]:
    """stderr looks like a terminal; every bar draws on a recording console."""
    consoles: list[Console] = []

    def console() -> Console:
        c = Console(record=True, force_terminal=True, width=120)
        consoles.append(c)
        return c

    monkeypatch.setattr(_progress, "_stderr_is_terminal", lambda: True)
    monkeypatch.setattr(_progress, "_console", console)
    return consoles


def test_quiet_unless_asked_on_a_terminal_with_warnings_logged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_progress, "_stderr_is_terminal", lambda: False)
    assert not enabled(True)
    monkeypatch.setattr(_progress, "_stderr_is_terminal", lambda: True)
    assert enabled(True) and not enabled(False)
    logger = logging.getLogger("inquire")
    old = logger.level
    logger.setLevel(logging.ERROR)  # INQUIRE_LOG_LEVEL=ERROR
    try:
        assert not enabled(True)
    finally:
        logger.setLevel(old)


def test_progress_yields_every_item_and_counts_them(terminal: list[Console]) -> None:
    assert list(progress(iter(range(3)), total=3, description="rerank x", unit="query")) == [
        0,
        1,
        2,
    ]
    text = terminal[0].export_text()
    assert "rerank x" in text and "3/3" in text and "query/s" in text


def test_no_bar_when_not_shown(terminal: list[Console]) -> None:
    assert list(progress([1, 2], description="quiet", show=False)) == [1, 2]
    assert terminal == []


def test_byte_progress_speaks_poochs_protocol(terminal: list[Console]) -> None:
    bar = ByteProgress("annotations")
    bar.total = 3000
    for _ in range(3):
        bar.update(1024)  # pooch counts whole chunks, overshooting the total
    bar.reset()
    bar.update(3000)  # then fills the bar to the total exactly
    assert bar.n == 3000
    bar.close()
    assert "annotations" in terminal[0].export_text()


def test_byte_progress_starts_at_a_resumed_offset() -> None:
    bar = ByteProgress("inat", show=False, initial=500)
    bar.update(100)
    assert bar.n == 600


def test_hub_bars_are_drawn_by_rich(terminal: list[Console]) -> None:
    cls: Any = hub_tqdm_class(show=True)
    bar = cls(total=10, desc="validation-00000-of-00001.parquet", unit="B")
    bar.update(4)
    bar.update(6)
    assert bar._rich.n == 10
    bar.close()
    assert "validation-00000-of-00001.parquet" in terminal[0].export_text()
    quiet: Any = hub_tqdm_class(show=False)(total=5, desc="q")
    quiet.update(5)
    quiet.close()
    assert len(terminal) == 1
