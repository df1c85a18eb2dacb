"""INQUIRE-Rerank: 100 CLIP-retrieved candidates per query, each labelled relevant or not.

The upstream data (HF dataset ``evendrow/INQUIRE-Rerank``) are parquet shards with one row per
(query, candidate):

==================  ===================================================================
column              meaning
==================  ===================================================================
image               HF ``Image`` feature: struct {bytes: binary, path: string}
query               query text
query_id            int
relevant            0/1 (or bool): is the candidate relevant to the query
clip_score          the first-stage CLIP similarity (ViT-H-14-378) that selected it
inat24_image_id     int image id in iNat24
inat24_file_name    the image's path in iNat24 (``train/<taxon dir>/<uuid>.jpg``)
supercategory, category, iconic_group   the query's groups
==================  ===================================================================

:class:`RerankSet` keeps everything but the images in memory and reads each query's image
bytes from its parquet row groups only when asked (:meth:`RerankSet.images`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from inquire._io import atomic_open, atomic_path
from inquire.data.qrels import Qrels
from inquire.errors import InputError, UnknownNameError

RERANK_COLUMNS = (
    "image",
    "query",
    "query_id",
    "relevant",
    "clip_score",
    "inat24_image_id",
    "inat24_file_name",
    "supercategory",
    "category",
    "iconic_group",
)
SPLITS = {"val": "rerank-val", "test": "rerank-test"}
CANDIDATES_PER_QUERY = 100


@dataclass
class RerankSet:
    """One split of INQUIRE-Rerank.

    ``candidates``: one row per (query, candidate) in file order, columns ``query_id (int64),
    image_id (int64), relevant (bool), clip_score (float64), file_name (str), shard (int),
    row (int, index within its shard)``. ``queries``: ``query_id, query_text, supercategory,
    category, iconic_group`` (the columns :func:`inquire.eval.evaluate` expects).
    """

    candidates: pd.DataFrame
    queries: pd.DataFrame
    paths: tuple[Path, ...]

    def __post_init__(self) -> None:
        self._groups: dict[int, pd.DataFrame] = {
            int(q): g  # type: ignore[arg-type]
            for q, g in self.candidates.groupby("query_id", sort=False)
        }
        self._row_group_cache: dict[tuple[int, int], pa.Array] = {}
        self._files: dict[int, tuple[pq.ParquetFile, np.ndarray]] = {}

    @property
    def query_ids(self) -> list[int]:
        return [int(q) for q in self.queries["query_id"]]

    def pool(self, query_id: int) -> pd.DataFrame:
        """The candidate rows of ``query_id`` (in file order)."""
        if int(query_id) not in self._groups:
            raise InputError(f"query {query_id} is not in this rerank set")
        return self._groups[int(query_id)]

    def qrels(self) -> Qrels:
        """Relevant candidates per query (every query appears, possibly with an empty set)."""
        return Qrels(
            {q: g.loc[g["relevant"], "image_id"].tolist() for q, g in self._groups.items()}
        )

    def n_relevant(self) -> dict[int, int]:
        """R per query as INQUIRE-Rerank defines it: relevant candidates in the pool."""
        return {q: int(g["relevant"].sum()) for q, g in self._groups.items()}

    def file_names(self) -> dict[str, int]:
        """iNat24 file name -> image id, for every candidate."""
        return dict(
            zip(self.candidates["file_name"], self.candidates["image_id"].astype(int), strict=True)
        )

    def images(self, query_id: int, positions: Sequence[int] | None = None) -> list[bytes]:
        """Encoded image bytes of the candidates of ``query_id`` (optionally only some
        positions in the pool), read from the parquet files on demand."""
        pool = self.pool(query_id)
        rows = pool if positions is None else pool.iloc[list(positions)]
        out: list[bytes] = []
        for shard, row in zip(rows["shard"], rows["row"], strict=True):
            out.append(self._image_at(int(shard), int(row)))
        return out

    def _image_at(self, shard: int, row: int) -> bytes:
        if shard not in self._files:
            pf = pq.ParquetFile(self.paths[shard])
            sizes = [pf.metadata.row_group(rg).num_rows for rg in range(pf.num_row_groups)]
            self._files[shard] = (pf, np.cumsum([0, *sizes]))
        pf, starts = self._files[shard]
        rg = int(np.searchsorted(starts, row, side="right")) - 1
        if row < 0 or rg >= pf.num_row_groups:
            raise InputError(f"{str(self.paths[shard])!r} has no row {row}")
        key = (shard, rg)
        if key not in self._row_group_cache:
            # one row group at a time: bounded memory however large the split
            self._row_group_cache.clear()
            col = pf.read_row_group(rg, columns=["image"]).column("image")
            self._row_group_cache[key] = col.combine_chunks()
        value = self._row_group_cache[key][row - int(starts[rg])].as_py()
        data = value.get("bytes") if isinstance(value, dict) else value
        if not data:
            raise InputError(
                f"{str(self.paths[shard])!r} row {row}: the image has no embedded bytes"
            )
        return bytes(data)


def read_rerank_set(paths: Sequence[str | os.PathLike[str]]) -> RerankSet:
    """Read INQUIRE-Rerank parquet shards (upstream layout, see module docs)."""
    if not paths:
        raise InputError("no INQUIRE-Rerank parquet files given")
    frames = []
    needed = [c for c in RERANK_COLUMNS if c != "image"]
    resolved = tuple(Path(p) for p in paths)
    for shard, path in enumerate(resolved):
        if not path.is_file():
            raise InputError(f"INQUIRE-Rerank file {str(path)!r} does not exist")
        try:
            schema = pq.read_schema(path)
        except (OSError, pa.ArrowInvalid) as exc:
            raise InputError(f"{str(path)!r} is not a readable parquet file: {exc}") from exc
        missing = [c for c in RERANK_COLUMNS if c not in schema.names]
        if missing:
            raise InputError(
                f"{str(path)!r} lacks column(s) {missing}; an INQUIRE-Rerank shard has "
                f"{list(RERANK_COLUMNS)}"
            )
        df = pq.read_table(path, columns=needed).to_pandas()
        df["shard"] = shard
        df["row"] = np.arange(len(df))
        frames.append(df)
    raw = pd.concat(frames, ignore_index=True)
    candidates = pd.DataFrame(
        {
            "query_id": raw["query_id"].astype(np.int64),
            "image_id": raw["inat24_image_id"].astype(np.int64),
            "relevant": raw["relevant"].astype(bool),
            "clip_score": raw["clip_score"].astype(np.float64),
            "file_name": raw["inat24_file_name"].astype(str),
            "shard": raw["shard"].astype(np.int64),
            "row": raw["row"].astype(np.int64),
        }
    )
    dup = candidates.duplicated(["query_id", "image_id"])
    if dup.any():
        first = candidates[dup].iloc[0]
        raise InputError(
            f"image {int(first['image_id'])} is a candidate of query {int(first['query_id'])} "
            f"more than once; each pool lists an image once"
        )
    queries = (
        raw.drop_duplicates("query_id")[
            ["query_id", "query", "supercategory", "category", "iconic_group"]
        ]
        .rename(columns={"query": "query_text"})
        .reset_index(drop=True)
    )
    queries["query_id"] = queries["query_id"].astype(np.int64)
    for col in ("supercategory", "category", "iconic_group"):
        queries[col] = queries[col].fillna("Unknown").replace("", "Unknown").astype(str)
    return RerankSet(candidates=candidates, queries=queries, paths=resolved)


def load_rerank_set(split: str) -> RerankSet:
    """Download (once, via the data registry) and read INQUIRE-Rerank ``split`` (val/test)."""
    if split not in SPLITS:
        raise UnknownNameError("INQUIRE-Rerank split", split, SPLITS)
    from inquire.data.download import fetch_dataset  # the data registry (lazy)

    return read_rerank_set(fetch_dataset(SPLITS[split]))


# --- a synthetic INQUIRE-Rerank set in the upstream layout ---------------------------------

_HF_FEATURES = {
    "image": {"_type": "Image"},
    "query": {"dtype": "string", "_type": "Value"},
    "query_id": {"dtype": "int64", "_type": "Value"},
    "relevant": {"dtype": "int64", "_type": "Value"},
    "clip_score": {"dtype": "float64", "_type": "Value"},
    "inat24_image_id": {"dtype": "int64", "_type": "Value"},
    "inat24_file_name": {"dtype": "string", "_type": "Value"},
    "supercategory": {"dtype": "string", "_type": "Value"},
    "category": {"dtype": "string", "_type": "Value"},
    "iconic_group": {"dtype": "string", "_type": "Value"},
}
_SCHEMA = pa.schema(
    [
        ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        ("query", pa.string()),
        ("query_id", pa.int64()),
        ("relevant", pa.int64()),
        ("clip_score", pa.float64()),
        ("inat24_image_id", pa.int64()),
        ("inat24_file_name", pa.string()),
        ("supercategory", pa.string()),
        ("category", pa.string()),
        ("iconic_group", pa.string()),
    ]
)


def write_synthetic_rerank_set(
    out_dir: str | os.PathLike[str],
    n_val: int = 2,
    n_test: int = 4,
    seed: int = 0,
    pool: int = CANDIDATES_PER_QUERY,
    dim: int = 64,
    image_size: int = 32,
) -> dict[str, list[Path]]:
    """Write a SYNTHETIC INQUIRE-Rerank set (upstream parquet layout) under ``out_dir``.

    Built from :func:`inquire.data.synthetic.make_synthetic_benchmark` with images: each
    query's pool is its top ``pool`` images by the synthetic text-image cosine (as upstream
    pools are CLIP ViT-H-14-378's top 100), ``clip_score`` is that cosine, ``relevant`` comes
    from the synthetic annotations. Queries whose pool holds no relevant image are left out
    (R = 0 makes AP undefined). Returns ``{"val": [path], "test": [path]}``.
    """
    from inquire.data.qrels import read_qrels
    from inquire.data.queries import read_queries
    from inquire.data.synthetic import make_synthetic_benchmark
    from inquire.embed import EmbeddingStore, load_encoder
    from inquire.index.exact import search

    out = Path(out_dir)
    n_images = max(200 * (n_val + n_test), pool * (n_val + n_test))
    bench = make_synthetic_benchmark(
        out / "benchmark",
        n_images=n_images,
        dim=dim,
        n_val=n_val,
        n_test=n_test,
        n_shards=1,
        seed=seed,
        write_images=True,
        image_size=image_size,
    )
    images_root = bench.images or out / "benchmark" / "images"
    store = EmbeddingStore(bench.embeddings)
    meta = store.metadata
    path_of = dict(zip(meta["image_id"].astype(int), meta["image_path"].astype(str), strict=True))
    qrels = read_qrels(bench.annotations)
    encoder = load_encoder(f"precomputed:{bench.text_embeddings}")
    written: dict[str, list[Path]] = {}
    for split, qfile in (("val", bench.queries_val), ("test", bench.queries_test)):
        queries = read_queries(qfile)
        q_emb = encoder.encode_text(queries["query_text"].tolist())
        scores, ids = search(store, q_emb, k=pool)
        rows: dict[str, list[object]] = {name: [] for name in _SCHEMA.names}
        for qi, q in enumerate(queries.to_dict("records")):
            qid = int(q["query_id"])
            rel = qrels.get(qid, frozenset())
            if not any(int(i) in rel for i in ids[qi]):
                continue
            for image_id, score in zip(ids[qi], scores[qi], strict=True):
                rel_path = path_of[int(image_id)]
                file_name = f"{rel_path}.jpg"
                data = (images_root / file_name).read_bytes()
                rows["image"].append({"bytes": data, "path": Path(file_name).name})
                rows["query"].append(q["query_text"])
                rows["query_id"].append(qid)
                rows["relevant"].append(int(int(image_id) in rel))
                rows["clip_score"].append(float(score))
                rows["inat24_image_id"].append(int(image_id))
                rows["inat24_file_name"].append(file_name)
                rows["supercategory"].append(q["supercategory"])
                rows["category"].append(q["category"])
                rows["iconic_group"].append(q["iconic_group"])
        table = pa.table(rows, schema=_SCHEMA).replace_schema_metadata(
            {b"huggingface": json.dumps({"info": {"features": _HF_FEATURES}}).encode()}
        )
        path = out / "data" / f"{split}-00000-of-00001.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            # small row groups, as the upstream shards, so images are read a group at a time
            pq.write_table(table, tmp, row_group_size=pool * 2)
        written[split] = [path]
    with atomic_open(out / "SYNTHETIC.txt", "w", encoding="utf-8") as fh:
        fh.write(
            "This INQUIRE-Rerank set is SYNTHETIC (made-up queries, random images and\n"
            f"embeddings; seed={seed}). Its metrics say nothing about any real model.\n"
        )
    return written
