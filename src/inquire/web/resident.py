"""What the Verify server keeps in memory between requests: search indexes, encoders and
the thumbnail cache, each loaded once per key under its own lock, and no database
connection (each request opens and closes its own)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Generic, TypeVar

from inquire.collection.store import Collection, CollectionIndex, open_collection
from inquire.collection.verify import Verification
from inquire.config import cache_dir
from inquire.embed.base import Encoder
from inquire.web.images import ThumbnailCache

K = TypeVar("K")
V = TypeVar("V")


class _Loaded(Generic[K, V]):
    """Values loaded once per key and kept: a short lock guards the table, and a lock per
    key guards its loading, so loading one value (a model, an index) never holds up
    requests for another, and two requests for the same key load it once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[K, V] = {}
        self._loading: dict[K, threading.Lock] = {}

    def get(self, key: K, load: Callable[[], V], drop: Callable[[K], bool] | None = None) -> V:
        """The value of ``key``, loaded with ``load()`` the first time; once loaded, the
        other keys for which ``drop(key)`` is true are forgotten (e.g. stale generations)."""
        with self._lock:
            if key in self._values:
                return self._values[key]
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._values:
                    return self._values[key]
            value = load()
            with self._lock:
                self._values[key] = value
                self._loading.pop(key, None)
                for other in [k for k in self._values if k != key and drop and drop(k)]:
                    del self._values[other]
            return value


class Resident:
    """Search indexes and encoders kept in memory between requests.

    Indexes are kept by (collection folder, generation), so a collection update loads a
    new one; a kept index holds no database connection: each request gets it bound to its
    own :class:`Collection` (:meth:`CollectionIndex.bound_to`), whose connection the request
    opens and closes. Indexes, encoders and the thumbnail cache have separate locks."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self.indexes: _Loaded[tuple[str, int], CollectionIndex] = _Loaded()
        self.encoders: _Loaded[str, Encoder] = _Loaded()
        self._thumbs: _Loaded[str, ThumbnailCache] = _Loaded()

    def collection(self, name: str) -> Collection:
        return open_collection(name, self.root)

    def index(self, coll: Collection) -> CollectionIndex:
        folder = str(coll.folder)

        def load() -> CollectionIndex:
            with Collection(coll.folder) as own:  # closed once loaded: nothing shared
                return own.index()

        key = (folder, coll.generation)
        idx = self.indexes.get(key, load, drop=lambda k: k[0] == folder)
        return idx.bound_to(coll)

    def thumbs(self) -> ThumbnailCache:
        return self._thumbs.get("thumbs", lambda: ThumbnailCache(cache_dir("web", "thumbs")))

    def encoder(self, model_id: str) -> Encoder:
        def load() -> Encoder:
            from inquire.embed.models import load_encoder

            return load_encoder(model_id)

        return self.encoders.get(model_id, load)

    @contextmanager
    def verification(self, name: str) -> Iterator[Verification]:
        with self.collection(name) as coll, Verification(coll) as v:
            yield v
