"""``run_demo``: every demo step in order, then where the outputs went and commands to try."""

from __future__ import annotations

import os
from pathlib import Path

from rich.console import Console
from rich.panel import Panel

from inquire.data.qrels import read_qrels
from inquire.data.queries import read_queries
from inquire.data.synthetic import make_synthetic_benchmark
from inquire.embed import EmbeddingStore
from inquire.eval.fullrank import evaluate_fullrank
from inquire.report.table import metrics_table


def run_demo(
    out_dir: str | os.PathLike[str], seed: int = 0, console: Console | None = None
) -> Path:
    """Generate the synthetic benchmark under ``out_dir``, evaluate full-rank retrieval on it,
    print the tables and return the results folder."""
    if console is None:
        console = demo_console()
    _quiet_model_progress()
    out = Path(out_dir)
    console.print(
        Panel(
            "[bold yellow]SYNTHETIC DATA[/]: random embeddings and made-up queries in INQUIRE's "
            "formats. The numbers below exercise the pipeline; they say nothing about any model.",
            title="inquire demo",
        )
    )
    bench = make_synthetic_benchmark(out / "benchmark", seed=seed, write_images=True)
    queries = read_queries(bench.queries_test)
    qrels = read_qrels(bench.annotations)
    k = 50
    result, _ = evaluate_fullrank(
        f"precomputed:{bench.text_embeddings}",
        queries,
        qrels,
        bench.embeddings,
        k=k,
        out_dir=out / "results" / "fullrank",
        cache=False,  # regenerated data every run: caching it would only fill the cache
        config_extra={"data": "synthetic", "seed": seed},
        name="synthetic-fullrank",
    )
    store = EmbeddingStore(bench.embeddings)
    console.print(
        f"Full-rank retrieval over {len(store):,} synthetic images, {len(queries)} test queries"
    )
    console.print(
        metrics_table(result, by="supercategory", title=f"INQUIRE-Fullrank (synthetic), k={k}")
    )
    res_dir = out / "results" / "fullrank"
    console.print(f"results: {res_dir}")
    _later_steps(out, res_dir, bench.root, console, seed)
    return res_dir


def demo_console() -> Console:
    """The demo's console: the terminal's width; piped or logged, ``COLUMNS`` when set (the
    reader's width, read by rich), else 150 columns (wide enough for every table)."""
    console = Console()
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console = Console(width=150)
    return console


def _quiet_model_progress() -> None:
    """Hide the hub's and transformers' per-file progress bars (tiny local models)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.disable_progress_bar()


def _later_steps(out: Path, res_dir: Path, bench_root: Path, console: Console, seed: int) -> None:
    """Embedding, reranking, report and statistics, a photo collection, where everything
    went with commands to try, and the web page."""
    from inquire.demo.collection import demo_collection
    from inquire.demo.embed import demo_embed
    from inquire.demo.feedback import demo_feedback
    from inquire.demo.report import demo_report
    from inquire.demo.rerank import demo_rerank
    from inquire.demo.web import demo_web

    demo_embed(out / "embed", console, seed=seed)
    demo_rerank(out / "rerank", console, seed=seed)
    demo_report([res_dir], out / "report", console)
    demo_feedback(out / "feedback", bench_root, console)
    # The collection's default photos (seed 7) show every colour; other seeds draw new ones.
    collection = demo_collection(out / "collection", console, seed=7 + seed)
    print_outputs(out, console)
    print_next_commands(out, console)
    demo_web([res_dir.resolve()], bench_root.resolve(), console, collections=collection.parent)


# What the demo writes under its output folder, in the order it runs.
OUTPUTS = (
    ("benchmark", "synthetic benchmark: queries, annotations, embeddings, images"),
    ("results/fullrank", "INQUIRE-Fullrank results: per_query.csv, summary.json, run.parquet"),
    ("embed/embeddings", "embedding pipeline output (clip-retrieval layout)"),
    ("rerank/results/rerank", "INQUIRE-Rerank and two-stage results"),
    ("report/report.html", "HTML report (report.md and plots/ beside it)"),
    ("report/results/fullrank-noisy-text", "the second run the report compares"),
    ("feedback/curve.png", "relevance feedback: positives found per image inspected"),
    ("collection/collections/demo", "photo collection 'demo' (its photos: collection/photos)"),
)


def print_outputs(out: str | os.PathLike[str], console: Console) -> list[Path]:
    """Print where each of the demo's outputs went (absolute paths); return those that exist."""
    root = Path(out).resolve()
    found = [(root / rel, what) for rel, what in OUTPUTS if (root / rel).exists()]
    from rich.markup import escape

    console.print(f"[bold]Demo outputs[/] (all under {escape(str(root))}):", soft_wrap=True)
    for path, what in found:
        console.print(f"  {what}:", highlight=False, markup=False)
        console.print(f"    {path}", soft_wrap=True, markup=False, highlight=False)
    return [p for p, _ in found]


def next_commands(out: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """``(what it does, shell command)`` for commands to try on the demo's outputs.

    Paths are absolute, so the commands work from any folder; the collection commands set
    ``INQUIRE_HOME`` to the demo's collection folder, where the collection ``demo`` lives
    (``INQUIRE_HOME/collections/demo``). Only commands whose inputs exist are listed.
    """
    import shlex

    from inquire.demo.web import program

    root = Path(out).resolve()
    prog = program()
    bench, fullrank = root / "benchmark", root / "results" / "fullrank"
    noisy = root / "report" / "results" / "fullrank-noisy-text"
    ann, queries = bench / "inquire_annotations.csv", bench / "inquire_queries_test.csv"
    cmds: list[tuple[str, str]] = []

    def add(what: str, args: list[str], env: dict[str, Path] | None = None) -> None:
        prefix = [f"{k}={shlex.quote(str(v))}" for k, v in (env or {}).items()]
        cmds.append((what, " ".join([*prefix, shlex.join([*prog, *args])])))

    if (fullrank / "run.parquet").is_file() and ann.is_file() and queries.is_file():
        add(
            "score the full-rank run again from its run file",
            [
                "evaluate",
                "--run",
                str(fullrank / "run.parquet"),
                "--queries",
                str(queries),
                "--annotations",
                str(ann),
                "--k",
                "50",
            ],
        )
    if (fullrank / "summary.json").is_file() and (noisy / "summary.json").is_file():
        add(
            "tabulate both runs per supercategory, with intervals",
            ["report", str(fullrank), str(noisy), "--by", "supercategory"],
        )
        add("paired tests between the two runs", ["compare", str(fullrank), str(noisy)])
    if (bench / "SYNTHETIC.txt").is_file():
        add(
            "simulate a verifier who marks 5 images between re-rankings",
            ["simulate", "feedback", "--synthetic", str(bench), "--batch", "5", "--budget", "50"],
        )
    home = root / "collection"
    if (home / "collections" / "demo" / "collection.db").is_file():
        env = {"INQUIRE_HOME": home}
        add(
            "search the photo collection",
            ["search", "demo", "red flowers", "-k", "5", "--from", "2020-01-01"],
            env,
        )
        add("summarise the collection and its saved searches", ["collection", "info", "demo"], env)
        sid = _saved_search(home)
        if sid is not None:
            add(
                "re-rank what nobody marked yet from the saved search's marks",
                ["search", "demo", "--feedback", sid, "-k", "5"],
                env,
            )
            add(
                "chart the verified positives per month",
                [
                    "trend",
                    "demo",
                    "--search-id",
                    sid,
                    "--by",
                    "month",
                    "--out",
                    str(home / "trend.png"),
                ],
                env,
            )
    return cmds


def _saved_search(home: Path) -> str | None:
    """The id of the first saved search of the demo collection under ``home``."""
    from contextlib import closing

    from inquire.collection.store import open_collection
    from inquire.collection.verify import Verification

    with (
        closing(open_collection("demo", home / "collections")) as coll,
        closing(Verification(coll)) as v,
    ):
        ids = v.searches()["search_id"].tolist()
    return str(ids[0]) if ids else None


def print_next_commands(out: str | os.PathLike[str], console: Console) -> list[str]:
    """Print :func:`next_commands`, each on one unwrapped line; return the commands."""
    cmds = next_commands(out)
    if cmds:
        console.print("[bold]Try next[/] (each command runs as printed):")
    for what, cmd in cmds:
        console.print(f"  # {what}", highlight=False, markup=False)
        console.print(f"  {cmd}", soft_wrap=True, markup=False, highlight=False)
    return [cmd for _, cmd in cmds]
