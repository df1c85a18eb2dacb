"""Evaluation results built by hand or from the synthetic benchmark, for report tests."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from inquire.eval.evaluate import EvalResult
from inquire.metrics import DEFAULT_METRICS


def make_result(
    name: str,
    values: Mapping[str, Sequence[float]],
    query_ids: Sequence[int] | None = None,
    supercategory: Sequence[str] | None = None,
    category: Sequence[str] | None = None,
    iconic_group: Sequence[str] | None = None,
    k: int = 50,
) -> EvalResult:
    """An :class:`EvalResult` with the given per-query metric values (fractions).

    Metrics not in ``values`` are filled with 0.5; groups default to
    alternating ``Appearance``/``Behavior``, ``cat_a``/``cat_b`` and ``Birds``.
    """
    n = len(next(iter(values.values())))
    qids = list(query_ids) if query_ids is not None else list(range(1, n + 1))
    data: dict[str, object] = {"query_id": np.asarray(qids, dtype=np.int64)}
    for m in DEFAULT_METRICS:
        data[m] = np.asarray(values.get(m, [0.5] * n), dtype=np.float64)
    data["supercategory"] = list(
        supercategory or [("Appearance", "Behavior")[i % 2] for i in range(n)]
    )
    data["category"] = list(category or [("cat_a", "cat_b")[i % 2] for i in range(n)])
    data["iconic_group"] = list(iconic_group or ["Birds"] * n)
    return EvalResult(per_query=pd.DataFrame(data), k=k, metrics=DEFAULT_METRICS, name=name)


def synthetic_results(
    out_dir: str | os.PathLike[str], noise: Sequence[float] = (0.0, 0.06), seed: int = 0
) -> tuple[list[Path], Path, Path]:
    """Evaluate the synthetic benchmark once per text-noise level; save each with its run.

    Returns ``(result_dirs, annotations_csv, queries_csv)``. Noise 0 is the demo's run.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from inquire.data.qrels import read_qrels
    from inquire.data.queries import read_queries
    from inquire.data.synthetic import make_synthetic_benchmark
    from inquire.embed import EmbeddingStore, load_encoder
    from inquire.eval import evaluate
    from inquire.index.exact import search
    from inquire.run import Run

    out = Path(out_dir)
    bench = make_synthetic_benchmark(
        out / "benchmark", n_images=10000, n_val=10, n_test=40, seed=seed
    )
    queries = read_queries(bench.queries_test)
    qrels = read_qrels(bench.annotations)
    store = EmbeddingStore(bench.embeddings)
    table = pq.read_table(bench.text_embeddings).to_pandas()
    base = np.stack(table["embedding"].to_numpy()).astype(np.float64)
    dirs = []
    for i, sigma in enumerate(noise):
        rng = np.random.default_rng(seed + 100 + i)
        emb = base + rng.normal(0.0, sigma, size=base.shape) if sigma > 0 else base
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        path = out / f"text_{i}.parquet"
        pq.write_table(
            pa.table(
                {
                    "query_text": table["query_text"].tolist(),
                    "embedding": [r.astype(np.float32).tolist() for r in emb],
                }
            ),
            path,
        )
        enc = load_encoder(f"precomputed:{path}")
        scores, ids = search(store, enc.encode_text(queries["query_text"].tolist()), k=50)
        run = Run.from_arrays(queries["query_id"], ids, scores, name=f"noise-{sigma:g}")
        result = evaluate(
            run,
            qrels,
            queries,
            k=50,
            config={"text_noise": sigma, "annotations": str(bench.annotations)},
        )
        dirs.append(result.save(out / "results" / f"noise-{i}", run=run))
    return dirs, bench.annotations, bench.queries_test
