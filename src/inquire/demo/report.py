"""The report step of the offline demo: an HTML report and a paired comparison of two runs."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console

from inquire._io import atomic_path
from inquire.data.qrels import read_qrels
from inquire.data.queries import read_queries
from inquire.data.synthetic import (
    SyntheticBenchmark,
    find_synthetic_benchmark,
    make_synthetic_benchmark,
)
from inquire.errors import InputError
from inquire.eval.evaluate import EvalResult

log = logging.getLogger(__name__)

# Standard deviation of the Gaussian noise added to each text-embedding component before
# re-normalising (components of a unit 128-d vector are ~0.09): enough to cost a few AP
# points on the synthetic benchmark, so the comparison has something to find.
TEXT_NOISE = 0.06
NOISY_RUN = "synthetic-fullrank-noisy-text"


def _benchmark_for(result_dir: Path, result: EvalResult, out_dir: Path) -> SyntheticBenchmark:
    """The synthetic benchmark behind a demo result: the demo's own, or regenerated."""
    # run_demo writes OUT/benchmark and OUT/results/fullrank: its benchmark is used as it is
    # (regenerating it with default arguments could differ from how the demo made it). A
    # benchmark this step generated earlier under out_dir is reused the same way.
    for root in (result_dir.resolve().parents[1] / "benchmark", out_dir / "benchmark"):
        found = find_synthetic_benchmark(root)
        if found is not None:
            return found
    seed = int(result.config.get("seed", 0))
    log.info("no synthetic benchmark beside %s; generating one (seed %d)", result_dir, seed)
    return make_synthetic_benchmark(out_dir / "benchmark", seed=seed)


def _noisy_run(bench: SyntheticBenchmark, k: int, seed: int, out_dir: Path) -> Path:
    """Evaluate the benchmark again with noisier text embeddings; return the result folder."""
    from inquire.eval.fullrank import evaluate_fullrank

    table = pq.read_table(bench.text_embeddings).to_pandas()
    emb = np.stack(table["embedding"].to_numpy()).astype(np.float64)
    rng = np.random.default_rng(seed + 1)
    noisy = emb + rng.normal(0.0, TEXT_NOISE, size=emb.shape)
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    noisy_path = out_dir / "noisy_text_embeddings.parquet"
    out_table = pa.table(
        {
            "query_text": table["query_text"].tolist(),
            "embedding": [row.astype(np.float32).tolist() for row in noisy],
            "model_id": ["synthetic-noisy"] * len(table),
        }
    )
    with atomic_path(noisy_path) as tmp:
        pq.write_table(out_table, tmp)
    evaluate_fullrank(
        f"precomputed:{noisy_path}",
        read_queries(bench.queries_test),
        read_qrels(bench.annotations),
        bench.embeddings,
        k=k,
        out_dir=out_dir / "results" / "fullrank-noisy-text",
        cache=False,  # regenerated data every run
        name=NOISY_RUN,
        config_extra={
            "data": "synthetic",
            "seed": seed,
            "text_noise": TEXT_NOISE,
            "queries": str(bench.queries_test),
        },
    )
    return out_dir / "results" / "fullrank-noisy-text"


def demo_report(
    results_dirs: Sequence[Path], out_dir: Path, console: Console | None = None
) -> Path:
    """Write ``out_dir/report.html`` (+ ``report.md`` and ``plots/``) over the demo's results
    and print paired comparisons of the runs (AP and nDCG); return the HTML path.

    With a single result folder (``run_demo``'s), a second run is made first: the same
    synthetic benchmark searched with noisier text embeddings (:data:`TEXT_NOISE`).
    """
    from inquire.report.render_text import comparison_renderables
    from inquire.report.write import write_report

    console = console or Console()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dirs = [Path(d) for d in results_dirs]
    if not dirs:
        raise InputError("demo_report needs at least one result folder")
    first = EvalResult.load(dirs[0])
    bench = _benchmark_for(dirs[0], first, out)
    if len(dirs) == 1:
        bench_ids = set(read_queries(bench.queries_test)["query_id"].tolist())
        if bench_ids != set(first.per_query["query_id"].tolist()):
            raise InputError(
                f"{str(dirs[0])!r} is not a synthetic demo result (its queries differ from the "
                f"benchmark's); pass two result folders to compare instead"
            )
        console.print("Second run for the comparison: the same search with noisier text embeddings")
        dirs.append(_noisy_run(bench, first.k, int(first.config.get("seed", 0)), out))
    title = "inquire demo report (SYNTHETIC data)"
    html_path = out / "report.html"
    written = write_report(
        dirs,
        "html",
        html_path,
        reference="fullrank",
        plots=out / "plots",
        annotations=bench.annotations,
        with_compare=True,
        compare_metrics=("ap", "ndcg"),
        queries=read_queries(bench.queries_test),
        overwrite=True,
        also={"markdown": out / "report.md"},
        title=title,
        captions={
            "supercategory_ap": "AP@k per supercategory with 95% bootstrap intervals",
            "distribution_ap": "AP@k over queries",
            "precision_recall": "Precision-recall over ranks, averaged over queries",
        },
    )
    if written.comparison is not None:
        from rich.table import Table

        from inquire._render import print_table

        for i, renderable in enumerate(comparison_renderables(written.comparison)):
            if isinstance(renderable, Table):  # whole numbers, or one record per block
                # The first table is the pair tests: metric, A and B head each record; the
                # others list queries, each headed by its id.
                if i == 0:
                    print_table(console, renderable, head=3)
                else:
                    print_table(console, renderable, head_format=lambda v: f"query {v[0]}")
            else:
                console.print(renderable)
    console.print(f"report: {html_path}")
    return html_path
