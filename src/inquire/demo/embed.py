"""The embedding step of ``inquire demo``: a tiny random-weight model embeds synthetic JPEGs."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


def demo_embed(
    out_dir: str | os.PathLike[str], console: Any = None, n_images: int = 160, seed: int = 0
) -> Path:
    """Write ``n_images`` small synthetic JPEGs and a tiny RANDOM-WEIGHT open_clip model under
    ``out_dir``, run the embedding pipeline on them (2 shards, then a resumed no-op rerun),
    search them with one text query, and return the embedding folder (clip-retrieval layout).

    Takes a few seconds on 2 cores; the embeddings mean nothing (random weights).
    """
    import torch
    from rich.console import Console
    from rich.panel import Panel

    from inquire.embed.base import ImageEncoder
    from inquire.embed.models import load_encoder
    from inquire.embed.pipeline import embed_images
    from inquire.embed.store import EmbeddingStore
    from inquire.embed.text_cache import text_embeddings
    from inquire.index.exact import search
    from inquire.testing.embed_images import write_jpegs
    from inquire.testing.embed_models import make_tiny_open_clip

    console = console or Console()
    out = Path(out_dir)
    console.print(
        Panel(
            "[bold yellow]RANDOM WEIGHTS[/]: a tiny open_clip model (32 px ViT, dim 32) built "
            "from a config and saved as a real open_clip checkpoint, embedding synthetic JPEGs. "
            "This exercises the pipeline; the embeddings mean nothing.",
            title="inquire demo: embedding pipeline",
        )
    )
    start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: more threads only add overhead
    try:
        images = out / "images"
        write_jpegs(images, n_images, seed=seed)
        model_id = make_tiny_open_clip(out / "tiny-open-clip", seed=seed)
        encoder = load_encoder(model_id, batch_size=32)
        if not isinstance(encoder, ImageEncoder):
            raise TypeError(f"{model_id} does not embed images")
        emb_dir = out / "embeddings"
        shard = -(-n_images // 2)
        summary = embed_images(
            encoder, images, emb_dir, shard_size=shard, workers=1, console=console
        )
        again = embed_images(encoder, images, emb_dir, shard_size=shard, workers=1, progress=False)
        store = EmbeddingStore(emb_dir)
        store.check_normalized()
        query = text_embeddings(encoder, ["a photo of a heron"])
        store.check_dim(query.shape[1])
        scores, ids = search(store, query, k=3)
    finally:
        torch.set_num_threads(threads)
    top = ", ".join(
        f"{store.metadata['image_path'].iloc[int(store.row_of([i])[0])]} ({s:.3f})"
        for i, s in zip(ids[0], scores[0], strict=True)
    )
    console.print(
        f"embedded {summary.count} images into {summary.n_shards} shards at {emb_dir} "
        f"(dim {store.dim}, revision {encoder.revision}); rerun resumed with "
        f"{again.new_images} images left to do\n"
        f"top-3 for 'a photo of a heron' (random weights): {top}\n"
        f"embedding step took {time.perf_counter() - start:.1f} s"
    )
    return emb_dir
