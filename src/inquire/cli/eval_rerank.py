"""``inquire eval rerank`` (the INQUIRE-Rerank task) and ``inquire rerank ...`` (the cache)."""

from __future__ import annotations

from pathlib import Path

import typer

from inquire.cli._common import check_device_precision, friendly_errors
from inquire.rerank.protocol import DEFAULT_PROTOCOL

PROTOCOL_HELP = (
    "Reranking protocol of vlm:/api:/cached: rerankers: inquire-2024 (INQUIRE's prompts and "
    "scoring) or inquire-sum (see `inquire rerank list`)."
)

rerank_app = typer.Typer(help="Reranker scores: list rerankers, import score caches.")


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
    import_cache: Path | None = typer.Option(
        None,
        "--import-cache",
        help="With --reranker cached:NAME: first import this INQUIRE model-output cache (.npy, "
        "e.g. cache/llava-hf--llava-1.5-13b-hf--cache.npy of INQUIRE's repository) as NAME.",
    ),
    trust_pickle: bool = typer.Option(
        False,
        "--trust-pickle",
        help="With --import-cache: allow loading the pickle (it can run code: trust it).",
    ),
) -> None:
    """Rerank INQUIRE-Rerank's 100 candidates per query and evaluate (AP over the pool, R =
    relevant candidates, plus AP@50). With --import-cache, INQUIRE's released scores are
    imported and evaluated in one step."""
    from rich.console import Console

    from inquire.data.rerank_set import QUERY_IDS_NUMBERED, open_rerank_set
    from inquire.errors import InputError
    from inquire.eval.rerank import (
        QUERY_ID_SOURCES,
        check_import_file,
        check_reranker_id,
        import_and_evaluate,
        run_rerank,
    )
    from inquire.report.table import rerank_table
    from inquire.rerank import RerankOptions

    check_reranker_id(reranker)
    check_device_precision(device, precision)
    if import_cache is not None:
        if not reranker.startswith("cached:") or not reranker[len("cached:") :]:
            raise InputError(
                f"--import-cache imports scores as a cached:NAME reranker, but --reranker is "
                f"{reranker!r}; pass --reranker cached:NAME (e.g. cached:llava-1.5-13b)"
            )
        if not use_cache:
            raise InputError(
                "--import-cache stores the imported scores in the score cache and evaluates "
                "them from there: drop --no-cache"
            )
        check_import_file(import_cache, trust_pickle)  # before reading (or downloading) data
    elif trust_pickle:
        raise InputError("--trust-pickle only applies to --import-cache FILE")
    rs = open_rerank_set(split, data, queries, number_queries)
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
    config = {"split": None if data else split}
    if import_cache is not None:
        result = import_and_evaluate(
            rs,
            import_cache,
            reranker[len("cached:") :],
            trust_pickle=trust_pickle,
            protocol=protocol,
            allow_failures=allow_failures,
            config=config,
            out_dir=out,
        )
    else:
        result = run_rerank(
            rs,
            reranker,
            opts,
            cache=use_cache,
            seed=seed,
            allow_failures=allow_failures,
            config=config,
            out_dir=out,
        )
    console = Console()
    if import_cache is not None:
        imp = result.result.config["imported_cache"]
        typer.echo(
            f"imported {imp['imported']} scores from {import_cache} as {reranker} (skipped: "
            f"{imp['skipped_image']} unknown images, {imp['skipped_query']} unknown prompts, "
            f"{imp['skipped_value']} non-numeric values; {imp['refused_scored_0']} refused "
            f"requests scored 0) under protocol {protocol}"
        )
    if rs.query_ids_from == QUERY_IDS_NUMBERED:
        typer.echo(f"note: query ids {QUERY_ID_SOURCES[QUERY_IDS_NUMBERED]}; pass --queries CSV")
    console.print(rerank_table(result, f"INQUIRE-Rerank ({split}): {result.run.name}"))
    if result.expected_random is not None:
        console.print(f"expected AP of a random order: {100 * result.expected_random:.1f}")
    if len(result.failures):
        console.print(f"[red]{len(result.failures)} candidates failed and were ranked last[/]")
    if refused := result.result.config.get("refused_scored_0"):
        console.print(
            f"[yellow]{refused} API requests were refused (HTTP 400) and scored 0, as "
            f"{result.result.config.get('protocol')} scores refusals[/]"
        )
    if out is not None:
        typer.echo(f"results: {out}")


@friendly_errors
def list_cmd() -> None:
    """List baselines, reranker kinds, VLM families, the models INQUIRE evaluated and the
    scoring protocols."""
    from rich.console import Console

    from inquire._render import Col, print_records
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
    from inquire.data.rerank_set import open_rerank_set
    from inquire.rerank.cache import import_as_cached_reranker

    # The cache is keyed by query text, so query ids need not match INQUIRE's here.
    report, target = import_as_cached_reranker(
        npy,
        name,
        lambda: open_rerank_set(split, data, queries, number_queries=True),
        protocol=protocol,
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
