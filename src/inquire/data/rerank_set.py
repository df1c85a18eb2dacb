"""INQUIRE-Rerank: 100 CLIP-retrieved candidates per query, each labelled relevant or not.

The upstream data (HF dataset ``evendrow/INQUIRE-Rerank``, splits ``validation`` with 40
queries and ``test`` with 160) are parquet shards with one row per (query, candidate). The
columns this package reads:

==================  ===================================================================
column              meaning
==================  ===================================================================
image               HF ``Image`` feature: struct {bytes: binary, path: string}
query               query text
relevant            0/1 (int64; bool accepted): is the candidate relevant to the query
clip_score          the first-stage CLIP similarity (ViT-H-14-378) that selected it
inat24_image_id     int image id in iNat24
inat24_file_name    the image's path in iNat24 (``train/<taxon dir>/<uuid>.jpg``)
supercategory, category, iconic_group   the query's groups
query_id            optional: the published card has no such column (see below)
==================  ===================================================================

Upstream shards also carry ``inat24_species_id, inat24_species_name, latitude, longitude,
location_uncertainty, date, license, rights_holder`` (ignored here).

Query ids: a ``query_id`` column is used when present. Otherwise each query text is matched to
INQUIRE's query tables (``queries``: the columns of :func:`inquire.data.queries.read_queries`)
so per-query results join with full-rank ones; without a table, or when a text does not
match, queries are numbered 1, 2, ... in order of first appearance (logged).

:class:`RerankSet` keeps everything but the images in memory and reads each query's image
bytes from its parquet row groups only when asked (:meth:`RerankSet.images`).
"""

from __future__ import annotations

import json
import logging
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
from inquire.data.queries import UNKNOWN_GROUP
from inquire.errors import InputError, UnknownNameError

log = logging.getLogger(__name__)

RERANK_COLUMNS = (
    "image",
    "query",
    "relevant",
    "clip_score",
    "inat24_image_id",
    "inat24_file_name",
    "supercategory",
    "category",
    "iconic_group",
)
# every column of the published shards, in their order
UPSTREAM_COLUMNS = (
    *RERANK_COLUMNS,
    "inat24_species_id",
    "inat24_species_name",
    "latitude",
    "longitude",
    "location_uncertainty",
    "date",
    "license",
    "rights_holder",
)
SPLITS = {"val": "rerank-val", "test": "rerank-test"}
# RerankSet.query_ids_from: a query_id column of the files, INQUIRE's query table, or 1..n
QUERY_IDS_FROM_DATA = "data"
QUERY_IDS_FROM_TABLE = "query table"
QUERY_IDS_NUMBERED = "numbered"
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
    # Where the query ids come from: QUERY_IDS_FROM_DATA, _FROM_TABLE or _NUMBERED.
    query_ids_from: str = "data"

    def __post_init__(self) -> None:
        self._groups: dict[int, pd.DataFrame] = {
            int(q): g  # type: ignore[arg-type]
            for q, g in self.candidates.groupby("query_id", sort=False)
        }
        self._row_group_cache: dict[tuple[int, int], pa.Array] = {}
        self._files: dict[int, tuple[pq.ParquetFile, np.ndarray]] = {}

    @property
    def query_ids(self) -> list[int]:
        """The query ids, in file order."""
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


def read_rerank_set(
    paths: Sequence[str | os.PathLike[str]],
    queries: pd.DataFrame | None = None,
    number_queries: bool = False,
) -> RerankSet:
    """Read INQUIRE-Rerank parquet shards (upstream layout, see module docs).

    ``queries`` (optional, ``query_id, query_text, ...``): INQUIRE's query table(s), used to
    give each query its INQUIRE id when the files carry no ``query_id`` column. A text that
    is not in ``queries`` is an :class:`InputError` (results numbered otherwise would not
    join with full-rank ones) unless ``number_queries``: then every query is numbered
    1, 2, ... in file order, with a warning. Without ``queries`` they are numbered too.
    """
    if not paths:
        raise InputError("no INQUIRE-Rerank parquet files given")
    frames = []
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
        needed = [c for c in RERANK_COLUMNS if c != "image"]
        if "query_id" in schema.names:
            needed.append("query_id")
        df = pq.read_table(path, columns=needed).to_pandas()
        df["shard"] = shard
        df["row"] = np.arange(len(df))
        frames.append(df)
    raw = pd.concat(frames, ignore_index=True)
    if "query_id" in raw.columns and raw["query_id"].notna().all():
        qid = raw["query_id"].astype(np.int64)
        source = QUERY_IDS_FROM_DATA
    else:
        texts = raw["query"].drop_duplicates().tolist()
        ids = _query_ids(texts, queries, number_queries)
        qid = raw["query"].map(ids)
        # _query_ids numbers the queries when there is no table or a text is not in it
        numbered = queries is None or any(
            str(t).strip() not in _table_texts(queries) for t in texts
        )
        source = QUERY_IDS_NUMBERED if numbered else QUERY_IDS_FROM_TABLE
    candidates = pd.DataFrame(
        {
            "query_id": qid.astype(np.int64),
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
    raw["query_id"] = candidates["query_id"]
    qtable = (
        raw.drop_duplicates("query_id")[
            ["query_id", "query", "supercategory", "category", "iconic_group"]
        ]
        .rename(columns={"query": "query_text"})
        .reset_index(drop=True)
    )
    qtable["query_id"] = qtable["query_id"].astype(np.int64)
    for col in ("supercategory", "category", "iconic_group"):
        # The same rule as read_queries: empty or blank -> the named UNKNOWN_GROUP.
        qtable[col] = qtable[col].fillna("").astype(str).str.strip().replace("", UNKNOWN_GROUP)
    return RerankSet(candidates=candidates, queries=qtable, paths=resolved, query_ids_from=source)


def _table_texts(queries: pd.DataFrame) -> set[str]:
    return {str(t).strip() for t in queries["query_text"]}


def _query_ids(
    texts: list[str], queries: pd.DataFrame | None, number_queries: bool = False
) -> dict[str, int]:
    """Query text -> id: INQUIRE's ids when every text is in ``queries``; else an error, or
    (``number_queries``, or no ``queries`` at all) 1, 2, ... in file order."""
    if queries is not None:
        by_text = {
            str(t).strip(): int(q)
            for q, t in zip(queries["query_id"], queries["query_text"], strict=True)
        }
        found = {t: by_text.get(str(t).strip()) for t in texts}
        unmatched = [t for t, q in found.items() if q is None]
        if not unmatched:
            return {t: int(q) for t, q in found.items() if q is not None}
        if not number_queries:
            raise InputError(
                f"{len(unmatched)} of {len(texts)} INQUIRE-Rerank queries are not in the query "
                f"table (e.g. {unmatched[0]!r}), so their INQUIRE query ids are unknown; pass "
                f"the query CSV(s) of this split (--queries), or --number-queries to number "
                f"the queries 1..{len(texts)} in file order (such ids do not join with "
                f"full-rank results)"
            )
        log.warning(
            "%d of %d rerank queries are not in the given query table (e.g. %r); numbering "
            "queries 1..%d in file order instead",
            len(unmatched),
            len(texts),
            unmatched[0],
            len(texts),
        )
    else:
        log.info("INQUIRE-Rerank files carry no query_id; numbering queries in file order")
    return {t: i for i, t in enumerate(texts, start=1)}


def load_rerank_set(
    split: str, queries: pd.DataFrame | None = None, number_queries: bool = False
) -> RerankSet:
    """Download (once, via the data registry) and read INQUIRE-Rerank ``split`` (val/test).

    Query ids come from ``queries`` when given, else from INQUIRE's query tables (downloaded
    via :func:`inquire.data.queries.load_queries`). When those cannot be had, or do not hold
    every query, it is an error unless ``number_queries`` (see :func:`read_rerank_set`).
    """
    if split not in SPLITS:
        raise UnknownNameError("INQUIRE-Rerank split", split, SPLITS)
    from inquire.data.download import fetch_dataset  # the data registry (lazy)

    paths = fetch_dataset(SPLITS[split])
    if queries is None:
        from inquire.data.queries import load_queries
        from inquire.errors import InquireError

        try:
            queries = pd.concat([load_queries("val"), load_queries("test")], ignore_index=True)
        except (InquireError, ImportError) as exc:
            if not number_queries:
                raise InputError(
                    f"cannot load INQUIRE's query tables to give the {split} queries their ids "
                    f"({exc}); pass --queries with the query CSV(s), or --number-queries to "
                    f"number the queries in file order"
                ) from exc
            log.warning("cannot load INQUIRE's query tables (%s); numbering queries", exc)
    return read_rerank_set(paths, queries=queries, number_queries=number_queries)


def open_rerank_set(
    split: str = "test",
    data: Sequence[str | os.PathLike[str]] = (),
    queries: Sequence[str | os.PathLike[str]] = (),
    number_queries: bool = False,
) -> RerankSet:
    """INQUIRE-Rerank from local parquet files ``data`` (:func:`read_rerank_set`) or, when
    none are given, the downloaded ``split`` (:func:`load_rerank_set`); query ids come from
    the query CSV files ``queries`` when given (see ``number_queries`` there)."""
    from inquire.data.queries import read_queries

    table = pd.concat([read_queries(q) for q in queries], ignore_index=True) if queries else None
    if data:
        return read_rerank_set(list(data), queries=table, number_queries=number_queries)
    return load_rerank_set(split, table, number_queries=number_queries)


# --- a synthetic INQUIRE-Rerank set in the upstream layout ---------------------------------

# Arrow types of the published columns (HF "Image" is a struct of bytes and path).
_TYPES: dict[str, pa.DataType] = {
    "image": pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
    "query": pa.string(),
    "relevant": pa.int64(),
    "clip_score": pa.float64(),
    "inat24_image_id": pa.int64(),
    "inat24_file_name": pa.string(),
    "supercategory": pa.string(),
    "category": pa.string(),
    "iconic_group": pa.string(),
    "inat24_species_id": pa.int64(),
    "inat24_species_name": pa.string(),
    "latitude": pa.float64(),
    "longitude": pa.float64(),
    "location_uncertainty": pa.float64(),
    "date": pa.string(),
    "license": pa.string(),
    "rights_holder": pa.string(),
    "query_id": pa.int64(),
}


def _hf_features(names: Sequence[str]) -> dict[str, dict[str, str]]:
    def feature(t: pa.DataType) -> dict[str, str]:
        if pa.types.is_struct(t):
            return {"_type": "Image"}
        dtype = {pa.int64(): "int64", pa.float64(): "float64", pa.string(): "string"}[t]
        return {"dtype": dtype, "_type": "Value"}

    return {n: feature(_TYPES[n]) for n in names}


def write_synthetic_rerank_set(
    out_dir: str | os.PathLike[str],
    n_val: int = 2,
    n_test: int = 4,
    seed: int = 0,
    pool: int = CANDIDATES_PER_QUERY,
    dim: int = 64,
    image_size: int = 32,
    include_query_id: bool = False,
) -> dict[str, list[Path]]:
    """Write a SYNTHETIC INQUIRE-Rerank set (upstream parquet layout) under ``out_dir``.

    Columns and types are those of the published shards (:data:`UPSTREAM_COLUMNS`;
    ``data/validation-00000-of-00001.parquet`` and ``data/test-...``); ``include_query_id``
    adds a ``query_id`` column, which the published card does not have. The synthetic query
    tables are written beside them (``benchmark/inquire_queries_{val,test}.csv``) so the
    reader can give queries their ids.

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
        names = [*UPSTREAM_COLUMNS, *(["query_id"] if include_query_id else [])]
        rows: dict[str, list[object]] = {name: [] for name in names}
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
                rows["relevant"].append(int(int(image_id) in rel))
                rows["clip_score"].append(float(score))
                rows["inat24_image_id"].append(int(image_id))
                rows["inat24_file_name"].append(file_name)
                rows["supercategory"].append(q["supercategory"])
                rows["category"].append(q["category"])
                rows["iconic_group"].append(q["iconic_group"])
                rows["inat24_species_id"].append(-1)
                rows["inat24_species_name"].append("synthetic")
                rows["latitude"].append(float("nan"))
                rows["longitude"].append(float("nan"))
                rows["location_uncertainty"].append(float("nan"))
                rows["date"].append("")
                rows["license"].append("synthetic")
                rows["rights_holder"].append("synthetic")
                if include_query_id:
                    rows["query_id"].append(qid)
        schema = pa.schema([(n, _TYPES[n]) for n in names])
        table = pa.table(rows, schema=schema).replace_schema_metadata(
            {b"huggingface": json.dumps({"info": {"features": _hf_features(names)}}).encode()}
        )
        upstream_split = {"val": "validation", "test": "test"}[split]
        path = out / "data" / f"{upstream_split}-00000-of-00001.parquet"
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
