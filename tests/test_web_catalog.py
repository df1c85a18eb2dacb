"""The web page over published embeddings (inquire.web.app, inquire.web.catalog)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def test_web_page_names_published_embedding_rows_by_their_annotated_ids(tmp_path: Path) -> None:
    """INQUIRE's published embeddings have no image_id: full-rank runs name their rows by the
    annotations' ids (joined on image_path). The page must do the same, or /images/X shows the
    image of row X and free-text search returns row numbers."""
    from PIL import Image

    from inquire.testing.search_stores import random_unit, write_store
    from inquire.testing.web_client import page_client
    from inquire.web.app import create_app
    from inquire.web.config import WebConfig

    vecs = random_unit(3, 8, seed=3)
    emb = write_store(
        tmp_path / "emb", vecs, paths=[f"train/x/r{i}" for i in range(3)], with_image_id=False
    )
    images = tmp_path / "images"
    (images / "train" / "x").mkdir(parents=True)
    for i, colour in enumerate(("red", "green", "blue")):
        Image.new("RGB", (8, 8), colour).save(images / "train" / "x" / f"r{i}.jpg")
    ann = tmp_path / "ann.csv"
    ann.write_text("query_id,image_id,image_path\n1,0,train/x/r2.jpg\n1,7,train/x/r0.jpg\n")

    class RowEncoder:
        model_id, revision, dim = "test:row2", "r", 8

        def encode_text(self, texts: list[str]) -> np.ndarray:
            return np.repeat(vecs[2:3].astype(np.float32), len(texts), axis=0)

        def encode_images(self, images: list[object]) -> np.ndarray:
            raise NotImplementedError

    config = WebConfig(image_roots=[images], annotations=[ann], embeddings=emb, model=RowEncoder())
    client = page_client(create_app(config))
    served = client.get("/images/0")
    assert served.status_code == 200
    expected = (images / "train" / "x" / "r2.jpg").read_bytes()
    assert served.content == expected  # annotated image 0 is row 2, not row 0
    top = client.get("/api/search", params={"q": "blue", "k": 3}).json()["results"]
    assert top[0]["image_id"] == 0  # row 2, under its annotated id
    assert {r["image_id"] for r in top} == {0, 7, 10**12 + 1}  # row 1 is not annotated
