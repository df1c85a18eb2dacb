"""Tiny-model CPU ratio: the batched single-forward VLM scorer vs one ``generate`` per image.

Same model (a tiny random-weight checkpoint built in a temporary folder), same images, same
query, one thread. Each side is timed as the best of ``--repeats`` runs after one warm-up.
The last line reads ``speedup_vs_generate=X max_abs_score_diff=Y``.

    PYTHONPATH=src python benchmarks/vlm_scoring.py [--family llava-1.5] [--images 64]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="llava-1.5")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--protocol", default="inquire-2024", help="or inquire-sum")
    args = parser.parse_args()

    import logging

    import numpy as np
    import torch
    from PIL import Image

    from inquire.rerank import load_reranker
    from inquire.testing.rerank_tiny_vlm import build_tiny_vlm

    logging.getLogger("inquire.rerank.vlm").setLevel(logging.ERROR)  # random weights: no yes/no
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8))
        for _ in range(args.images)
    ]
    query = "a male meadowlark in breeding plumage"
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_tiny_vlm(args.family, Path(tmp) / args.family)
        reranker = load_reranker(
            f"vlm:{args.family}/{folder}",
            batch_size=args.batch_size,
            device=args.device,
            protocol=args.protocol,
        )

        def batched() -> np.ndarray:
            return reranker.score(query, images)

        def per_image() -> np.ndarray:
            return np.array([reranker.generate_score(query, im) for im in images])  # type: ignore[attr-defined]

        def best(fn):  # type: ignore[no-untyped-def]
            fn()  # warm-up
            times, out = [], None
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                out = fn()
                times.append(time.perf_counter() - t0)
            return min(times), out

        t_fast, fast = best(batched)
        t_slow, slow = best(per_image)
    n = args.images
    print(
        f"family={args.family} images={n} batch_size={args.batch_size} threads={args.threads} "
        f"device={args.device} protocol={args.protocol}"
    )
    print(f"batched_forward: {t_fast:.4f} s ({1000 * t_fast / n:.2f} ms/image)")
    print(f"generate_per_image: {t_slow:.4f} s ({1000 * t_slow / n:.2f} ms/image)")
    diff = float(np.max(np.abs(np.asarray(fast) - np.asarray(slow))))
    print(f"speedup_vs_generate={t_slow / t_fast:.2f} max_abs_score_diff={diff:.2e}")


if __name__ == "__main__":
    main()
