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

import contextlib
import logging
import os
import threading
import uuid
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np

from inquire.index.ivfpq import Manifest, PartitionInfo, Route

log = logging.getLogger(__name__)

#: Times one search starts a partition's actor again before it fails (the restarted actor's
#: node can be lost too).
RESTARTS_PER_SEARCH = 3


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
    """One Ray actor per partition, placed round robin over the cluster's live nodes.

    Placement is a hard node affinity: Ray's soft affinity (and "SPREAD") are preferences
    that were seen to put every actor on one node of two. An actor whose node is gone (or
    that died, or could not be placed) is started again on a live node when a search reaches
    it, and that partition's search is sent once more (up to ``RESTARTS_PER_SEARCH`` times);
    a search fails only when no node can hold it. Searches may run from several threads at
    once: an actor lost to all of them is started again once.
    """

    def __init__(
        self, store_root: str | os.PathLike[str], folder: str | os.PathLike[str], man: Manifest
    ) -> None:
        ray = _ray()
        self._remote = ray.remote(num_cpus=0)(_PartitionServer)
        self._args = (os.fspath(store_root), os.fspath(folder))
        self._parts = list(man.partitions)
        # Actors are named (``ray list actors`` shows what serves what):
        # inquire-index-{token}-p{partition}-{start}, unique per backend and start.
        self.name = f"inquire-index-{uuid.uuid4().hex[:8]}"
        self.restarts = 0
        self._lock = threading.Lock()  # held while an actor is started again
        nodes = self._live_nodes()
        # The node each actor is pinned to (None: placed by Ray, no node was listed).
        self._where: list[str | None] = [
            nodes[i % len(nodes)] if nodes else None for i in range(len(self._parts))
        ]
        self.actors: list[Any] = []
        try:
            for p, w in zip(self._parts, self._where, strict=True):
                self.actors.append(self._start(p, w))
        except BaseException:  # an error or Ctrl-C part-way: stop the actors already started
            self.close()
            raise

    @staticmethod
    def _live_nodes() -> list[str]:
        ray = _ray()
        return sorted(n["NodeID"] for n in ray.nodes() if n.get("Alive"))

    def _start(self, part: PartitionInfo, node: str | None) -> Any:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        strategy: Any = (
            "SPREAD" if node is None else NodeAffinitySchedulingStrategy(node, soft=False)
        )
        name = f"{self.name}-p{part.number}-{self.restarts}"
        return self._remote.options(name=name, scheduling_strategy=strategy).remote(
            *self._args, asdict(part)
        )

    def _restart(self, i: int, lost: Any) -> None:
        """Start partition ``i``'s actor again on the live node holding fewest actors, unless
        another search has already replaced ``lost`` (the actor that failed)."""
        ray = _ray()
        with self._lock:
            if self.actors[i] is not lost:
                return
            with contextlib.suppress(Exception):  # already gone
                ray.kill(lost)
            nodes = self._live_nodes()
            if not nodes:
                raise RuntimeError("no live Ray node is left to serve the index on")
            held: dict[str, int] = dict.fromkeys(nodes, 0)
            for j, where in enumerate(self._where):
                if j != i and where in held:
                    held[where] += 1
            node = min(nodes, key=lambda n: (held[n], n))
            log.warning("partition %d's Ray actor was lost; starting it on node %s", i, node)
            self.restarts += 1  # first: the new actor's name must differ from the lost one's
            self.actors[i] = self._start(self._parts[i], node)
            self._where[i] = node

    def search(
        self, queries: np.ndarray, k: int, masks: list[np.ndarray | None], route: Route
    ) -> list[list[tuple[np.ndarray, np.ndarray]]]:
        ray = _ray()
        from ray.exceptions import ActorUnschedulableError, RayActorError

        q = ray.put(np.ascontiguousarray(queries, np.float32))
        packed = [
            (None, 0) if m is None else (np.packbits(m, bitorder="little"), len(m)) for m in masks
        ]
        if len(packed) != len(self.actors):
            raise ValueError(f"{len(masks)} masks for {len(self.actors)} partitions")

        def call(i: int) -> tuple[Any, Any]:
            bits, n = packed[i]
            actor = self.actors[i]
            return actor, actor.search.remote(q, k, bits, n, route)

        calls = [call(i) for i in range(len(self.actors))]
        out: list[list[tuple[np.ndarray, np.ndarray]]] = []
        for i, (actor, ref) in enumerate(calls):
            for restarts in range(RESTARTS_PER_SEARCH + 1):
                try:
                    out.append(ray.get(ref))
                    break
                except (RayActorError, ActorUnschedulableError):
                    if restarts == RESTARTS_PER_SEARCH:
                        raise
                    self._restart(i, actor)
                    actor, ref = call(i)
        return out

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
