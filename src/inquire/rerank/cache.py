"""A persistent cache of reranker outputs (SQLite), and import of INQUIRE's released caches.

Key: the reranker's :class:`~inquire.cache.OutputKey` (:func:`reranker_key`: model id,
revision, precision, and as protocol ``protocol/prompt template version``, e.g.
``inquire-2024/llava-1.5-1``, so one protocol's scores never stand in for another's) + query
text + image id; value: the score (float). The database is set up by
:func:`inquire.cache.connect` (WAL mode, busy timeout), so several processes can read and
write one cache at once; every batch is committed as soon as it is scored, so an interrupted
run resumes where it stopped. Failures (NaN) are never stored, and neither are outputs of
non-deterministic scorers (``reranker.cacheable`` false, e.g. sampled API calls).
API keys are never part of a key or a value.

Layout version 2 keeps the precision in its own column. Version 1 files (precision folded
into the revision as ``REV@bf16``, fp32 as the plain revision) are converted in place the
first time they are opened, by the one migration scheme of every SQLite file
(:func:`inquire.cache.migrate`, ``PRAGMA user_version``); a file from a newer version is
refused. ``meta.schema_version`` still says 2, for earlier versions of inquire.
"""

from __future__ import annotations

import logging
import math
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from inquire import config
from inquire.cache import (
    OutputKey,
    canonical_precision,
    connect,
    key_columns_sql,
    key_match_sql,
    migrate,
    transaction,
)
from inquire.errors import InputError
from inquire.rerank.api import Failure
from inquire.rerank.base import ImageLike, Reranker

if TYPE_CHECKING:
    from inquire.data.rerank_set import RerankSet

log = logging.getLogger(__name__)

CACHE_FILE = "scores.sqlite"
SCHEMA_VERSION = 2

_META = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
_SCORES = f"""
CREATE TABLE IF NOT EXISTS scores (
    {key_columns_sql()},
    query TEXT NOT NULL,
    image_id TEXT NOT NULL,
    score REAL NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (model, revision, precision, protocol, query, image_id)
) WITHOUT ROWID
"""


def reranker_key(reranker: Reranker) -> OutputKey:
    """The cache key of ``reranker``: its id, revision and precision (a local model run in
    bf16 scores slightly differently from fp32; rerankers without a precision count as
    fp32), and as protocol ``protocol/prompt_version`` (the prompt version alone for scorers
    outside any protocol, e.g. CLIP)."""
    protocol = str(getattr(reranker, "protocol", "") or "")
    version = str(reranker.prompt_version)
    return OutputKey.of(reranker, f"{protocol}/{version}" if protocol else version)


def _v1_revision(revision: str, part: int) -> str:
    """Part 0 (revision) or 1 (precision) of a version-1 revision column (``REV@PREC``)."""
    rev, sep, precision = revision.rpartition("@")
    if not sep:
        return revision if part == 0 else canonical_precision("")
    return rev if part == 0 else canonical_precision(precision)


def _layout_2(db: sqlite3.Connection) -> None:
    """Migration 1: the version-2 layout (precision in its own column). A file from before
    user_version was counted is either new, already version 2 (``meta.schema_version``), or
    version 1, converted here; a ``meta.schema_version`` above 2 is refused."""
    db.execute(_META)
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is not None and int(row[0]) > SCHEMA_VERSION:
        raise InputError(
            f"rerank cache has schema version {row[0]}, newer than this inquire's "
            f"{SCHEMA_VERSION}; upgrade inquire or pass another cache file"
        )
    cols = {r[1] for r in db.execute("PRAGMA table_info(scores)")}
    if cols and "precision" not in cols:
        db.create_function("v1_revision", 2, _v1_revision, deterministic=True)
        db.execute("ALTER TABLE scores RENAME TO scores_v1")
        db.execute(_SCORES)
        db.execute(
            "INSERT OR REPLACE INTO scores SELECT model, v1_revision(revision, 0), "
            "v1_revision(revision, 1), prompt_version, query, image_id, score, created "
            "FROM scores_v1"
        )
        db.execute("DROP TABLE scores_v1")
        log.info("converted a rerank cache to schema version %d", SCHEMA_VERSION)
    db.execute(_SCORES)
    db.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
        (str(SCHEMA_VERSION),),
    )


# The upgrades of a rerank cache, in order (PRAGMA user_version = how many were applied).
MIGRATIONS = (_layout_2,)


class ScoreCache:
    """Scores in one SQLite file (default ``config.cache_dir('rerank')/scores.sqlite``)."""

    def __init__(self, path: str | os.PathLike[str] | None = None, timeout_s: float = 60.0):
        self.path = Path(path) if path is not None else config.cache_dir("rerank") / CACHE_FILE
        self._db = connect(self.path, timeout_s=timeout_s, what="rerank cache")
        try:
            migrate(self._db, MIGRATIONS, f"rerank cache {str(self.path)!r}")
        except BaseException as exc:
            # No caller can close a cache whose constructor failed: close the connection here.
            self._db.close()
            if isinstance(exc, sqlite3.DatabaseError):
                raise InputError(
                    f"rerank cache {str(self.path)!r} is not a usable SQLite database ({exc}); "
                    f"move it away to start a new cache"
                ) from exc
            raise

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()

    def __enter__(self) -> ScoreCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, key: OutputKey, query: str, image_ids: Sequence[Any]) -> dict[str, float]:
        """Cached scores for ``image_ids`` (keys are the ids as strings); misses are absent."""
        ids = [str(i) for i in image_ids]
        found: dict[str, float] = {}
        # SQLite limits bound parameters per statement; query in chunks.
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT image_id, score FROM scores WHERE {key_match_sql()} AND query = ? "
                f"AND image_id IN ({marks})",
                (*key.values, query, *chunk),
            ).fetchall()
            found.update({str(i): float(s) for i, s in rows})
        return found

    def put(self, key: OutputKey, query: str, scores: Mapping[Any, float]) -> int:
        """Store finite ``scores`` (image id -> score) in one transaction; return how many."""
        now = time.time()
        rows = [
            (*key.values, query, str(i), float(s), now)
            for i, s in scores.items()
            if math.isfinite(float(s))
        ]
        if not rows:
            return 0
        with transaction(self._db):  # waits for other writers up to the busy timeout
            self._db.executemany(
                "INSERT OR REPLACE INTO scores "
                "(model, revision, precision, protocol, query, image_id, score, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        return len(rows)

    def count(self, key: OutputKey | None = None) -> int:
        """Number of stored scores (for one model key, or all)."""
        if key is None:
            return int(self._db.execute("SELECT COUNT(*) FROM scores").fetchone()[0])
        return int(
            self._db.execute(
                f"SELECT COUNT(*) FROM scores WHERE {key_match_sql()}", key.values
            ).fetchone()[0]
        )


def score_candidates(
    reranker: Reranker,
    query_text: str,
    image_ids: Sequence[Any],
    images: Sequence[ImageLike] | Callable[[Sequence[int]], Sequence[ImageLike]],
    cache: ScoreCache | None = None,
    chunk: int = 32,
) -> np.ndarray:
    """Scores ``(n,) float64`` of the candidates ``image_ids`` for ``query_text``.

    Cached scores are read first; the rest are scored ``chunk`` at a time and each chunk is
    stored as soon as it is done (so an interrupted run resumes). ``images`` is either the
    images in ``image_ids`` order or a function from positions to images, called only for the
    positions that must be scored (so a fully cached run never reads an image). NaN marks a
    failure; failures are not cached, and nothing is cached for a reranker without a
    revision (nothing pins its weights).
    """
    n = len(image_ids)
    out = np.full(n, np.nan, np.float64)
    key = reranker_key(reranker)
    use_cache = cache is not None and bool(getattr(reranker, "cacheable", True))
    if use_cache and not key.pinned:
        log.info("not caching scores of %s: it has no revision", key.model)
        use_cache = False
    if use_cache and cache is not None:
        hit = cache.get(key, query_text, image_ids)
        for pos, i in enumerate(image_ids):
            if str(i) in hit:
                out[pos] = hit[str(i)]
        todo = [pos for pos, i in enumerate(image_ids) if str(i) not in hit]
    else:
        todo = list(range(n))
    # A scorer may ask for larger chunks (an API reranker keeps `concurrency` requests busy).
    chunk = max(chunk, int(getattr(reranker, "chunk_size", 0)))
    for start in range(0, len(todo), chunk):
        batch = todo[start : start + chunk]
        imgs: Sequence[Any]
        if not getattr(reranker, "needs_images", True):
            imgs = [None] * len(batch)
        elif callable(images):
            imgs = images(batch)
        else:
            imgs = [images[p] for p in batch]
        failures = getattr(reranker, "failures", None)
        seen = len(failures) if isinstance(failures, list) else 0
        scores = np.asarray(reranker.score(query_text, imgs), dtype=np.float64)
        if isinstance(failures, list):
            # The scorer saw only this chunk: name its failures by their place in the whole
            # candidate list and by image id.
            for j in range(seen, len(failures)):
                f = failures[j]
                if isinstance(f, Failure) and 0 <= f.index < len(batch):
                    pos = batch[f.index]
                    failures[j] = replace(f, index=pos, image_id=image_ids[pos])
        if scores.shape != (len(batch),):
            raise InputError(
                f"reranker {reranker.reranker_id!r} returned {scores.shape} scores for "
                f"{len(batch)} images; expected one score per image"
            )
        out[batch] = scores
        if use_cache and cache is not None:
            # A scorer may mark scores of this call that are not to be cached (an API
            # request refused with HTTP 400 scores 0 under inquire-2024, but is asked again).
            skip = set(getattr(reranker, "last_uncached", ()) or ())
            cache.put(
                key,
                query_text,
                {
                    image_ids[p]: s
                    for j, (p, s) in enumerate(zip(batch, scores, strict=True))
                    if j not in skip
                },
            )
    return out


# --- INQUIRE's released LMM caches -----------------------------------------------------------

PICKLE_REFUSAL = (
    "{path!r} is a pickled Python object (INQUIRE's released score caches are .npy files "
    "holding a pickled dict). Loading a pickle runs whatever code the file contains, so it is "
    "only safe for files you trust; pass --trust-pickle (trust_pickle=True) to load it"
)


def check_npy_file(path: Path) -> None:
    """Refuse a missing file, or one that is not a ``.npy`` file at all (by its magic bytes),
    before a pickle is even mentioned."""
    if not path.is_file():
        raise InputError(f"score cache {str(path)!r} does not exist")
    with open(path, "rb") as fh:
        magic = fh.read(6)
    if magic != b"\x93NUMPY":
        raise InputError(
            f"{str(path)!r} is not a .npy file (it does not start with numpy's header); "
            "INQUIRE's released score caches are .npy files such as "
            "'llava-hf--llava-1.5-13b-hf--cache.npy': check the path"
        )


@dataclass(frozen=True)
class ImportReport:
    """What :func:`import_inquire_cache` did."""

    imported: int
    skipped_image: int  # image path not in the candidate set
    skipped_query: int  # prompt names no known query
    skipped_value: int  # value is neither a number, a reply with logprobs nor a refusal
    refused: int = 0  # stored HTTP 400 responses, scored 0 as INQUIRE did
    model: str | None = None  # the INQUIRE model whose exact prompts were matched


def import_inquire_cache(
    npy_path: str | os.PathLike[str],
    cache: ScoreCache,
    key: OutputKey,
    queries: Iterable[str],
    image_ids_by_file: Mapping[str, int],
    trust_pickle: bool = False,
    prompt_template: str | None = None,
    model: str | None = None,
) -> ImportReport:
    """Copy INQUIRE's ``{"{image_name}--{prompt}": value}`` cache into ``cache`` under ``key``.

    INQUIRE's ``ModelWrapperWithCache`` keys are the image name (``inat24_file_name`` on
    INQUIRE-Rerank, ``image_path + ".jpg"`` in two-stage runs) + ``"--"`` + the full
    model-specific prompt of ``get_lmm_prompt``; values are P(Yes)/(P(Yes)+P(No)) floats for
    open models and raw chat-completions replies for the GPT models (scored here from the
    first token's ``top_logprobs``, only the tokens ``Yes``/``No``; a stored HTTP 400
    response scores 0, as INQUIRE's ``convert_gpt_response_to_preds``).

    Prompts are mapped to query texts exactly when the INQUIRE model is known: ``model`` (an
    upstream name such as ``llava-hf/llava-1.5-13b-hf``, an alias such as ``gpt-4o-2024-08-06``
    or the cache's file name), else the file name itself when it is one of INQUIRE's
    (``llava-hf--llava-1.5-13b-hf--cache.npy``); then every query's upstream prompt is built
    (:data:`inquire.rerank.protocol.UPSTREAM_MODELS`) and matched character for character.
    Otherwise ``prompt_template`` (``{query}`` marks the query), else the longest known query
    text the prompt contains. The image is mapped by its file name (last path component)
    through ``image_ids_by_file`` (file name -> image id; e.g. from :class:`RerankSet`).
    """
    from inquire.rerank.protocol import upstream_model

    path = Path(npy_path)
    check_npy_file(path)
    if not trust_pickle:
        raise InputError(PICKLE_REFUSAL.format(path=str(path)))
    row = None
    if model is not None:
        row = upstream_model(model)
    else:
        try:
            row = upstream_model(path.name)
        except KeyError:
            row = None
    try:
        obj = np.load(path, allow_pickle=True)
        # np.save of a dict stores a 0-d object array around it
        data = obj.item() if isinstance(obj, np.ndarray) and obj.shape == () else obj
    except Exception as exc:  # unpickling a damaged file can raise almost any exception type
        raise InputError(
            f"{str(path)!r} is not a readable .npy score cache ({type(exc).__name__}: {exc}); "
            f"it may be truncated or not the released file: download it again"
        ) from None
    if not isinstance(data, dict):
        raise InputError(
            f"{str(path)!r} holds a {type(data).__name__}; expected a dict keyed "
            f"'{{image_name}}--{{prompt}}'"
        )
    known = sorted({str(q) for q in queries}, key=len, reverse=True)
    exact = {row.prompt(q): q for q in known} if row is not None else None
    pattern = None
    if prompt_template and exact is None:
        before, _, after = prompt_template.partition("{query}")
        pattern = re.compile(re.escape(before) + "(.*)" + re.escape(after), re.DOTALL)
    by_file = {Path(str(f)).name: int(i) for f, i in image_ids_by_file.items()}
    grouped: dict[str, dict[int, float]] = {}
    skipped_image = skipped_query = skipped_value = refused = 0
    for raw_key, value in data.items():
        image_path, sep, prompt = str(raw_key).partition("--")
        image_id = by_file.get(Path(image_path).name) if sep else None
        if image_id is None:
            skipped_image += 1
            continue
        query: str | None
        if exact is not None:
            query = exact.get(prompt)
        else:
            match = pattern.fullmatch(prompt) if pattern else None
            if match and match.group(1) in known:
                query = match.group(1)
            else:
                query = next((q for q in known if q in prompt), None)
        if query is None:
            skipped_query += 1
            continue
        if _is_refusal(value):
            refused += 1
        score = _released_score(value)
        if score is None or not math.isfinite(score):
            skipped_value += 1
            continue
        grouped.setdefault(query, {})[image_id] = score
    imported = sum(cache.put(key, q, scores) for q, scores in grouped.items())
    report = ImportReport(
        imported,
        skipped_image,
        skipped_query,
        skipped_value,
        refused,
        row.upstream if row is not None else None,
    )
    log.info("imported %s from %s", report, path)
    return report


def _is_refusal(value: Any) -> bool:
    """Whether a released cache value is a stored HTTP 400 response (a refused request)."""
    return getattr(value, "status_code", None) == 400


def _released_score(value: Any) -> float | None:
    """A released cache value as a score: a number (open models), a stored HTTP 400 response
    (0, as INQUIRE scored refusals) or a chat-completions reply with ``top_logprobs`` (API
    models, scored as INQUIRE did: exact ``Yes``/``No`` tokens). Anything else is None."""
    if _is_refusal(value):
        return 0.0
    if isinstance(value, dict):
        from inquire.rerank.api import score_from_top_logprobs

        try:
            top = value["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
            return score_from_top_logprobs(top, exact=True)[0]
        except (KeyError, IndexError, TypeError, ValueError):
            return None
    if isinstance(value, (bool, str, bytes)):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class CachedReranker:
    """Scores only from the cache (e.g. imported INQUIRE outputs); a miss is a failure (NaN).

    Id ``cached:<name>``; entries are stored under revision ``imported``, prompt version
    ``imported`` and the protocol (default ``inquire-2024``, the protocol of INQUIRE's
    released outputs).
    """

    cacheable = True
    needs_images = False  # a miss is a failure whatever the image; never read one

    def __init__(self, name: str, protocol: str | None = None) -> None:
        from inquire.rerank.protocol import get_protocol

        self.reranker_id = f"cached:{name}"
        # Running again cannot help: a miss is an output nobody imported.
        self.failure_hint = (
            f"the score cache holds no imported score for them: import INQUIRE's outputs first "
            f"with `inquire rerank import-cache FILE.npy --name {name}` (same --protocol), as "
            f"`inquire rerank import-cache --help` describes"
        )
        self.revision = "imported"
        self.prompt_version = "imported"
        self.protocol = get_protocol(protocol).name

    def score(self, query_text: str, images: Sequence[ImageLike]) -> np.ndarray:
        """Every call means the cache had no entry: all NaN (recorded failures)."""
        log.warning(
            "%s: %d images for query %r are not in the imported cache (protocol %s)",
            self.reranker_id,
            len(images),
            query_text,
            self.protocol,
        )
        return np.full(len(images), np.nan, np.float64)


def import_as_cached_reranker(
    npy_path: str | os.PathLike[str],
    name: str,
    rerank_set: RerankSet | Callable[[], RerankSet],
    protocol: str | None = None,
    trust_pickle: bool = False,
    prompt_template: str | None = None,
    model: str | None = None,
    cache_path: str | os.PathLike[str] | None = None,
) -> tuple[ImportReport, CachedReranker]:
    """``inquire rerank import-cache``: import INQUIRE's released score cache ``npy_path``
    (:func:`import_inquire_cache`) into the score cache (``cache_path``, default the user
    cache) as reranker ``cached:<name>`` under ``protocol``.

    ``rerank_set``: the INQUIRE-Rerank set whose candidates the cache scores (file names ->
    image ids, query texts), or a function loading it, called only after the refusal of an
    untrusted pickle and the check that ``npy_path`` exists (so nothing is downloaded for a
    refused import). Returns the import's counts and the reranker to evaluate.
    """
    path = Path(npy_path)
    check_npy_file(path)
    if not trust_pickle:
        raise InputError(PICKLE_REFUSAL.format(path=str(path)))
    rs = rerank_set() if callable(rerank_set) else rerank_set
    target = CachedReranker(name, protocol=protocol)
    with ScoreCache(cache_path) as cache:
        report = import_inquire_cache(
            path,
            cache,
            reranker_key(target),
            rs.queries["query_text"].tolist(),
            rs.file_names(),
            trust_pickle=trust_pickle,
            prompt_template=prompt_template,
            model=model,
        )
    return report, target
