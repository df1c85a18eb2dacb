"""Read embeddings stored in the clip-retrieval layout.

    DIR/img_emb/img_emb_{i}.npy          (n_i, d) float16 (float32 accepted), L2-normalised rows
    DIR/metadata/metadata_{i}.parquet    n_i rows: image_path [, image_id]
    DIR/manifest.json                    optional (written by ``inquire embed``)

Shard numbers may be zero-padded (clip-retrieval pads them once there are ten or more
partitions: ``img_emb_00.npy``); :mod:`inquire.embed.folder` owns the names, pairs the files
and reads the manifest.

This is the layout of INQUIRE's published iNat24 embeddings, whose ``image_path`` values have
no ``.jpg`` suffix and which carry no ``image_id``: rows then get ids 0..N-1 in shard order,
and :meth:`EmbeddingStore.ids_for_paths` maps paths to them.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from inquire.embed.folder import (
    DAMAGED_FIX,
    emb_dir,
    folder_state,
    is_embedding_folder,
    list_shards,
    manifest_path,
    read_manifest,
    shard_numbers,
)
from inquire.embed.images import IMAGE_SUFFIXES
from inquire.errors import InputError

log = logging.getLogger(__name__)


class EmbeddingStore:
    """Memory-mapped access to all shards of an embedding folder.

    ``ids``: ``(N,) int64`` image id of every row (global row order = shard order).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if not is_embedding_folder(self.root):
            raise InputError(
                f"{str(self.root)!r} is not an embedding folder: it has no img_emb/ sub-folder "
                f"(expected the clip-retrieval layout img_emb/img_emb_{{i}}.npy + metadata/)"
            )
        self.manifest: dict[str, Any] = read_manifest(self.root) or {}
        committed: list[int] | None = None
        if "shards" in self.manifest:
            # Written by ``inquire embed``: the manifest is the commit record, so a shard file
            # of an interrupted run that the manifest does not list yet is not part of the store.
            committed = sorted({int(sh["index"]) for sh in self.manifest["shards"]})
            missing = set(committed) - set(shard_numbers(self.root))
            if missing:
                raise InputError(
                    f"{str(manifest_path(self.root))!r} lists shard(s) {sorted(missing)} whose "
                    f"img_emb files are missing; re-run inquire embed on this folder to rebuild "
                    f"them"
                )
        # Padded (clip-retrieval: img_emb_00.npy) and unpadded names, numeric order, each
        # .npy paired with the metadata file of the same number.
        found = list_shards(self.root, committed)
        if not found:
            raise InputError(f"{str(emb_dir(self.root))!r} holds no img_emb_{{i}}.npy shards")
        self.shard_paths = [sh.embeddings for sh in found]
        self.shard_indices = [sh.number for sh in found]
        self.metadata_paths: list[Path] = [sh.metadata for sh in found if sh.metadata]
        # Each shard file's (device, inode) before it is mapped: a file renamed over it later is
        # another file, which the map does not show (:meth:`replaced`).
        self.shard_files = [_file_id(p) for p in self.shard_paths]
        self.shards: list[np.ndarray] = [open_shard(p) for p in self.shard_paths]
        self.dim = check_shards_agree(self.shard_paths, self.shards)
        self.offsets = np.cumsum([0] + [len(s) for s in self.shards])
        self._meta: pd.DataFrame | None = None
        self._ids: np.ndarray | None = None
        self._row_index: tuple[np.ndarray, np.ndarray] | None = None
        self._path_index: pd.Index | None = None
        self._path_rows = np.zeros(0, np.int64)

    def replaced(self, s: int) -> bool:
        """Whether shard ``s``'s file is gone or another file (renamed over it) since this
        store mapped it: the map still holds the earlier file's rows."""
        try:
            return _file_id(self.shard_paths[s]) != self.shard_files[s]
        except OSError:
            return True

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
            for path, emb, shard in zip(
                self.metadata_paths, self.shard_paths, self.shards, strict=True
            ):
                frames.append(read_shard_metadata(path, emb, len(shard)))
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

    def row(self, i: int) -> np.ndarray:
        """Row ``i`` (global row order) as a ``(d,)`` view of its shard."""
        if not 0 <= i < len(self):
            raise InputError(f"row {i} is out of range for a store of {len(self)} rows")
        s = int(np.searchsorted(self.offsets, i, side="right") - 1)
        return self.shards[s][i - int(self.offsets[s])]

    def rows(self, rows: np.ndarray | list[int]) -> np.ndarray:
        """``(n, d) float32`` embeddings of global ``rows`` (in the order given)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.dim), np.float32)
        for j, r in enumerate(rows):
            out[j] = self.row(int(r))
        return out

    def row_of(self, ids: np.ndarray | list[int], missing: str = "raise") -> np.ndarray:
        """``(n,) int64`` global row of each image id.

        ``missing="raise"`` (default) fails naming the ids not in the store;
        ``missing="ignore"`` gives -1 for them. Duplicate ids in the store map to their
        first row.
        """
        if missing not in ("raise", "ignore"):
            raise InputError(f"missing must be 'raise' or 'ignore', got {missing!r}")
        if self._row_index is None:
            uniq, first = np.unique(self.ids, return_index=True)
            self._row_index = (uniq, first.astype(np.int64))
        uniq, first = self._row_index
        query = np.asarray(ids, dtype=np.int64).reshape(-1)
        at = np.minimum(np.searchsorted(uniq, query), max(len(uniq) - 1, 0))
        pos = np.where(uniq[at] == query, first[at], -1)
        if missing == "raise" and (pos < 0).any():
            bad = query[pos < 0]
            raise InputError(
                f"{len(bad)} image id(s) are not in the embedding store {str(self.root)!r}, "
                f"e.g. {bad[:5].tolist()}; check that the ids and the store come from the same "
                f"collection"
            )
        return pos.astype(np.int64)

    def ids_for_paths(self, paths: list[str] | pd.Series, missing: str = "raise") -> np.ndarray:
        """``(n,) int64`` image ids of ``paths``, matched with or without a file extension.

        INQUIRE's published metadata stores ``image_path`` without ``.jpg`` (and no
        ``image_id``), while its annotations carry the extension; both sides are compared
        with the extension removed. ``missing="ignore"`` gives -1 for unknown paths.
        """
        if missing not in ("raise", "ignore"):
            raise InputError(f"missing must be 'raise' or 'ignore', got {missing!r}")
        if self._path_index is None:
            keys = pd.Series(path_key(self.metadata["image_path"]))
            # Duplicate paths (one image listed twice) resolve to their first row.
            self._path_index = pd.Index(keys[~keys.duplicated()].to_numpy())
            self._path_rows = np.flatnonzero(~keys.duplicated().to_numpy())
        pos = self._path_index.get_indexer(pd.Index(path_key(pd.Series(list(paths), dtype=object))))
        pos = np.where(pos >= 0, self._path_rows[np.maximum(pos, 0)], -1)
        if missing == "raise" and (pos < 0).any():
            bad = [str(p) for p, q in zip(paths, pos, strict=True) if q < 0]
            raise InputError(
                f"{len(bad)} image path(s) are not in the embedding store {str(self.root)!r}, "
                f"e.g. {bad[:3]}; paths are compared without extension, relative to the "
                f"collection root (like {self.metadata['image_path'].iloc[0]!r})"
            )
        return np.where(pos >= 0, self.ids[np.maximum(pos, 0)], -1).astype(np.int64)

    def check_dim(self, dim: int, what: str = "text embeddings") -> None:
        """Fail, naming both dimensions, when ``dim`` differs from the store's."""
        if int(dim) != self.dim:
            model = self.manifest.get("model_id")
            origin = f" (model {model})" if model else ""
            raise InputError(
                f"{what} have dimension {int(dim)} but the image embeddings in "
                f"{str(self.root)!r}{origin} have dimension {self.dim}; embed the texts with the "
                f"model that embedded the images (see manifest.json), or embed the images again "
                f"with this model"
            )

    def check_queries(
        self, queries: np.ndarray, what: str = "text embeddings", normalized: bool = True
    ) -> np.ndarray:
        """Check ``(nq, d)`` query embeddings against the store: a matrix of the store's
        dimension, finite, and (``normalized``) L2-normalised. Returns them as C-ordered
        ``(nq, d) float32``. The one query check of every search path."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim != 2:
            raise InputError(f"{what} must be a (n, d) matrix, got shape {q.shape}")
        self.check_dim(q.shape[1], what)
        if not np.isfinite(q).all():
            raise InputError(
                f"{what} contain NaN or infinite values; check the text encoder's output"
            )
        if normalized:
            check_unit_norm(q, what)
        return q

    def check_normalized(self, sample: int = 1024, tol: float = 1e-2) -> None:
        """Fail when sampled rows (spread over all shards) are not unit-norm within ``tol``.

        float16 storage keeps norms within ~1e-3 of 1, so ``tol`` defaults to 1e-2.
        """
        n = len(self)
        rows = np.unique(np.linspace(0, n - 1, min(sample, n)).astype(np.int64))
        check_unit_norm(self.rows(rows), f"image embeddings in {str(self.root)!r}", tol)


#: Times :func:`open_settled` opens a folder that changes while it is opened.
SETTLE_TRIES = 3


def open_settled(
    root: str | os.PathLike[str], tries: int = SETTLE_TRIES
) -> tuple[EmbeddingStore, tuple[tuple[Any, ...], ...]]:
    """The store at ``root``, its metadata read, and the folder's state it holds
    (:func:`~inquire.embed.folder.folder_state`), for a reader that keeps a store and opens
    it again when the folder changes (the web page's search).

    The state is taken before and after the opening and the two agree, so no shard file
    was added, removed or replaced while the store mapped the embeddings and read the
    metadata (one read lazily later could come from a newer file than the rows mapped). A
    folder that changes while it is opened (a writer renaming its files) is opened again,
    ``tries`` times in all; an opening that fails while the folder changes too (a shard
    half written) counts as such a try. A folder still changing is an InputError."""
    for _ in range(max(1, tries)):
        before = folder_state(root)
        try:
            store = EmbeddingStore(root)
            store.metadata  # noqa: B018 - read now, from the files just mapped
        except InputError:
            if folder_state(root) == before:
                raise  # the folder as it stands is unreadable
            continue
        if folder_state(root) == before:
            return store, before
    raise InputError(
        f"the embedding folder {str(Path(root))!r} changed each of the {max(1, tries)} times "
        f"it was opened: a writer (inquire embed) is replacing its files; try again when it "
        f"has finished"
    )


SHARD_DTYPES = (np.dtype(np.float16), np.dtype(np.float32))


def _file_id(path: Path) -> tuple[int, int]:
    """``(device, inode)`` of the file at ``path``: an OSError where there is none."""
    st = path.stat()
    return st.st_dev, st.st_ino


def open_shard(path: Path) -> np.ndarray:
    """Memory-map one ``img_emb_{i}.npy`` shard: a ``(n, d)`` float16 or float32 matrix.

    A zero-byte, truncated or garbage file, or one holding another kind of array, is an
    :class:`InputError` naming the file and the fix (never numpy's own exception)."""
    try:
        size = path.stat().st_size
        if size == 0:
            raise InputError(f"embedding shard {str(path)!r} is empty (0 bytes); {DAMAGED_FIX}")
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except InputError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        # numpy says "mmap length is greater than file size" for a truncated file and
        # "pickled data" / "Failed to interpret" for bytes that are not an .npy file.
        what = (
            "is truncated (shorter than its header says)"
            if "length is greater" in str(exc)
            else "is not a readable .npy array"
        )
        raise InputError(f"embedding shard {str(path)!r} {what}: {exc}; {DAMAGED_FIX}") from None
    if not isinstance(arr, np.ndarray):  # an .npz archive
        raise InputError(f"embedding shard {str(path)!r} is not a single .npy array; {DAMAGED_FIX}")
    if arr.ndim != 2 or arr.dtype not in SHARD_DTYPES:
        raise InputError(
            f"embedding shard {str(path)!r} holds a {arr.dtype} array of shape {arr.shape}; an "
            f"embedding shard is an (n, d) float16 or float32 matrix, one row per image; "
            f"{DAMAGED_FIX}"
        )
    return arr


def check_shards_agree(paths: list[Path], shards: list[np.ndarray]) -> int:
    """The common dimension ``d`` of the shards; an :class:`InputError` naming the first
    shard whose dimension or dtype differs from the first shard's."""
    first, ref = paths[0], shards[0]
    for p, arr in zip(paths[1:], shards[1:], strict=True):
        if arr.shape[1] != ref.shape[1]:
            raise InputError(
                f"embedding shard {str(p)!r} has dimension {arr.shape[1]} but {str(first)!r} "
                f"has {ref.shape[1]}; the shards of one folder come from one model: move "
                f"{p.name} (and its metadata file) to the folder of its own model"
            )
        if arr.dtype != ref.dtype:
            raise InputError(
                f"embedding shard {str(p)!r} is {arr.dtype} but {str(first)!r} is {ref.dtype}; "
                f"the shards of one folder share one dtype: re-save {p.name} as {ref.dtype} "
                f"(np.save(path, np.load(path).astype('{ref.dtype}'))) or re-embed the folder"
            )
    return int(ref.shape[1])


def read_shard_metadata(path: Path, emb_path: Path, n_rows: int) -> pd.DataFrame:
    """Read ``metadata_{i}.parquet`` of the shard ``emb_path`` (``n_rows`` rows) and check it:
    readable, an ``image_path`` column, integer ``image_id`` when present, one row per
    embedding row. Errors name the metadata file."""
    try:
        df = pq.read_table(path).to_pandas()
    except (OSError, ValueError) as exc:  # pyarrow.ArrowInvalid is a ValueError
        raise InputError(
            f"metadata file {str(path)!r} is not a readable parquet file: {exc}; {DAMAGED_FIX}"
        ) from None
    if "image_path" not in df.columns:
        raise InputError(
            f"metadata file {str(path)!r} lacks the column 'image_path' (found "
            f"{list(df.columns)}); clip-retrieval metadata has image_path [, image_id], one row "
            f"per row of {emb_path.name}"
        )
    if len(df) != n_rows:
        raise InputError(
            f"metadata file {str(path)!r} has {len(df)} rows but {str(emb_path)!r} has "
            f"{n_rows}; the two files of a shard must come from the same run: {DAMAGED_FIX}"
        )
    if "image_id" in df.columns:
        ids = pd.to_numeric(df["image_id"], errors="coerce")
        bad = ids.isna() | (ids != ids.round())
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputError(
                f"metadata file {str(path)!r}: row {i + 1} has image_id "
                f"{_shown(df['image_id'].iloc[i])}; image ids must be integers"
            )
    return df


def check_unit_norm(x: np.ndarray, what: str, tol: float = 1e-2) -> None:
    """Fail with the measured norms when rows of ``x (n, d)`` are not L2-normalised."""
    norms = np.linalg.norm(np.asarray(x, dtype=np.float32), axis=1)
    bad = np.abs(norms - 1.0) > tol
    if bad.any():
        raise InputError(
            f"{what} are not L2-normalised: {int(bad.sum())} of {len(norms)} checked rows have "
            f"norms outside 1 ± {tol} (measured min {norms.min():.4g}, max {norms.max():.4g}); "
            f"normalise them (inquire.embed.base.l2_normalize) before searching"
        )


def path_key(paths: pd.Series) -> np.ndarray:
    """``(n,) object`` keys that join image paths across files: without the image extension
    and a leading ``./``, with ``/`` separators (INQUIRE's metadata has no ``.jpg``, its
    annotations do)."""
    s = paths.astype(str).str.strip().str.replace("\\", "/", regex=False).str.removeprefix("./")
    suffixes = "|".join(re.escape(x) for x in sorted(IMAGE_SUFFIXES))
    out = s.str.replace(f"(?:{suffixes})$", "", regex=True, case=False)
    return out.to_numpy(dtype=object)


def _shown(value: object) -> str:
    """A cell as a message shows it (numpy scalars as Python's)."""
    item = getattr(value, "item", None)
    return repr(item() if callable(item) else value)
