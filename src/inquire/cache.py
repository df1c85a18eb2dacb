"""What every on-disk cache of model outputs shares: the SQLite set-up and the key convention.

**Key.** A cached output is only as good as the model that produced it, so every cache
(text embeddings, reranker scores, top-k lists) names the producer by one
:class:`OutputKey`: the model id, its revision (Hugging Face commit or a fingerprint of
local weights), the precision it ran in and the protocol (how its output was asked for: a
reranking protocol and prompt version; empty where there is none). SQLite caches store the
four parts as columns (:data:`KEY_COLUMNS`); file caches name their files by
:meth:`OutputKey.digest`. A model without a revision is never cached: nothing pins its
weights, so its outputs could change under the same name.

**SQLite.** :func:`connect` is the one set-up: WAL journal (readers never wait for a
writer), a busy timeout (writers wait instead of failing), ``synchronous=NORMAL``,
autocommit mode with explicit :func:`transaction` blocks, usable from any thread; the parent
folder is created; a file that is not a database is an :class:`~inquire.errors.InputError`.
:func:`migrate` is the one schema upgrade: ``PRAGMA user_version`` counts the steps applied.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from inquire.errors import InputError

# Bump when the meaning of the key parts changes: every digest changes with it.
KEY_VERSION = 1
KEY_COLUMNS = ("model", "revision", "precision", "protocol")
# The precision of a model that declares none (API models, imported outputs): what a model
# computing in full precision records, so such keys agree across versions of the code.
DEFAULT_PRECISION = "fp32"
_PRECISION_NAMES = {
    "float32": "fp32",
    "fp32": "fp32",
    "float16": "fp16",
    "half": "fp16",
    "fp16": "fp16",
    "bfloat16": "bf16",
    "bf16": "bf16",
}


def canonical_precision(precision: object) -> str:
    """``"fp32"``, ``"fp16"``, ``"bf16"`` for their usual spellings (``float16``,
    ``torch.bfloat16``, ...); empty or None is :data:`DEFAULT_PRECISION`; any other value is
    kept as written (lower case)."""
    text = str(precision or "").strip().lower().removeprefix("torch.")
    if not text:
        return DEFAULT_PRECISION
    return _PRECISION_NAMES.get(text, text)


@dataclass(frozen=True)
class OutputKey:
    """Who produced a cached output: model id, revision, precision and protocol (strings).

    Two outputs may stand in for each other only when all four parts are equal.
    """

    model: str
    revision: str
    precision: str = DEFAULT_PRECISION
    protocol: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "precision", canonical_precision(self.precision))

    @classmethod
    def of(cls, model: Any, protocol: str = "") -> OutputKey:
        """The key of ``model``: its ``model_id`` (or ``reranker_id``), ``revision`` and
        ``precision`` attributes (a missing precision is :data:`DEFAULT_PRECISION`), and
        ``protocol`` as given."""
        model_id = getattr(model, "model_id", None) or getattr(model, "reranker_id", None)
        if not model_id:
            raise InputError(
                f"{type(model).__name__} has neither model_id nor reranker_id; a cached output "
                f"must name its model"
            )
        return cls(
            str(model_id),
            str(getattr(model, "revision", "") or ""),
            str(getattr(model, "precision", "") or ""),
            str(protocol),
        )

    @property
    def pinned(self) -> bool:
        """Whether the revision pins the weights (only then may outputs be cached)."""
        return bool(self.revision)

    @property
    def values(self) -> tuple[str, str, str, str]:
        """The parts in :data:`KEY_COLUMNS` order (SQLite parameters)."""
        return (self.model, self.revision, self.precision, self.protocol)

    def as_dict(self) -> dict[str, str]:
        """The parts by name (for JSON sidecars and manifests)."""
        return asdict(self)

    def digest(self, extra: Mapping[str, Any] | None = None, length: int = 24) -> str:
        """Hex SHA-256 prefix (``length`` digits) of the key, :data:`KEY_VERSION` and
        ``extra`` (JSON-able: what else the output depends on, e.g. the searched store),
        for caches kept in files named by their key."""
        doc = {"key_version": KEY_VERSION, **self.as_dict(), "extra": dict(extra or {})}
        raw = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:length]


def key_columns_sql() -> str:
    """The key columns of a SQLite cache table, for its ``CREATE TABLE``."""
    return ",\n    ".join(f"{c} TEXT NOT NULL" for c in KEY_COLUMNS)


def key_match_sql() -> str:
    """``model = ? AND revision = ? AND ...`` for :attr:`OutputKey.values`."""
    return " AND ".join(f"{c} = ?" for c in KEY_COLUMNS)


def connect(
    path: str | os.PathLike[str],
    *,
    timeout_s: float = 60.0,
    row_factory: Any = None,
    what: str = "cache",
) -> sqlite3.Connection:
    """A connection to the SQLite file ``path`` set up as the module docs say.

    ``timeout_s``: how long a writer waits for another one (seconds); ``row_factory``: e.g.
    ``sqlite3.Row``; ``what`` names the file in messages. Raises InputError (and leaves no
    connection open) when ``path`` is not a usable database.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)

    def unusable(exc: Exception) -> InputError:
        return InputError(
            f"{what} {str(p)!r} is not a usable SQLite database ({exc}); move it away to start "
            f"a new one"
        )

    try:
        conn = sqlite3.connect(p, timeout=timeout_s, isolation_level=None, check_same_thread=False)
    except sqlite3.DatabaseError as exc:
        raise unusable(exc) from exc
    try:
        if row_factory is not None:
            conn.row_factory = row_factory
        conn.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
        _set_wal(conn, timeout_s)
        conn.execute("PRAGMA synchronous = NORMAL")
    except BaseException as exc:
        conn.close()  # no caller holds it yet
        if isinstance(exc, sqlite3.DatabaseError):
            raise unusable(exc) from exc
        raise
    return conn


def _set_wal(conn: sqlite3.Connection, timeout_s: float) -> None:
    """``PRAGMA journal_mode = WAL``, retried while the file is locked: two connections
    switching a new file to WAL at once can get "database is locked" at once, without
    SQLite's busy handler waiting (it would deadlock on the lock upgrade), so this waits up
    to ``timeout_s`` in short, growing steps."""
    deadline = time.monotonic() + timeout_s
    delay = 0.002
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


@contextmanager
def transaction(conn: sqlite3.Connection, immediate: bool = True) -> Iterator[sqlite3.Connection]:
    """``BEGIN [IMMEDIATE]`` ... ``COMMIT`` on a :func:`connect` connection (``ROLLBACK`` on
    error). ``immediate`` takes the write lock at once (waiting up to the busy timeout)."""
    conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def migrate(
    conn: sqlite3.Connection,
    steps: Sequence[Callable[[sqlite3.Connection], None]],
    what: str = "database",
) -> int:
    """Bring the database of ``conn`` up to ``len(steps)``: ``PRAGMA user_version`` is the
    number of steps already applied; the missing ones run in order, in one write
    transaction, and the version is set with them (two processes opening an old file at
    once apply each step once). Steps must also hold for a file written before versions
    were counted (version 0): e.g. add a column only if it is missing.

    A read-only connection (``PRAGMA query_only``) is never migrated: its readers must cope
    with the old layout. A file of a newer version is an InputError. Returns the version
    the database is at."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > len(steps):
        raise InputError(
            f"{what} has schema version {version}, newer than this inquire's {len(steps)}; "
            "upgrade inquire to use it"
        )
    if version == len(steps) or conn.execute("PRAGMA query_only").fetchone()[0]:
        return version
    with transaction(conn):
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        for step in steps[version:]:
            step(conn)
        if version < len(steps):
            conn.execute(f"PRAGMA user_version = {len(steps)}")
    return len(steps)
