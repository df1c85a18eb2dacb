"""Read embeddings stored in the clip-retrieval layout.

    DIR/img_emb/img_emb_{i}.npy          (n_i, d) float16 (float32 accepted), L2-normalised rows
    DIR/metadata/metadata_{i}.parquet    n_i rows: image_path [, image_id]
    DIR/manifest.json                    optional (written by ``inquire embed``)

This is the layout of INQUIRE's published iNat24 embeddings, whose ``image_path`` values have
no ``.jpg`` suffix and which carry no ``image_id``: rows then get ids 0..N-1 in shard order,
and :meth:`EmbeddingStore.ids_for_paths` maps paths to them.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from inquire.errors import InputError

_SHARD_RE = re.compile(r"img_emb_(\d+)\.npy$")


class EmbeddingStore:
    """Memory-mapped access to all shards of an embedding folder.

    ``ids``: ``(N,) int64`` image id of every row (global row order = shard order).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        emb_dir = self.root / "img_emb"
        if not emb_dir.is_dir():
            raise InputError(
                f"{str(self.root)!r} is not an embedding folder: it has no img_emb/ sub-folder "
                f"(expected the clip-retrieval layout img_emb/img_emb_{{i}}.npy + metadata/)"
            )
        found = sorted(
            (int(m.group(1)), p) for p in emb_dir.iterdir() if (m := _SHARD_RE.search(p.name))
        )
        if not found:
            raise InputError(f"{str(emb_dir)!r} holds no img_emb_{{i}}.npy shards")
        self.shard_paths = [p for _, p in found]
        self.shard_indices = [i for i, _ in found]
        self.shards: list[np.ndarray] = [np.load(p, mmap_mode="r") for p in self.shard_paths]
        dims = {s.shape[1] if s.ndim == 2 else -1 for s in self.shards}
        if len(dims) != 1 or -1 in dims:
            shapes = {p.name: s.shape for p, s in zip(self.shard_paths, self.shards, strict=True)}
            raise InputError(f"shards of {str(self.root)!r} differ in dimension or rank: {shapes}")
        self.dim = int(dims.pop())
        self.offsets = np.cumsum([0] + [len(s) for s in self.shards])
        self.manifest: dict[str, Any] = {}
        man = self.root / "manifest.json"
        if man.is_file():
            self.manifest = json.loads(man.read_text(encoding="utf-8"))
        self._meta: pd.DataFrame | None = None
        self._ids: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def dtype(self) -> np.dtype:
        return self.shards[0].dtype

    @property
    def metadata(self) -> pd.DataFrame:
        """All shards' metadata concatenated (``image_path`` and ``image_id``), row-aligned."""
        if self._meta is None:
            frames = []
            for idx, shard in zip(self.shard_indices, self.shards, strict=True):
                path = self.root / "metadata" / f"metadata_{idx}.parquet"
                if not path.is_file():
                    raise InputError(f"embedding shard {idx} has no metadata file {str(path)!r}")
                df = pq.read_table(path).to_pandas()
                if len(df) != len(shard):
                    raise InputError(
                        f"{str(path)!r} has {len(df)} rows but img_emb_{idx}.npy has {len(shard)}"
                    )
                frames.append(df)
            meta = pd.concat(frames, ignore_index=True)
            if "image_id" not in meta.columns:
                meta["image_id"] = np.arange(len(meta), dtype=np.int64)
            meta["image_id"] = meta["image_id"].astype(np.int64)
            self._meta = meta
        return self._meta

    @property
    def ids(self) -> np.ndarray:
        """``(N,) int64`` image id of each row."""
        if self._ids is None:
            self._ids = self.metadata["image_id"].to_numpy(np.int64)
        return self._ids

    def iter_blocks(self, block_rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(global_row_start, block (b, d))`` views, never crossing a shard boundary."""
        for shard, start in zip(self.shards, self.offsets[:-1], strict=True):
            for lo in range(0, len(shard), block_rows):
                yield int(start + lo), shard[lo : lo + block_rows]
