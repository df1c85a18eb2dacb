"""The partitioned index on Ray: Ray Data tasks build partitions, one actor serves each.

- :func:`run_ray` is a :class:`~inquire.index.ivfpq.PartitionRunner`: the partitions to
  encode become the rows of a Ray Data dataset, and a ``map`` task encodes each one into its
  ``part_{i}.faiss`` (every task opens the store and the trained quantizer itself; the
  folder must be reachable by every node, e.g. shared storage or one machine).
- :class:`RayBackend` is a :class:`~inquire.index.ivfpq.Backend`: one actor per partition
  loads that partition's codes (memory-mapped) and memory-maps the store's shards; a search
  sends the query and the partition's slice of the mask (packed bits) to every actor at once
  and returns their partial lists, which the driver merges under the one ranking rule
  (:func:`inquire.index.ivfpq.merge`). The actors run the same
  :meth:`~inquire.index.ivfpq.Partition.search` as :class:`~inquire.index.ivfpq.LocalBackend`,
  so the results are identical.

Ray is imported when a function here is first called, never at import.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np

from inquire.index.ivfpq import Manifest, PartitionInfo, Route

log = logging.getLogger(__name__)


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ImportError("serving on Ray needs ray: pip install 'ray[data]'") from exc
    if not ray.is_initialized():
        raise RuntimeError(
            "Ray is not initialised: call ray.init(address=...) before using the Ray backend"
        )
    return ray


def _encode_row(row: dict[str, Any]) -> dict[str, Any]:
    """Ray Data map: encode one partition (a row: number, lo, hi, existing, paths)."""
    from inquire.embed.store import EmbeddingStore
    from inquire.index.ivfpq import encode_partition

    part = PartitionInfo(int(row["number"]), int(row["lo"]), int(row["hi"]))
    store = EmbeddingStore(row["store_root"])
    n = encode_partition(store, row["folder"], part, existing=bool(row["existing"]))
    return {"number": part.number, "encoded": n, "node": _node_id()}


def _node_id() -> str:
    try:
        import ray

        return str(ray.get_runtime_context().get_node_id())
    except Exception:  # outside a Ray worker
        return ""


def run_ray(
    store_root: str,
    folder: str,
    parts: list[PartitionInfo],
    existing: set[int],
    progress: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Encode ``parts`` as parallel Ray Data tasks (one per partition); returns what each
    task reported (``number``, ``encoded`` rows, ``node``)."""
    _ray()  # installed and initialised
    import ray.data

    items = [
        {
            **asdict(p),
            "existing": p.number in existing,
            "store_root": os.fspath(store_root),
            "folder": os.fspath(folder),
        }
        for p in parts
    ]
    ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
    out = ds.map(_encode_row, num_cpus=1).take_all()
    for r in out:
        if progress is not None:
            progress(int(r["encoded"]))
    return sorted(out, key=lambda r: r["number"])


class _PartitionServer:
    """Actor body: one partition, loaded once, searched many times."""

    def __init__(self, store_root: str, folder: str, info: dict[str, int]) -> None:
        from inquire.embed.store import EmbeddingStore
        from inquire.index.ivfpq import Partition

        self.part = Partition(EmbeddingStore(store_root), folder, PartitionInfo(**info))

    def search(
        self, queries: np.ndarray, k: int, bits: np.ndarray | None, n: int, route: Route
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        mask = None if bits is None else np.unpackbits(bits, count=n, bitorder="little")
        return self.part.search(queries, k, None if mask is None else mask.astype(bool), route)

    def node(self) -> str:
        return _node_id()

    def code_bytes(self) -> int:
        return self.part.code_bytes()


class RayBackend:
    """One Ray actor per partition (spread over the cluster's nodes)."""

    def __init__(
        self, store_root: str | os.PathLike[str], folder: str | os.PathLike[str], man: Manifest
    ) -> None:
        ray = _ray()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        actor = ray.remote(num_cpus=0)(_PartitionServer)
        # Round robin over the live nodes: Ray's "SPREAD" is a preference that can still put
        # every actor on one node. Soft, so a partition still loads when its node is gone.
        nodes = sorted(n["NodeID"] for n in ray.nodes() if n.get("Alive"))
        self.actors = [
            actor.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(nodes[i % len(nodes)], soft=True)
                if nodes
                else "SPREAD"
            ).remote(os.fspath(store_root), os.fspath(folder), asdict(p))
            for i, p in enumerate(man.partitions)
        ]

    def search(
        self, queries: np.ndarray, k: int, masks: list[np.ndarray | None], route: Route
    ) -> list[list[tuple[np.ndarray, np.ndarray]]]:
        ray = _ray()
        q = ray.put(np.ascontiguousarray(queries, np.float32))
        calls = []
        for a, m in zip(self.actors, masks, strict=True):
            bits = None if m is None else np.packbits(m, bitorder="little")
            calls.append(a.search.remote(q, k, bits, 0 if m is None else len(m), route))
        return list(ray.get(calls))

    def nodes(self) -> list[str]:
        """The node id each partition's actor runs on."""
        ray = _ray()
        return list(ray.get([a.node.remote() for a in self.actors]))

    def code_bytes(self) -> int:
        ray = _ray()
        return int(sum(ray.get([a.code_bytes.remote() for a in self.actors])))

    def close(self) -> None:
        try:
            ray = _ray()
        except (ImportError, RuntimeError):
            self.actors = []
            return
        for a in self.actors:
            ray.kill(a)
        self.actors = []
