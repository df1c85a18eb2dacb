"""File names of the clip-retrieval embedding layout, parsed and paired in one place.

    ROOT/img_emb/img_emb_{i}.npy          (n_i, d) embeddings of shard i
    ROOT/metadata/metadata_{i}.parquet    the n_i rows' image_path [, image_id]

clip-retrieval zero-pads the shard number to the width of the partition count once there are
ten or more partitions (``img_emb_00.npy`` ... ``img_emb_11.npy``,
``metadata_00.parquet`` ...; ``str(i).zfill(int(log10(count)) + 1)`` in its writer), and
writes ``img_emb_0.npy`` for a single partition. INQUIRE's published folders come from that
writer; ``inquire embed`` and collections write unpadded numbers. Readers accept both: a
shard is identified by the integer value of its number, shards are ordered numerically
(``img_emb_2`` before ``img_emb_10``), and each ``.npy`` is paired with the metadata file of
the same number, whatever the padding of either name.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from inquire.errors import InputError

log = logging.getLogger(__name__)

EMB_DIR = "img_emb"
META_DIR = "metadata"
_EMB_RE = re.compile(r"^img_emb_(\d+)\.npy$")
_META_RE = re.compile(r"^metadata_(\d+)\.parquet$")


@dataclass(frozen=True)
class Shard:
    """One shard: its number and its two files (``metadata`` is None when not required)."""

    number: int
    embeddings: Path
    metadata: Path | None


def emb_file_name(number: int) -> str:
    """``img_emb_{number}.npy``: the name inquire's writers give shard ``number``."""
    return f"img_emb_{int(number)}.npy"


def meta_file_name(number: int) -> str:
    """``metadata_{number}.parquet``: the name inquire's writers give shard ``number``."""
    return f"metadata_{int(number)}.parquet"


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
    return list(_numbered(Path(root) / EMB_DIR, _EMB_RE))


def list_shards(
    root: str | os.PathLike[str],
    numbers: list[int] | None = None,
    require_metadata: bool = True,
) -> list[Shard]:
    """The shards under ``root`` in numeric order, each ``.npy`` paired with its metadata.

    ``numbers`` restricts the listing to those shards (e.g. the ones a manifest commits);
    absent ones are left out (callers that expect them check). With ``require_metadata``, an
    embedding file without a metadata file of the same number is refused, naming the files
    on both sides. A metadata file without embeddings is what a writer interrupted between
    its two files leaves (metadata is written first): it is ignored, with a warning.
    """
    root = Path(root)
    embs = _numbered(root / EMB_DIR, _EMB_RE)
    metas = _numbered(root / META_DIR, _META_RE)
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


def _few(names: list[str], k: int = 6) -> str:
    head = ", ".join(names[:k])
    return head + (f" and {len(names) - k} more" if len(names) > k else "")
