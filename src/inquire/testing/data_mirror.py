"""Builders for download tests: a mirror folder in the upstream layout, fixture annotations."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from inquire.data.registry import Artifact, get_artifact


def write_mirror(root: str | os.PathLike[str], files: Mapping[str | Artifact, bytes]) -> Path:
    """Write each artifact's bytes at ``root/<mirror_path>``; return ``root``.

    ``root`` then serves as an ``INQUIRE_BASE_URL`` mirror (through
    :class:`inquire.testing.http_server.FixtureServer`).
    """
    root = Path(root)
    for key, data in files.items():
        art = key if isinstance(key, Artifact) else get_artifact(key)
        target = root / art.mirror_path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return root


def annotations_csv(queries: pd.DataFrame, seed: int = 0, max_per_query: int = 20) -> bytes:
    """A small annotations CSV (``query_id, image_id, image_path``) for ``queries``.

    Each query gets 1..``max_per_query`` relevant images with distinct ids and iNat-style
    paths; deterministic for a ``seed``.
    """
    rng = np.random.default_rng(seed)
    rows = []
    next_id = 1
    for qid in queries["query_id"].to_numpy(np.int64):
        for _ in range(int(rng.integers(1, max_per_query + 1))):
            rows.append(
                (int(qid), next_id, f"train/00001_Animalia_Fixture/{next_id:08d}-fixture.jpg")
            )
            next_id += int(rng.integers(1, 5))
    frame = pd.DataFrame(rows, columns=["query_id", "image_id", "image_path"])
    return frame.to_csv(index=False).encode()


def tar_gz(members: Mapping[str, bytes]) -> bytes:
    """A ``.tar.gz`` archive (bytes) holding ``members`` (name -> content)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
