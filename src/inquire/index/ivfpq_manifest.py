"""The partitioned IVF-PQ index's folder: settings, manifest, and the checks that it is current.

What :mod:`inquire.index.ivfpq` writes beside its codes (``manifest.json``: settings, dim,
factory, partitions, covered shards, measured recall) and how it is read back; the errors
raised for a stale or broken index.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from inquire._io import write_json
from inquire.errors import InputError

MANIFEST = "manifest.json"
TRAINED = "trained.faiss"
FORMAT = 1


@dataclass(frozen=True)
class ScaleSettings:
    """How a partitioned index is built and searched.

    ``nlist``: IVF lists (0: chosen from the row count by :func:`default_nlist`); ``pq_m``:
    PQ sub-quantizers (bytes of code per row, 8 bits each; must divide ``dim``);
    ``partition_rows``: rows per partition (a partition closes once it holds at least this
    many; partitions hold whole shards); ``train_size``: rows sampled to train the quantizer
    (0: ``max(64 * nlist, 20000)``); ``nprobe``: lists probed per query unfiltered;
    ``rescore``: candidates per result taken from faiss and rescored exactly (``r``: ``k x
    r`` candidates); ``exact_below``: a mask selecting at most this many rows is searched
    exactly.
    """

    nlist: int = 0
    pq_m: int = 64
    partition_rows: int = 5_000_000
    train_size: int = 0
    nprobe: int = 32
    rescore: int = 10
    exact_below: int = 50_000

    def check(self, dim: int | None = None) -> ScaleSettings:
        for name in ("pq_m", "partition_rows", "nprobe", "rescore"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("nlist", "train_size", "exact_below"):
            if int(getattr(self, name)) < 0:
                raise InputError(f"{name} must be 0 or more, got {getattr(self, name)}")
        if dim is not None and dim % self.pq_m:
            usual = [m for m in (8, 16, 32, 48, 64, 96, 128) if dim % m == 0]
            # no usual size divides an odd dimension: name the divisors it has
            divisors = usual or [m for m in range(1, min(dim, 128) + 1) if dim % m == 0]
            raise InputError(
                f"pq_m {self.pq_m} does not divide the embedding dimension {dim}; pass "
                f"--pq-m with one of {', '.join(map(str, divisors))} (bytes per photo)"
            )
        return self

    def factory(self, nlist: int) -> str:
        return f"IVF{nlist},PQ{self.pq_m}x8"


def default_nlist(n_rows: int) -> int:
    """IVF lists for ``n_rows`` rows: the power of two nearest ``sqrt(n_rows)``, 64..4096.

    More lists make each probe cheaper but training (k-means over ``64 x nlist`` rows) and
    adding (each row against every centroid) dearer; 4096 keeps a 10M-row build within
    minutes on two cores (docs/scale.md).
    """
    if n_rows <= 0:
        return 64
    return int(min(4096, max(64, 2 ** round(math.log2(math.sqrt(n_rows))))))


@dataclass
class PartitionInfo:
    """Partition ``number`` holds store rows ``[lo, hi)``."""

    number: int
    lo: int
    hi: int

    @property
    def file(self) -> str:
        return f"part_{self.number}.faiss"


@dataclass
class Manifest:
    """What ``manifest.json`` records."""

    dim: int
    nlist: int
    factory: str
    settings: ScaleSettings
    partitions: list[PartitionInfo] = field(default_factory=list)
    trained_on: int = 0
    recall: dict[str, Any] = field(default_factory=dict)
    shards: list[list[Any]] = field(default_factory=list)  # covered shards: name, rows, mtime
    format: int = FORMAT

    @property
    def rows(self) -> int:
        return self.partitions[-1].hi if self.partitions else 0

    def as_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["settings"] = asdict(self.settings)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Manifest:
        if d.get("format") != FORMAT:
            raise BrokenScaleIndexError(
                f"manifest format {d.get('format')!r}, this version reads {FORMAT}"
            )
        return cls(
            dim=int(d["dim"]),
            nlist=int(d["nlist"]),
            factory=str(d["factory"]),
            settings=ScaleSettings(**d["settings"]),
            partitions=[PartitionInfo(**p) for p in d["partitions"]],
            trained_on=int(d.get("trained_on", 0)),
            recall=dict(d.get("recall") or {}),
            shards=[list(x) for x in d.get("shards") or []],
        )


def shard_signature(store: Any, rows: int) -> list[list[Any]]:
    """``[name, rows, mtime_ns]`` of the store's shards holding rows ``[0, rows)``: tells
    whether those rows are still the rows the index was built from (compaction rewrites
    them)."""
    out: list[list[Any]] = []
    for path, lo, hi in zip(store.shard_paths, store.offsets[:-1], store.offsets[1:], strict=True):
        if int(lo) >= rows:
            break
        out.append([path.name, int(hi - lo), path.stat().st_mtime_ns])
    return out


class StaleScaleIndexError(InputError):
    """The store's rows are no longer the rows the index was built from."""


class BrokenScaleIndexError(InputError):
    """An index file (manifest or partition) is missing, truncated or not an index."""


def check_current(store: Any, man: Manifest) -> None:
    """:class:`StaleScaleIndexError` unless ``store``'s first rows are the indexed rows."""
    if (
        man.dim != store.dim
        or man.rows > len(store)
        or (man.shards and shard_signature(store, man.rows) != man.shards)
    ):
        raise StaleScaleIndexError(
            f"the index covers {man.rows} rows of {man.dim}-d vectors that the store "
            f"({len(store)} rows, {store.dim}-d) no longer holds as they were (rewritten or "
            "compacted shards): rebuild the index"
        )


def read_manifest(folder: str | os.PathLike[str]) -> Manifest | None:
    """The manifest of the index in ``folder``, or None if there is none."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        return Manifest.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeError) as exc:
        raise BrokenScaleIndexError(
            f"index manifest {str(path)!r} is unreadable ({type(exc).__name__}: "
            f"{str(exc)[:120]}); rebuild the index"
        ) from None


def index_file_bytes(folder: str | os.PathLike[str]) -> int:
    """Bytes of the index's own files in ``folder``: manifest, quantizer, partitions (not
    the temporary file of a write in progress or killed)."""
    return sum(
        p.stat().st_size
        for p in Path(folder).iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name.endswith((".faiss", ".json"))
    )


def write_manifest(folder: str | os.PathLike[str], man: Manifest) -> None:
    write_json(Path(folder) / MANIFEST, man.as_json())
