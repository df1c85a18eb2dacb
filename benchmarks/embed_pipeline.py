"""Embedding pipeline throughput vs the bare model forward, on the CPU, in one run.

Writes real JPEG files, then measures with the same model (open_clip ViT-B-32, random
weights: the speed does not depend on the weights) and the same batch size:

- model: ``encode_pixels`` on images decoded and preprocessed beforehand (forward only);
- pipeline: ``embed_images`` on the files (reading, decoding in worker processes,
  preprocessing, forward, float16 shards + parquet + manifest written atomically).

The two are measured alternately for ``--rounds`` rounds and each side keeps its best round
(the one least disturbed by other work on the machine). The last line reads
``pipeline_over_model=X`` (pipeline images/s over model images/s).

    python benchmarks/embed_pipeline.py [--n-images 128] [--batch-size 32] [--workers 2]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="open_clip:ViT-B-32/random")
    parser.add_argument("--n-images", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=400, help="JPEG width in pixels")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import torch

    from inquire.embed import load_encoder
    from inquire.embed.base import open_image
    from inquire.embed.pipeline import embed_images
    from inquire.testing.embed_images import write_jpegs

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = write_jpegs(root / "images", args.n_images, size=args.image_size)
        encoder = load_encoder(args.model, batch_size=args.batch_size)
        print(
            f"model {encoder.model_id}, dim {encoder.dim}, torch threads {torch.get_num_threads()}"
        )
        print(f"{args.n_images} JPEGs of {args.image_size} px squares, batch {args.batch_size}")
        pixels = torch.stack([encoder.preprocess(open_image(p)) for p in files])
        encoder.encode_pixels(pixels[: args.batch_size])  # warm-up

        model_rate = pipe_rate = 0.0
        for r in range(args.rounds):
            start = time.perf_counter()
            encoder.encode_pixels(pixels)
            rate = args.n_images / (time.perf_counter() - start)
            print(f"round {r}: model forward on pre-decoded tensors: {rate:.2f} images/s")
            model_rate = max(model_rate, rate)

            start = time.perf_counter()
            summary = embed_images(
                encoder,
                root / "images",
                root / f"out_{r}",
                batch_size=args.batch_size,
                shard_size=max(1, args.n_images // 2),
                workers=args.workers,
                progress=False,
            )
            rate = summary.count / (time.perf_counter() - start)
            print(
                f"round {r}: pipeline (files -> shards, {args.workers} workers): {rate:.2f} img/s"
            )
            pipe_rate = max(pipe_rate, rate)
        print(f"best: model {model_rate:.2f} images/s, pipeline {pipe_rate:.2f} images/s")
    print(f"pipeline_over_model={pipe_rate / model_rate:.3f}")


if __name__ == "__main__":
    main()
