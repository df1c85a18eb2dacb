"""A collection's partitioned index: build it, and choose where it is served from.

- :func:`index_collection` is ``inquire collection index NAME``: build, extend or remove the
  index and measure its recall (the index itself: :mod:`inquire.index.ivfpq`; its place in the
  collection: the end of :mod:`inquire.collection.ann`).
- :func:`index_served` is ``--ray ADDRESS`` of ``inquire search`` and of the servers: inside
  it, every partitioned index a search opens is served by one Ray actor per partition
  (:class:`inquire.index.ray_serve.RayBackend`); without an address, in this process.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from inquire._lock import writer_lock
from inquire.cache import transaction
from inquire.collection.ann import (
    SCALE_SETTING,
    has_scale_index,
    remove_index,
    remove_scale_index,
    scale_dir,
    scale_info,
)
from inquire.collection.store import open_collection
from inquire.errors import InputError

log = logging.getLogger(__name__)


def index_collection(
    name: str,
    root: str | os.PathLike[str] | None = None,
    options: dict[str, int] | None = None,
    *,
    rebuild: bool = False,
    off: bool = False,
    runner: Any = None,
    progress: Callable[[int, int], None] | None = None,
    lock_timeout: float | None = None,
) -> dict[str, Any] | None:
    """Build (or extend) the partitioned IVF-PQ index of collection ``name``.

    ``options``: :class:`~inquire.index.ivfpq.ScaleSettings` fields to set (``nlist``,
    ``pq_m``, ``partition_rows``, ``nprobe``, ``rescore``, ``exact_below``); the rest keep the
    index's own values (or the defaults for a new index), a rebuild included; changing how it
    is built (``nlist``, ``pq_m``, ``partition_rows``) needs ``rebuild``; ``rebuild``: retrain
    and re-encode everything; ``off``: remove the index and go back to the ``auto`` setting;
    ``runner``: how partitions are encoded (:func:`inquire.index.ray_serve.run_ray`: Ray
    Data tasks). An interrupted build resumes where it stopped when run again. Measures
    recall@100 against exact search, of the router and of the IVF route alone at the
    configured ``nprobe`` (:func:`inquire.index.ivfpq.measure_recall`), and records it in the
    index's manifest. Returns
    :func:`inquire.collection.ann.scale_info` (None after ``off``).
    """
    from inquire.index import ivfpq

    coll = open_collection(name, root)
    try:
        with writer_lock(coll.folder, f"collection {name!r}", lock_timeout):
            if off:
                remove_scale_index(coll)
                with transaction(coll.conn) as conn:
                    coll.set_meta(conn, index="auto")
                return None
            cindex = coll.index()
            if cindex.valid.sum() == 0:
                raise InputError(f"collection {name!r} has no searchable images to index")
            folder = scale_dir(coll)
            try:
                man = ivfpq.read_manifest(folder)  # its settings are kept by a rebuild too
            except ivfpq.BrokenScaleIndexError as exc:
                if not rebuild:
                    raise InputError(f"{exc} (add --rebuild)") from None
                man = None  # unreadable: rebuilt with the defaults and the options given
            base = man.settings if man is not None else ivfpq.ScaleSettings()
            try:
                settings = replace(base, **(options or {})).check(cindex.store.dim)
            except TypeError as exc:
                raise InputError(f"unknown index option: {exc}") from None
            try:
                built = ivfpq.build(
                    cindex.store,
                    folder,
                    settings,
                    rebuild=rebuild,
                    runner=runner,
                    progress=progress,
                )
            except ivfpq.StaleScaleIndexError as exc:
                raise InputError(f"{exc} (add --rebuild)") from None
            except RuntimeError as exc:  # faiss could not read the partition being extended
                raise InputError(
                    f"the index in {str(folder)!r} has an unreadable partition file "
                    f"({ivfpq._faiss_reason(exc)}); add --rebuild"
                ) from None
            with transaction(coll.conn) as conn:
                coll.set_meta(conn, index=SCALE_SETTING)
            remove_index(coll)  # the partitioned index replaces a single faiss index
            # Measured in this process whatever serves searches: the same results (tested).
            recall = ivfpq.record_recall(cindex.store, folder, cindex.valid, cindex.image_id)
            log.info("collection %s: index of %d rows, recall %s", name, built.rows, recall)
            return scale_info(coll)
    finally:
        coll.close()


# -- where searches find the index: this process, or Ray actors ---------------------------------

RAY_CONNECT_TIMEOUT_S = 10.0


def connect_ray(address: str, timeout: float = RAY_CONNECT_TIMEOUT_S) -> bool:
    """Connect this process to the Ray cluster at ``address`` (``HOST:PORT`` of its head
    node, or ``ray://HOST:PORT``). Returns True if this call connected (the caller then
    disconnects), False if Ray was connected already.

    :class:`~inquire.errors.InputError` when Ray is not installed, the address is not
    ``HOST:PORT``, or nothing answers there within ``timeout`` seconds (checked before Ray
    is asked, so an unreachable address never hangs)."""
    try:
        import ray
    except ImportError:
        raise InputError(
            "--ray needs Ray, which is not installed: pip install 'ray[data]' (or leave "
            "--ray out to search in this process)"
        ) from None
    import socket

    shown = _shown(address)
    scheme, sep, hostport = address.rpartition("://")
    host, _, port = hostport.rpartition(":")
    # ASCII digits only: "²".isdigit() is True and int("²") fails.
    if (
        (sep and scheme != "ray")
        or not host
        or not (port.isascii() and port.isdigit())
        or not 0 < int(port) < 65536
        or not host.isprintable()
        or host != host.strip()
    ):
        raise InputError(
            f"--ray {shown} is not a Ray address; expected HOST:PORT of the cluster's head "
            "node (the address `ray start --head` prints, e.g. 10.0.0.5:6379) or "
            "ray://HOST:PORT"
        )
    if ray.is_initialized():
        return False
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except (OSError, UnicodeError) as exc:  # UnicodeError: a host name label over 63 bytes
        if isinstance(exc, TimeoutError):
            why = f"no answer within {timeout:g} s"
        else:
            why = getattr(exc, "strerror", None) or str(exc)
        raise InputError(
            f"the Ray cluster at {shown} is unreachable ({why}); check the address "
            "(`ray status` on the head node) and that this machine can reach it"
        ) from None
    try:
        ray.init(address=address, log_to_driver=False)
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(f"cannot join the Ray cluster at {shown}: {first}") from None
    return True


def _shown(address: str, limit: int = 100) -> str:
    """``address`` quoted for a message, cut to its first ``limit`` characters."""
    if len(address) <= limit:
        return repr(address)
    return f"{address[:limit]!r}... ({len(address):,} characters)"


@contextmanager
def ray_connection(address: str, timeout: float = RAY_CONNECT_TIMEOUT_S) -> Iterator[None]:
    """This process connected to the Ray cluster at ``address`` inside the block
    (:func:`connect_ray`), disconnected on leaving if the block connected it."""
    connected = connect_ray(address, timeout)
    try:
        yield
    finally:
        if connected:
            import ray

            ray.shutdown()


@dataclass
class RayServing:
    """The Ray actors serving the partitioned indexes opened inside :func:`index_served`.

    One :class:`~inquire.index.ray_serve.RayBackend` per index folder, started when a
    search first opens that index and reused by later opens of the same index (a server
    loads an index again after each update); an index whose partitions changed gets new
    actors, and the old ones are stopped once no index opened on them is left (closed or
    garbage collected), so a search still running on the old index is not cut off.
    :meth:`close` stops them all."""

    backends: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # folder: (key, backend)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    #: Live borrowers per backend (by id), replaced backends waiting for their last one, and
    #: backends whose borrowers went away since (appended from finalizers, without the lock).
    _borrows: dict[int, int] = field(default_factory=dict)
    _retired: list[Any] = field(default_factory=list)
    _returned: collections.deque[Any] = field(default_factory=collections.deque)

    def __call__(self, store: Any, folder: Path, man: Any) -> Any:
        from inquire.index.ray_serve import RayBackend

        key = (str(store.root), [(p.number, p.lo, p.hi) for p in man.partitions], man.shards)
        with self._lock:
            self._settle()
            held = self.backends.get(str(folder))
            if held is not None and held[0] == key:
                return self._lend(held[1])
            if held is not None:
                del self.backends[str(folder)]
                if self._borrows.get(id(held[1]), 0):
                    self._retired.append(held[1])
                else:
                    held[1].close()
            backend = RayBackend(store.root, folder, man)
            self.backends[str(folder)] = (key, backend)
            log.info("index %s: %d partitions served by Ray actors", folder, len(man.partitions))
            return self._lend(backend)

    def _lend(self, backend: Any) -> _Borrowed:
        self._borrows[id(backend)] = self._borrows.get(id(backend), 0) + 1
        return _Borrowed(backend, self._returned)

    def _settle(self) -> None:
        """Count returned borrows; stop replaced backends no index uses any more (locked)."""
        while self._returned:
            backend = self._returned.popleft()
            left = self._borrows.get(id(backend), 0) - 1
            if left > 0:
                self._borrows[id(backend)] = left
                continue
            self._borrows.pop(id(backend), None)
            for i, old in enumerate(self._retired):
                if old is backend:
                    del self._retired[i]
                    old.close()
                    break

    def actors(self) -> int:
        """Actors serving now (replaced ones still in use included)."""
        with self._lock:
            self._settle()
            live = [b for _, b in self.backends.values()] + self._retired
        return sum(len(b.actors) for b in live)

    def nodes(self) -> int:
        """Ray nodes the actors run on."""
        return len({n for _, b in self.backends.values() for n in b.nodes()})

    def close(self) -> None:
        with self._lock:
            for backend in [b for _, b in self.backends.values()] + self._retired:
                backend.close()
            self.backends.clear()
            self._retired.clear()
            self._borrows.clear()
            self._returned.clear()


class _Borrowed:
    """A served backend handed to one :class:`~inquire.index.ivfpq.ScaleIndex`: searches go
    to it; closing the index (or its garbage collection) returns it to its
    :class:`RayServing`, which stops a replaced backend after its last borrower."""

    def __init__(self, backend: Any, returned: collections.deque[Any]) -> None:
        self.backend = backend
        self._done = weakref.finalize(self, returned.append, backend)

    def search(self, *args: Any, **kwargs: Any) -> Any:
        return self.backend.search(*args, **kwargs)

    def close(self) -> None:
        self._done()  # once: a later call or the finalizer does nothing


@contextmanager
def index_served(
    ray_address: str | None,
    collection: str | None = None,
    root: str | os.PathLike[str] | None = None,
    timeout: float = RAY_CONNECT_TIMEOUT_S,
) -> Iterator[RayServing | None]:
    """Searches inside the block find partitioned indexes served by Ray actors on the
    cluster at ``ray_address`` (one actor per partition, :class:`RayServing`), or in this
    process when ``ray_address`` is None (yields None). The results are the same either way.

    ``collection``: the collection the block searches; it must have a partitioned index
    (:class:`~inquire.errors.InputError` naming the command that builds it). On leaving,
    the actors are stopped and Ray disconnected if this call connected it."""
    if ray_address is None:
        yield None
        return
    if collection is not None:
        coll = open_collection(collection, root)
        try:
            if coll.meta().get("index") != SCALE_SETTING or not has_scale_index(coll):
                raise InputError(
                    f"collection {collection!r} has no partitioned index for Ray to serve; "
                    f"build it with `inquire collection index {collection}` (or leave --ray "
                    "out)"
                )
        finally:
            coll.close()
    from inquire.index.ivfpq import backend_factory

    with ray_connection(ray_address, timeout):
        serving = RayServing()
        try:
            with backend_factory(serving):
                yield serving
        finally:
            serving.close()
