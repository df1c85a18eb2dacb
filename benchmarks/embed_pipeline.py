"""Embedding pipeline throughput vs the bare model forward, on the CPU, in one run.

Writes real JPEG files, then measures with the same model (open_clip ViT-B-32, random
weights: the speed does not depend on the weights) and the same batch size:

- model: ``encode_pixels`` on images decoded and preprocessed beforehand (forward only);
- pipeline: ``embed_images`` on the files (reading, decoding in worker processes,
  preprocessing, forward, float16 shards + parquet + manifest written atomically).

Each round times the model, the pipeline, then the model again; the round's ratio compares
the pipeline with the mean of the model runs around it, so that load changes on a shared
machine cancel out, and the script reports the median over rounds. The last line reads
``pipeline_over_model=X`` (pipeline images/s over model images/s).

    python benchmarks/embed_pipeline.py [--n-images 128] [--rounds 5] [--workers 2]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="open_clip:ViT-B-32/random")
    parser.add_argument("--n-images", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=400, help="JPEG width in pixels")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import torch

    from inquire.embed import load_encoder
    from inquire.embed.base import ImageEncoder
    from inquire.embed.images import open_image
    from inquire.embed.pipeline import embed_images
    from inquire.testing.embed_images import write_jpegs

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = write_jpegs(root / "images", args.n_images, size=args.image_size)
        encoder = load_encoder(args.model, batch_size=args.batch_size)
        if not isinstance(encoder, ImageEncoder):  # the model alone is timed: encode_pixels
            raise SystemExit(
                f"{args.model!r} lacks preprocess/encode_pixels; use an open_clip: or hf_clip: "
                "model"
            )
        print(
            f"model {encoder.model_id}, dim {encoder.dim}, torch threads {torch.get_num_threads()}"
        )
        print(f"{args.n_images} JPEGs of {args.image_size} px squares, batch {args.batch_size}")
        pixels = torch.stack([encoder.preprocess(open_image(p)) for p in files])
        encoder.encode_pixels(pixels[: args.batch_size])  # warm-up

        def model_rate() -> float:
            start = time.perf_counter()
            encoder.encode_pixels(pixels)
            return args.n_images / (time.perf_counter() - start)

        ratios = []
        for r in range(args.rounds):
            before = model_rate()
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
            pipe = summary.count / (time.perf_counter() - start)
            after = model_rate()
            # The pipeline is compared with the mean model time of the runs just before and
            # just after it, so that load changes on a shared machine cancel out.
            model = 2 / (1 / before + 1 / after)
            ratios.append(pipe / model)
            print(
                f"round {r}: model {before:.2f} / {after:.2f} images/s, "
                f"pipeline {pipe:.2f} images/s, ratio {ratios[-1]:.3f}"
            )
        ratio = float(np.median(ratios))
        print(f"median of {args.rounds} paired ratios")
    print(f"pipeline_over_model={ratio:.3f}")


if __name__ == "__main__":
    main()
