"""An encoder whose text embeddings were computed elsewhere and stored in a parquet file.

``precomputed:PATH`` reads ``PATH`` with columns ``query_text`` and ``embedding`` (a list of
floats per row). Used for INQUIRE's published text embeddings and the synthetic benchmark.
It cannot embed images.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from inquire.embed.base import l2_normalize
from inquire.errors import InputError


class PrecomputedEncoder:
    """Looks texts up in a table; ``encode_images`` is not available."""

    def __init__(
        self, path: str, device: str = "cpu", precision: str = "fp32", batch_size: int = 32
    ) -> None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise InputError(
                f"precomputed text embeddings {str(p)!r} do not exist; pass "
                f"precomputed:PATH to a parquet file with columns query_text, embedding"
            )
        table = pq.read_table(p).to_pandas()
        missing = {"query_text", "embedding"} - set(table.columns)
        if missing:
            raise InputError(f"{str(p)!r} lacks column(s) {sorted(missing)}")
        emb = l2_normalize(np.stack(table["embedding"].to_numpy()))
        self._rows = {t: i for i, t in enumerate(table["query_text"])}
        self._emb = emb
        self.model_id = f"precomputed:{p}"
        self.revision = str(table["model_id"].iloc[0]) if "model_id" in table.columns else ""
        self.dim = int(emb.shape[1])
        self.device, self.precision, self.batch_size = device, precision, batch_size

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in texts if t not in self._rows]
        if missing:
            raise InputError(
                f"{len(missing)} text(s) have no precomputed embedding in {self.model_id}, "
                f"e.g. {missing[0]!r}"
            )
        return self._emb[[self._rows[t] for t in texts]]

    def encode_images(self, images: Sequence[Any]) -> np.ndarray:
        raise InputError(
            f"{self.model_id} holds text embeddings only; use an image model to embed images"
        )
