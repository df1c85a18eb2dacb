"""How the exact search's chunks are scored: the choice of approximation per chunk (fixed, or
for ``screen="auto"`` a timed trial of both on the first chunks) and the fan-out of the
chunks of every block to the scoring threads."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from queue import Queue
from typing import Any

import numpy as np

from inquire.embed.store import EmbeddingStore
from inquire.index import screen as screen_mod
from inquire.index.blocks import Block, iter_blocks
from inquire.index.scorer import Scorer
from inquire.index.screen import AUTO_MARGIN, KEEP_BAND, remember_choice

log = logging.getLogger(__name__)


class Chooser:
    """Which approximation each chunk gets: fixed ("fp32", "bf16"), or for ``"auto"`` where
    screening is possible, a timed trial on this search's first chunks after ``SKIP`` (both
    paths, the same number of rows, warm-ups untimed; the result counts either way), then the
    faster path
    (bfloat16 only if at most ``AUTO_MARGIN`` times the float32 time). The decision is kept per
    process for the search's shape (:func:`inquire.index.screen.remember_choice`), and once the
    search has finished, where the trial was clear (:attr:`clear`), on disk for later
    processes (:func:`~inquire.index.screen.keep_choice`)."""

    # The search's first chunks go the float32 way untimed: their rows flood the candidate
    # pools (no floor yet), a start-up cost that would swamp the GEMMs' difference (measured:
    # a bfloat16 GEMM ~4x faster than float32 was rejected when timed on chunks 3-6). Then a
    # warm-up of each path, and both paths twice in ABBA order.
    SKIP = 8
    TRIAL = ("fp32",) * SKIP + ("fp32", "bf16", "bf16", "fp32", "fp32", "bf16")
    TIMED_FROM = SKIP + 2

    def __init__(
        self,
        fixed: str | None,
        key: tuple[Any, ...] | None = None,
        chunk_rows: int = 0,
        copy_ahead: bool = False,
    ) -> None:
        self.decided = fixed
        # Screening will read the store's bfloat16 copy (it exists, or is built once bfloat16
        # is chosen): its trial chunks, converted here, are timed without the conversions.
        self.copy_ahead = copy_ahead
        self.key = key
        self.chunk_rows = chunk_rows  # shorter chunks (a shard's or block's last) take no slot
        self._next = 0
        self._times: dict[str, list[float]] = {"fp32": [], "bf16": []}
        # The trial's best bfloat16 time over its best float32 time, once decided.
        self.ratio: float | None = None
        self._lock = threading.Lock()
        self.trial = fixed is None

    def next(self, rows: int | None = None) -> tuple[str, int | None]:
        """``(method, trial slot or None)`` for the next chunk (of ``rows`` rows: one shorter
        than ``chunk_rows`` is never a trial chunk, whose times must compare like with like)."""
        with self._lock:
            if self.decided is not None:
                return self.decided, None
            if rows is not None and rows < self.chunk_rows:
                return "fp32", None
            if self._next < len(self.TRIAL):
                slot = self._next
                self._next += 1
                return self.TRIAL[slot], slot
            return "fp32", None  # trial chunks still running on another thread

    def report(self, slot: int, seconds: float) -> None:
        """The trial chunk ``slot`` took ``seconds`` (of :func:`screen.clock`)."""
        with self._lock:
            if slot >= self.TIMED_FROM:
                self._times[self.TRIAL[slot]].append(seconds)
            timed = len(self.TRIAL) - self.TIMED_FROM
            if self.decided is None and sum(map(len, self._times.values())) == timed:
                bf16, fp32 = min(self._times["bf16"]), min(self._times["fp32"])
                self.ratio = bf16 / fp32 if fp32 > 0 else float("inf")
                self.decided = "bf16" if bf16 <= AUTO_MARGIN * fp32 else "fp32"
                log.info(
                    "screen=auto: bfloat16 chunk %.4f s, float32 chunk %.4f s: %s",
                    bf16,
                    fp32,
                    self.decided,
                )
                if self.key is not None:
                    remember_choice(self.key, self.decided)

    @property
    def clear(self) -> bool:
        """Whether this search's trial decided by a clear margin (``KEEP_BAND`` either side
        of ``AUTO_MARGIN``): only such a choice is kept for later processes."""
        r = self.ratio
        return r is not None and abs(r - AUTO_MARGIN) >= KEEP_BAND

    def run(self, scorer: Scorer, block: Block, lo: int, rows: int) -> None:
        """Score one chunk with the chosen method, timing it while on trial."""
        method, slot = self.next(rows)
        if slot is None:
            scorer.score(block, lo, rows, method)
            return
        norms, spares = scorer.norm_seconds, scorer.copy_spares
        t0 = screen_mod.clock()
        scorer.score(block, lo, rows, method)
        seconds = screen_mod.clock() - t0
        # Work later searches skip: row norms (computed once per process and chunk) and,
        # where the copy will be read, the conversions to bfloat16.
        seconds -= scorer.norm_seconds - norms
        if method == "bf16" and self.copy_ahead:
            seconds -= scorer.copy_spares - spares
        self.report(slot, max(seconds, 0.0))


def score_in_threads(
    store: EmbeddingStore,
    block_rows: int,
    chunk_rows: int,
    prefetch: bool,
    scorers: list[Scorer],
    chooser: Chooser,
    shards: list[np.ndarray] | None = None,
) -> None:
    """Chunks of every block go to the scorers' threads through one queue; a block's buffer
    goes back to the reader when its last chunk is done."""
    tasks: Queue[tuple[Block, int, int, Callable[[], None]] | None] = Queue()
    errors: list[BaseException] = []

    def work(scorer: Scorer) -> None:
        while (task := tasks.get()) is not None:
            block, lo, rows, done = task
            try:
                if not errors:
                    chooser.run(scorer, block, lo, rows)
            except BaseException as exc:  # re-raised by the caller once all threads stop
                errors.append(exc)
            finally:
                done()

    threads = [
        threading.Thread(target=work, args=(sc,), name=f"inquire-scorer-{i}", daemon=True)
        for i, sc in enumerate(scorers)
    ]
    for t in threads:
        t.start()
    try:
        # Three buffers: one being read while the threads finish one block and start the next.
        for block in iter_blocks(store, block_rows, prefetch=prefetch, n_slots=3, shards=shards):
            starts = range(0, block.rows, chunk_rows)
            finished = threading.Semaphore(0)
            left = [len(starts)]
            lock = threading.Lock()

            def done(
                block: Block = block,
                left: list[int] = left,
                lock: Any = lock,
                finished: Any = finished,
            ) -> None:
                with lock:
                    left[0] -= 1
                    last = left[0] == 0
                if last:
                    block.release()
                    finished.release()

            for lo in starts:
                tasks.put((block, lo, min(chunk_rows, block.rows - lo), done))
            if not prefetch:
                finished.acquire()  # one buffer only: finish this block before reading on
            if errors:
                break
    finally:
        for _ in threads:
            tasks.put(None)
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
