"""Images stored inside parquet files (INQUIRE-Rerank's ``image`` column), served by id.

INQUIRE-Rerank ships its candidates' pixels only inside its parquet shards (column ``image``,
the HF ``Image`` struct ``{bytes, path}``), so a rerank result has no image files to point at.
:class:`ParquetImages` serves them:

- only files registered at start-up are ever opened (``--rerank-data`` or a rerank result's
  ``config["files"]``); nothing from a request becomes a path;
- the id -> (file, row) index is built on first use from the id column alone
  (``inat24_image_id``, or ``image_id``); the first file that lists an id wins;
- an image's bytes are read from the one row group that holds its row, then checked like a
  file: at most :data:`MAX_IMAGE_BYTES`, and a format Pillow recognises as one the page shows.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from inquire.errors import InputError
from inquire.web.images import ImageNotFound, NotAnImage, image_format

log = logging.getLogger(__name__)

IMAGE_COLUMN = "image"
# The id column of INQUIRE-Rerank shards first, then a plain one.
ID_COLUMNS = ("inat24_image_id", "image_id")
# Larger blobs are refused: no photo of the collection comes near this.
MAX_IMAGE_BYTES = 64 * 1024 * 1024
# Row groups of image columns kept decoded in memory (a grid reads neighbouring rows).
ROW_GROUP_CACHE = 2


@dataclass(frozen=True)
class ParquetImage:
    """Where one image of a registered parquet file lives (nothing is read yet).

    ``source_key``: the file's real path, modification time (ns), byte size and the row, so
    a changed file gets new thumbnails; ``name``: what error messages call the image.
    """

    file: int
    row: int
    source_key: str
    name: str


@dataclass(frozen=True)
class _File:
    path: Path
    id_column: str


class ParquetImages:
    """Image id -> image bytes from registered parquet files (see module docs).

    ``paths``: parquet files with an ``image`` column (HF ``Image`` struct or plain binary)
    and an id column (:data:`ID_COLUMNS`). Bad files fail here, at start-up.
    """

    def __init__(self, paths: Sequence[str | os.PathLike[str]] = ()) -> None:
        self.files: list[_File] = []
        self._index: pd.Series | None = None  # image id -> position (file << 32 | row)
        self._lock = threading.Lock()
        self._groups: OrderedDict[tuple[int, int], object] = OrderedDict()
        for p in paths:
            self.add(p)

    def add(self, path: str | os.PathLike[str]) -> None:
        """Register ``path`` (a file already registered is skipped)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        real = Path(os.path.realpath(Path(path).expanduser()))
        if any(f.path == real for f in self.files):
            return
        if not real.is_file():
            raise InputError(
                f"rerank data file {str(path)!r} does not exist; pass --rerank-data with an "
                f"INQUIRE-Rerank parquet file"
            )
        try:
            names = pq.read_schema(real).names
        except (OSError, pa.ArrowInvalid) as exc:
            raise InputError(f"{str(path)!r} is not a readable parquet file: {exc}") from None
        id_col = next((c for c in ID_COLUMNS if c in names), None)
        if IMAGE_COLUMN not in names or id_col is None:
            raise InputError(
                f"{str(path)!r} has no {IMAGE_COLUMN!r} column or no id column "
                f"({' or '.join(ID_COLUMNS)}); give INQUIRE-Rerank parquet files"
            )
        with self._lock:
            self.files.append(_File(real, id_col))
            self._index = None

    def __len__(self) -> int:
        return len(self._build_index())

    def __contains__(self, image_id: object) -> bool:
        try:
            return int(image_id) in self._build_index().index  # type: ignore[call-overload]
        except (TypeError, ValueError):
            return False

    def _build_index(self) -> pd.Series:
        import pyarrow.parquet as pq

        with self._lock:
            if self._index is not None:
                return self._index
            ids: list[np.ndarray] = []
            pos: list[np.ndarray] = []
            for fi, f in enumerate(self.files):
                col = pq.read_table(f.path, columns=[f.id_column]).column(f.id_column)
                arr = col.to_numpy().astype(np.int64)
                ids.append(arr)
                pos.append((np.int64(fi) << 32) | np.arange(len(arr), dtype=np.int64))
            all_ids = np.concatenate(ids) if ids else np.empty(0, np.int64)
            all_pos = np.concatenate(pos) if pos else np.empty(0, np.int64)
            # first occurrence wins: a rerank image appears in several pools with one id
            _, first = np.unique(all_ids, return_index=True)
            self._index = pd.Series(all_pos[first], index=pd.Index(all_ids[first]))
            log.info("indexed %d images in %d parquet file(s)", len(first), len(self.files))
            return self._index

    def locate(self, image_id: int) -> tuple[int, int] | None:
        """(file number in :attr:`files`, 0-based row) holding ``image_id``, or None when no
        registered file has it."""
        if not self.files:
            return None
        index = self._build_index()
        if int(image_id) not in index.index:
            return None
        p = int(index.loc[int(image_id)])
        return p >> 32, p & 0xFFFFFFFF

    def get(self, image_id: int) -> ParquetImage:
        """Where image ``image_id`` is, or :class:`ImageNotFound`; reads no image bytes."""
        where = self.locate(image_id)
        if where is None:
            raise ImageNotFound(
                f"image id {image_id} is unknown: it is in neither the embedding metadata, the "
                f"annotations nor the rerank data given to the server"
            )
        fi, row = where
        st = self.files[fi].path.stat()
        key = f"parquet|{self.files[fi].path}|{st.st_mtime_ns}|{st.st_size}|{row}"
        return ParquetImage(fi, row, key, f"image {image_id}")

    def read(self, image: ParquetImage) -> tuple[bytes, str]:
        """The encoded bytes of ``image`` and their media type, checked like an image file:
        at most :data:`MAX_IMAGE_BYTES` and a format the page shows, else :class:`NotAnImage`.
        """
        value = self._cell(image.file, image.row)
        data = value.get("bytes") if isinstance(value, dict) else value
        if not isinstance(data, bytes | bytearray) or not data:
            raise NotAnImage(f"{image.name} has no embedded bytes in its rerank data file")
        if len(data) > MAX_IMAGE_BYTES:
            raise NotAnImage(
                f"{image.name} is {len(data)} bytes; images over {MAX_IMAGE_BYTES} bytes are "
                f"not shown"
            )
        data = bytes(data)
        return data, image_format(data, image.name)

    def _cell(self, fi: int, row: int) -> object:
        """The ``image`` value at ``row`` of file ``fi``, reading only its row group."""
        import pyarrow.parquet as pq

        path = self.files[fi].path
        pf = pq.ParquetFile(path)
        start = 0
        for rg in range(pf.num_row_groups):
            n = pf.metadata.row_group(rg).num_rows
            if row < start + n:
                break
            start += n
        else:
            raise ImageNotFound(f"the rerank data file {path.name!r} has no row {row}")
        key = (fi, rg)
        with self._lock:
            col = self._groups.get(key)
            if col is not None:
                self._groups.move_to_end(key)
        if col is None:
            col = pf.read_row_group(rg, columns=[IMAGE_COLUMN]).column(IMAGE_COLUMN)
            col = col.combine_chunks()
            with self._lock:
                self._groups[key] = col
                while len(self._groups) > ROW_GROUP_CACHE:
                    self._groups.popitem(last=False)
        return col[row - start].as_py()  # type: ignore[index]
