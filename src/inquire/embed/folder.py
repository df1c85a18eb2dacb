"""The clip-retrieval embedding layout: the one reader and writer of its names and files.

    ROOT/img_emb/img_emb_{i}.npy          (n_i, d) embeddings of shard i (float16 written)
    ROOT/metadata/metadata_{i}.parquet    the n_i rows' image_path [, image_id] (row-aligned)
    ROOT/manifest.json                    optional: the commit record of ``inquire embed``

Every module that names, lists, writes or removes these files goes through this one:
``inquire embed`` (:mod:`inquire.embed.pipeline`), collections, the synthetic benchmark and
the test stores write with :func:`write_shard`; :class:`~inquire.embed.store.EmbeddingStore`
and the collection code list shards with :func:`list_shards` / :func:`shard_numbers`.

**Shard names.** clip-retrieval zero-pads the shard number to the width of the partition
count once there are ten or more partitions (``img_emb_00.npy`` ... ``img_emb_11.npy``,
``metadata_00.parquet`` ...; ``str(i).zfill(int(log10(count)) + 1)`` in its writer), and
writes ``img_emb_0.npy`` for a single partition. INQUIRE's published folders come from that
writer; :func:`write_shard` writes unpadded numbers. Readers accept both: a shard is
identified by the integer value of its number, shards are ordered numerically
(``img_emb_2`` before ``img_emb_10``), and each ``.npy`` is paired with the metadata file of
the same number, whatever the padding of either name.

**Write order: metadata first, embeddings second.** Readers discover a shard by its ``.npy``
file and refuse an embedding file without metadata. Each file is renamed into place whole
(temporary file + rename), so a writer killed between the two renames leaves a metadata file
without embeddings, which readers ignore (with a warning) and the next writer of that number
replaces; the reverse order would leave a ``.npy`` without metadata, which makes the whole
folder unreadable until someone removes it. Writers that keep a commit record (the
manifest of ``inquire embed``, the database of a collection) record a shard only after both
files are in place, so a resumed run rewrites whatever was not recorded.

**Image paths.** A metadata ``image_path`` is relative to the images folder the embeddings
were computed from. INQUIRE's published metadata records iNat24 paths without their
``.jpg`` (``train/<taxon dir>/<uuid>``); :func:`image_path_candidates` is the one rule that
maps a recorded path to the file names to look for (the web page's image server and the
two-stage reranker's image lookup both use it).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inquire._io import atomic_open, atomic_path, write_json
from inquire.embed.images import IMAGE_SUFFIXES
from inquire.errors import InputError

log = logging.getLogger(__name__)

EMB_DIR = "img_emb"
META_DIR = "metadata"
MANIFEST = "manifest.json"
_EMB_RE = re.compile(r"^img_emb_(\d+)\.npy$")
_META_RE = re.compile(r"^metadata_(\d+)\.parquet$")
# What a damaged file needs, in every reader's error message.
DAMAGED_FIX = (
    "it is damaged or was not written completely (an interrupted copy or download?): "
    "copy or download it again, or re-create the folder with `inquire embed ... --overwrite`"
)


@dataclass(frozen=True)
class Shard:
    """One shard: its number and its two files (``metadata`` is None when not required)."""

    number: int
    embeddings: Path
    metadata: Path | None


def emb_file_name(number: int) -> str:
    """``img_emb_{number}.npy``: the name :func:`write_shard` gives shard ``number``."""
    return f"img_emb_{int(number)}.npy"


def meta_file_name(number: int) -> str:
    """``metadata_{number}.parquet``: the name :func:`write_shard` gives shard ``number``."""
    return f"metadata_{int(number)}.parquet"


def emb_dir(root: str | os.PathLike[str]) -> Path:
    """``ROOT/img_emb``: the folder of the embedding files."""
    return Path(root) / EMB_DIR


def meta_dir(root: str | os.PathLike[str]) -> Path:
    """``ROOT/metadata``: the folder of the metadata files."""
    return Path(root) / META_DIR


def manifest_path(root: str | os.PathLike[str]) -> Path:
    """``ROOT/manifest.json``."""
    return Path(root) / MANIFEST


def shard_paths(root: str | os.PathLike[str], number: int) -> tuple[Path, Path]:
    """``(embeddings, metadata)``: where :func:`write_shard` puts shard ``number``."""
    return emb_dir(root) / emb_file_name(number), meta_dir(root) / meta_file_name(number)


def shard_relpaths(number: int) -> tuple[str, str]:
    """The two files of shard ``number`` relative to the root, ``/``-separated (as a
    manifest records them): ``("img_emb/img_emb_{i}.npy", "metadata/metadata_{i}.parquet")``."""
    return f"{EMB_DIR}/{emb_file_name(number)}", f"{META_DIR}/{meta_file_name(number)}"


def is_embedding_folder(root: str | os.PathLike[str]) -> bool:
    """Whether ``root`` has an ``img_emb/`` folder (it may still hold no shard)."""
    return emb_dir(root).is_dir()


def _numbered(folder: Path, pattern: re.Pattern[str]) -> dict[int, Path]:
    """``number -> path`` of the files in ``folder`` whose names match ``pattern``.

    Two names for one number (``img_emb_1.npy`` and ``img_emb_01.npy``) are refused.
    """
    found: dict[int, list[Path]] = {}
    if folder.is_dir():
        for p in folder.iterdir():
            if m := pattern.match(p.name):
                found.setdefault(int(m.group(1)), []).append(p)
    dup = {n: sorted(q.name for q in ps) for n, ps in found.items() if len(ps) > 1}
    if dup:
        n, names = min(dup.items())
        raise InputError(
            f"{str(folder)!r} holds {len(names)} files for shard {n}: {', '.join(names)}; "
            f"shard numbers are compared as integers, so padded and unpadded names of one "
            f"number clash. Remove the stale copies (keep one name per shard)"
        )
    return {n: ps[0] for n, ps in sorted(found.items())}


def shard_numbers(root: str | os.PathLike[str]) -> list[int]:
    """Numbers of the ``img_emb`` shards under ``root``, ascending (padded or not)."""
    return list(_numbered(emb_dir(root), _EMB_RE))


def metadata_files(root: str | os.PathLike[str]) -> list[Path]:
    """Every ``metadata_{i}.parquet`` under ``root`` (paired or not), in numeric order."""
    return list(_numbered(meta_dir(root), _META_RE).values())


def folder_state(root: str | os.PathLike[str]) -> tuple[tuple[Any, ...], ...]:
    """What a reader of ``root`` would find there now, as a comparable value: the name,
    device, inode, size and modification and change times of every shard file (embeddings
    and metadata) and of the manifest. A shard added, removed, or replaced (renamed over:
    another inode) or rewritten in place changes it; a long-lived reader compares it with
    the value it took when it opened the folder to notice a new ``inquire embed``. One
    directory listing and one ``stat`` per file: cheap beside a search."""
    root = Path(root)
    out: list[tuple[Any, ...]] = []
    for folder, pattern in ((emb_dir(root), _EMB_RE), (meta_dir(root), _META_RE)):
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            out.append((folder.name, None))  # no folder (or unreadable): no shards there
            continue
        for name in names:
            if pattern.match(name):
                out.append(_file_state(folder / name, f"{folder.name}/{name}"))
    out.append(_file_state(manifest_path(root), MANIFEST))
    return tuple(out)


def _file_state(path: Path, name: str) -> tuple[Any, ...]:
    """``(name, device, inode, size, mtime_ns, ctime_ns)`` of ``path``; ``(name, None)``
    where there is no file (removed since the folder was listed)."""
    try:
        st = path.stat()
    except OSError:
        return (name, None)
    return (name, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def list_shards(
    root: str | os.PathLike[str],
    numbers: Sequence[int] | None = None,
    require_metadata: bool = True,
) -> list[Shard]:
    """The shards under ``root`` in numeric order, each ``.npy`` paired with its metadata.

    ``numbers`` restricts the listing to those shards (e.g. the ones a manifest commits);
    absent ones are left out (callers that expect them check). With ``require_metadata``, an
    embedding file without a metadata file of the same number is refused, naming the files
    on both sides. A metadata file without embeddings is what a writer interrupted between
    its two files leaves (see the write order above): it is ignored, with a warning.
    """
    root = Path(root)
    embs = _numbered(emb_dir(root), _EMB_RE)
    metas = _numbered(meta_dir(root), _META_RE)
    if numbers is not None:
        keep = set(numbers)
        embs = {n: p for n, p in embs.items() if n in keep}
    if require_metadata:
        unpaired = [n for n in embs if n not in metas]
        if unpaired:
            names = [embs[n].name for n in unpaired]
            have = [p.name for p in metas.values()]
            raise InputError(
                f"embedding folder {str(root)!r}: {len(names)} embedding file(s) have no "
                f"metadata file of the same shard number: {_few(names)} (metadata/ holds "
                f"{_few(have) if have else 'no metadata_{i}.parquet files'}). Each "
                f"img_emb/img_emb_{{i}}.npy needs metadata/metadata_{{i}}.parquet with the same "
                f"number i (zero-padding may differ); restore the missing metadata files or "
                f"remove the embedding files they belong to"
            )
    orphans = [metas[n].name for n in metas if n not in embs and numbers is None]
    if orphans:
        log.warning(
            "%s: metadata file(s) without embeddings ignored (an interrupted write?): %s",
            root,
            _few(orphans),
        )
    return [Shard(n, p, metas.get(n)) for n, p in embs.items()]


# The suffix INQUIRE's metadata leaves off its iNat24 image paths.
INAT_IMAGE_SUFFIX = ".jpg"


def image_path_candidates(image_path: str) -> tuple[str, ...]:
    """The relative file paths a metadata ``image_path`` may stand for, in the order to try.

    The path as recorded and, when its name has no image suffix (INQUIRE's metadata records
    ``train/<taxon dir>/<uuid>`` for ``<uuid>.jpg``), the path with ``.jpg`` appended:
    ``"train/a" -> ("train/a", "train/a.jpg")``, ``"x/b.png" -> ("x/b.png",)``.
    """
    if Path(image_path).suffix.lower() in IMAGE_SUFFIXES:
        return (image_path,)
    return (image_path, image_path + INAT_IMAGE_SUFFIX)


def metadata_table(image_paths: Sequence[str], image_ids: Any = None) -> Any:
    """The ``pyarrow.Table`` of one shard's metadata: ``image_path`` (string) and, when
    ``image_ids`` (``(n,)`` integers) is given, ``image_id`` (int64)."""
    import pyarrow as pa

    fields = [pa.field("image_path", pa.string())]
    columns: list[Any] = [pa.array([str(p) for p in image_paths], pa.string())]
    if image_ids is not None:
        fields.append(pa.field("image_id", pa.int64()))
        columns.append(pa.array(np.asarray(image_ids, dtype=np.int64), pa.int64()))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def write_shard(
    root: str | os.PathLike[str],
    number: int,
    emb: np.ndarray,
    image_paths: Sequence[str],
    image_ids: Any = None,
    dtype: Any = np.float16,
) -> tuple[Path, Path]:
    """Write shard ``number`` of the embedding folder ``root``; return its two paths.

    ``emb``: ``(n, d)`` embeddings (stored as ``dtype``, float16 by default; float32 is the
    other dtype readers accept). ``image_paths``: the ``n`` rows' paths; ``image_ids``:
    ``(n,)`` integer ids, or None to leave the column out (INQUIRE's published layout).
    Metadata is written first and embeddings second, each to a temporary file renamed into
    place (see the module docs for why). An existing shard of that number is replaced.
    """
    number = int(number)
    if number < 0:
        raise InputError(f"shard number must be >= 0, got {number}")
    arr = np.asarray(emb)
    if arr.ndim != 2:
        raise InputError(f"shard {number}: embeddings must be an (n, d) matrix, got {arr.shape}")
    if np.dtype(dtype) not in (np.dtype(np.float16), np.dtype(np.float32)):
        raise InputError(f"shard {number}: dtype must be float16 or float32, got {dtype!r}")
    n = arr.shape[0]
    if len(image_paths) != n or (image_ids is not None and len(image_ids) != n):
        n_ids = "none" if image_ids is None else len(image_ids)
        raise InputError(
            f"shard {number}: {n} embedding rows but {len(image_paths)} image paths and "
            f"{n_ids} image ids; the metadata has one row per embedding row"
        )
    import pyarrow.parquet as pq

    table = metadata_table(image_paths, image_ids)
    emb_path, meta_path = shard_paths(root, number)
    with atomic_path(meta_path) as tmp:
        pq.write_table(table, tmp)
    with atomic_open(emb_path, "wb") as fh:
        np.save(fh, arr.astype(dtype, copy=False))
    return emb_path, meta_path


def prepare_folder(root: str | os.PathLike[str]) -> None:
    """Create ``img_emb/`` and ``metadata/`` under ``root`` and remove the temporary files a
    killed writer left there (never renamed into place, so never part of a shard)."""
    for folder in (emb_dir(root), meta_dir(root)):
        folder.mkdir(parents=True, exist_ok=True)
        for tmp in folder.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)


def remove_shards(root: str | os.PathLike[str]) -> None:
    """Delete every shard file (padded or not) and the manifest under ``root``; other files
    (an index, a lock, what the user put there) stay."""
    for folder, pattern in ((emb_dir(root), _EMB_RE), (meta_dir(root), _META_RE)):
        for p in folder.iterdir() if folder.is_dir() else []:
            if pattern.match(p.name):
                p.unlink()
    manifest_path(root).unlink(missing_ok=True)


def read_manifest(root: str | os.PathLike[str], fix: str = DAMAGED_FIX) -> dict[str, Any] | None:
    """The folder's ``manifest.json`` as a dict, None when there is none.

    A manifest that is not JSON, not an object, or whose ``shards`` is not a list is an
    :class:`InputError` naming the file and ending with ``fix``.
    """
    path = manifest_path(root)
    if not path.is_file():
        return None
    try:
        man = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{str(path)!r} is not readable JSON ({exc}); {fix}") from exc
    if not isinstance(man, dict) or not isinstance(man.get("shards", []), list):
        raise InputError(f"{str(path)!r} is not an embedding manifest (a JSON object); {fix}")
    return man


def write_manifest(root: str | os.PathLike[str], manifest: dict[str, Any]) -> None:
    """Write ``manifest`` as ``ROOT/manifest.json``, atomically (the commit of a writer)."""
    write_json(manifest_path(root), manifest)


def _few(names: list[str], k: int = 6) -> str:
    head = ", ".join(names[:k])
    return head + (f" and {len(names) - k} more" if len(names) > k else "")
