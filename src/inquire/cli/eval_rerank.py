"""``inquire eval rerank`` (the INQUIRE-Rerank task) and ``inquire rerank ...`` (the cache)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from inquire.cli._common import friendly_errors
from inquire.rerank.protocol import DEFAULT_PROTOCOL

PROTOCOL_HELP = (
    "Reranking protocol of vlm:/api:/cached: rerankers: inquire-2024 (INQUIRE's prompts and "
    "scoring) or inquire-sum (see `inquire rerank list`)."
)

rerank_app = typer.Typer(help="Reranker scores: list rerankers, import score caches.")


def rerank_table(result: Any, title: str) -> Any:
    """A rich table of a RerankResult: overall row + one per supercategory; AP over the pool
    and at 50, then every other metric of the result over the pool."""
    from rich.table import Table

    from inquire.metrics import format_value, get_metric

    metrics = [m for m in result.result.metrics if m != "ap"]
    table = Table(title=title)
    table.add_column("group", style="bold")
    table.add_column("queries", justify="right")
    labels = ["AP (pool)", "AP@50"] + [get_metric(m).header(result.result.k) for m in metrics]
    for label in labels:
        table.add_column(label, justify="right")
    overall = result.result.aggregate(scaled=True)
    at50 = result.result_at_50.aggregate(scaled=True)
    groups = result.result.aggregate("supercategory", scaled=True)
    groups50 = result.result_at_50.aggregate("supercategory", scaled=True)
    rows = [(overall.iloc[0], at50.iloc[0])]
    rows += [(groups.iloc[i], groups50.iloc[i]) for i in range(len(groups))]
    for i, (row, row50) in enumerate(rows):
        table.add_row(
            str(row["group"]),
            str(int(row["n_queries"])),
            format_value("ap", row["ap"]),
            format_value("ap", row50["ap"]),
            *[format_value(m, row[m]) for m in metrics],
            end_section=i == 0,
        )
    return table


def _rerank_set(
    split: str, data: list[Path], queries: list[Path], number_queries: bool = False
) -> Any:
    """The local files (``--data``, ids from ``--queries``) or the downloaded split."""
    import pandas as pd

    from inquire.data.queries import read_queries
    from inquire.data.rerank_set import load_rerank_set, read_rerank_set

    table = pd.concat([read_queries(q) for q in queries], ignore_index=True) if queries else None
    if data:
        return read_rerank_set(data, queries=table, number_queries=number_queries)
    return load_rerank_set(split, table, number_queries=number_queries)


@friendly_errors
def eval_rerank_cmd(
    reranker: str = typer.Option(
        ...,
        "--reranker",
        "--rerank",  # the spelling of `eval fullrank --rerank` and `search --rerank`
        help="clip_score | random | clip:<model> | vlm:<family>/<model> | api:<model> | "
        "cached:<name>",
    ),
    split: str = typer.Option("test", help="INQUIRE-Rerank split: val or test."),
    data: list[Path] = typer.Option(
        [], "--data", help="Local INQUIRE-Rerank parquet file(s) instead of downloading."
    ),
    queries: list[Path] = typer.Option(
        [], "--queries", help="INQUIRE query CSV(s) giving --data files their query ids."
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the results folder here."),
    seed: int = typer.Option(0, help="Seed of the random baseline."),
    device: str = typer.Option("cpu", help="torch device for local models."),
    precision: str = typer.Option(
        "auto",
        help="fp32, bf16, fp16 or auto (INQUIRE's precision for the model on a GPU, else fp32).",
    ),
    batch_size: int = typer.Option(8, help="Images per forward pass (local models)."),
    base_url: str | None = typer.Option(None, help="OpenAI-compatible server (api: rerankers)."),
    api_key_env: str = typer.Option("OPENAI_API_KEY", help="Environment variable with the key."),
    concurrency: int = typer.Option(8, help="Concurrent API requests."),
    top_logprobs: int = typer.Option(20, help="top_logprobs asked of the API (0..20)."),
    protocol: str = typer.Option(DEFAULT_PROTOCOL, "--protocol", help=PROTOCOL_HELP),
    allow_failures: bool = typer.Option(
        False, help="Rank candidates that could not be scored last instead of stopping."
    ),
    use_cache: bool = typer.Option(
        True, "--cache/--no-cache", help="Read and write the score cache (--no-cache: neither)."
    ),
    number_queries: bool = typer.Option(
        False,
        "--number-queries",
        help="Number queries 1..n in file order when the query tables do not match the data.",
    ),
) -> None:
    """Rerank INQUIRE-Rerank's 100 candidates per query and evaluate (AP over the pool, R =
    relevant candidates, plus AP@50)."""
    from rich.console import Console

    from inquire.eval.rerank import BASELINES, evaluate_rerank
    from inquire.rerank import RerankOptions, load_reranker
    from inquire.rerank.cache import ScoreCache

    check_reranker_id(reranker)
    rs = _rerank_set(split, data, queries, number_queries)
    ranker: Any = reranker
    cache = None
    if reranker not in BASELINES:
        opts = RerankOptions(
            device=device,
            precision=precision,
            batch_size=batch_size,
            base_url=base_url,
            api_key_env=api_key_env,
            concurrency=concurrency,
            top_logprobs=top_logprobs,
            protocol=protocol,
        )
        ranker = load_reranker(reranker, opts)
        cache = ScoreCache() if use_cache else None
    cfg = {"split": None if data else split}
    try:
        result = evaluate_rerank(
            rs, ranker, seed=seed, cache=cache, allow_failures=allow_failures, config=cfg
        )
    finally:
        if cache is not None:
            cache.close()
    console = Console()
    console.print(rerank_table(result, f"INQUIRE-Rerank ({split}): {result.run.name}"))
    if result.expected_random is not None:
        console.print(f"expected AP of a random order: {100 * result.expected_random:.1f}")
    if len(result.failures):
        console.print(f"[red]{len(result.failures)} candidates failed and were ranked last[/]")
    if out is not None:
        result.save(out)
        typer.echo(f"results: {out}")


@friendly_errors
def list_cmd() -> None:
    """List baselines, reranker kinds, VLM families, the models INQUIRE evaluated and the
    scoring protocols."""
    from rich.console import Console

    from inquire.cli._render import Col, print_records
    from inquire.rerank.protocol import DEFAULT_PROTOCOL, PROTOCOLS, UPSTREAM_MODELS

    console = Console()
    print_records(
        console,
        [Col("id", keep=True, style="bold"), Col("what"), Col("example", keep=True)],
        reranker_rows(),
        "rerankers (INQUIRE-Rerank: any id; --rerank of search and eval fullrank: kind:...)",
    )
    print_records(
        console,
        [
            Col("upstream model", keep=True, style="bold"),
            Col("reranker id", keep=True),
            Col("prompt row"),
            Col("released cache file", keep=True),
        ],
        [(m.upstream, m.reranker, m.family, m.cache_file or "") for m in UPSTREAM_MODELS],
        "models INQUIRE evaluated (upstream id -> reranker id here)",
    )
    print_records(
        console,
        [Col("protocol", keep=True, style="bold"), Col("what")],
        [(p.name, p.help) for p in PROTOCOLS.values()],
        f"protocols (--protocol; default {DEFAULT_PROTOCOL})",
    )


def reranker_rows() -> list[tuple[str, str, str]]:
    """``(id, what, example)`` of every baseline, reranker kind and VLM family (a family's
    examples are the models INQUIRE evaluated with it, else a typical checkpoint)."""
    from inquire.eval.rerank import BASELINES
    from inquire.rerank.protocol import PROTOCOLS, UPSTREAM_MODELS
    from inquire.rerank.registry import KINDS
    from inquire.rerank.vlm import FAMILIES

    rows = [(b.name, b.help, b.name) for b in BASELINES.values()]
    rows += [(f"{k.name}:...", k.help, k.example) for k in KINDS.values()]
    for f in FAMILIES.values():
        protocols = ", ".join(p.name for p in PROTOCOLS.values() if f.name in p.vlm)
        upstream = [m.upstream for m in UPSTREAM_MODELS if m.family == f.name]
        examples = [f"vlm:{f.name}/{m}" for m in upstream] or [f"vlm:{f.name}/{f.example}"]
        for i, ex in enumerate(examples):
            what = f"{f.model_class}; protocols: {protocols}" if i == 0 else ""
            rows.append((f"vlm:{f.name}/..." if i == 0 else "", what, ex))
    return rows


def check_reranker_id(reranker: str, baselines: bool = True) -> None:
    """Fail at once, with close matches, on an id that names no baseline or reranker kind.

    Checked before any data is read or downloaded. ``baselines``: whether ``clip_score`` and
    ``random`` are valid here (INQUIRE-Rerank only: they need the set's given scores).
    """
    from inquire.errors import UnknownNameError
    from inquire.eval.rerank import BASELINES
    from inquire.rerank.registry import KINDS, parse_reranker_id

    if baselines and reranker in BASELINES:
        return
    if ":" not in reranker:
        valid = [*(BASELINES if baselines else ()), *(f"{k}:" for k in KINDS)]
        raise UnknownNameError("reranker", reranker, valid)
    kind, rest = parse_reranker_id(reranker)  # unknown kinds: "did you mean" the right one
    if kind.name == "vlm":
        from inquire.rerank.vlm import FAMILIES

        family = rest.partition("/")[0]
        if family not in FAMILIES:
            raise UnknownNameError("VLM family", family, FAMILIES)


@friendly_errors
def import_cache_cmd(
    npy: Path = typer.Argument(..., help="An INQUIRE LMM score cache (.npy, pickled dict)."),
    name: str = typer.Option(..., help="Store as reranker cached:NAME."),
    trust_pickle: bool = typer.Option(
        False, "--trust-pickle", help="Allow loading the pickle (it can run code: trust it)."
    ),
    split: str = typer.Option("test", help="INQUIRE-Rerank split whose candidates to map."),
    data: list[Path] = typer.Option([], "--data", help="Local INQUIRE-Rerank parquet file(s)."),
    queries: list[Path] = typer.Option(
        [], "--queries", help="INQUIRE query CSV(s) giving --data files their query ids."
    ),
    prompt_template: str | None = typer.Option(
        None, help="The cache's prompt, with {query} where the query text goes."
    ),
    model: str | None = typer.Option(
        None,
        "--model",
        "-m",
        help="The INQUIRE model the cache holds (e.g. llava-hf/llava-1.5-13b-hf); default: "
        "read from INQUIRE's cache file name.",
    ),
    protocol: str = typer.Option(DEFAULT_PROTOCOL, "--protocol", help=PROTOCOL_HELP),
) -> None:
    """Import INQUIRE's released scores into the cache, to evaluate them as cached:NAME."""
    from inquire.errors import InputError
    from inquire.rerank.cache import (
        PICKLE_REFUSAL,
        CachedReranker,
        ModelKey,
        ScoreCache,
        import_inquire_cache,
    )

    if not trust_pickle:  # refuse before downloading anything
        raise InputError(PICKLE_REFUSAL.format(path=str(npy)))
    if not npy.is_file():
        raise InputError(f"score cache {str(npy)!r} does not exist")
    # The cache is keyed by query text, so query ids need not match INQUIRE's here.
    rs = _rerank_set(split, data, queries, number_queries=True)
    target = CachedReranker(name, protocol=protocol)
    with ScoreCache() as cache:
        report = import_inquire_cache(
            npy,
            cache,
            ModelKey.of(target),
            rs.queries["query_text"].tolist(),
            rs.file_names(),
            trust_pickle=trust_pickle,
            prompt_template=prompt_template,
            model=model,
        )
    typer.echo(
        f"imported {report.imported} scores as {target.reranker_id} (skipped: "
        f"{report.skipped_image} unknown images, {report.skipped_query} unknown prompts, "
        f"{report.skipped_value} non-numeric values; {report.refused} refused requests "
        f"scored 0) under protocol {target.protocol}; evaluate with "
        f"`inquire eval rerank --reranker {target.reranker_id} --protocol {target.protocol}`"
    )


def register(app: typer.Typer) -> None:
    """Add ``inquire eval rerank`` and the ``inquire rerank`` group."""
    from inquire.cli.evalcmd import eval_app

    eval_app.command("rerank")(eval_rerank_cmd)
    rerank_app.command("list")(list_cmd)
    rerank_app.command("import-cache")(import_cache_cmd)
    app.add_typer(rerank_app, name="rerank")
