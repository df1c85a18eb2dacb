"""``inquire collection index NAME``: build, extend or remove the partitioned IVF-PQ index.

Also the index's line in ``inquire collection info`` (:func:`scale_line`).
"""

from __future__ import annotations

from typing import Any

import typer

from inquire.cli._common import friendly_errors


def _console() -> Any:
    from rich.console import Console

    return Console()


def scale_line(sc: dict[str, Any]) -> str:
    """The partitioned index in one line: kind, partitions, bytes per photo, and the recall
    measured when it was built or extended: of a search (the router) and, where the router
    answers exactly, of the IVF route alone at the configured nprobe."""
    if "error" in sc:
        return f"partitioned index unusable, searches are exact: {sc['error']}"
    rec = sc.get("recall") or {}
    nprobe = rec.get("nprobe", (sc.get("settings") or {}).get("nprobe", "?"))

    def one(key: str, label: str) -> str:
        ivf = rec.get(f"{key}_ivf")
        ivf_text = "IVF route not measured" if ivf is None else f"IVF route alone {ivf:.3f}"
        if rec.get(f"{key}_route") == "exact":
            return f"{label} {rec[key]:.3f} (exact route; {ivf_text} at nprobe {nprobe})"
        return f"{label} {rec[key]:.3f} (IVF route, nprobe {nprobe})"

    measured = ", ".join(
        one(key, label)
        for key, label in (("unfiltered", "unfiltered"), ("filter_1pct", "1% filter"))
        if key in rec
    )
    at = f" over {rec['rows']:,} rows" if "rows" in rec else ""
    return (
        f"{sc['kind']}: {sc['partitions']} partitions, {sc['rows']:,} rows, "
        f"{sc['bytes_per_photo']:.1f} bytes/photo; recall@{rec.get('k', 100)}{at} "
        f"{measured or 'not measured'}; setting 'scale'"
    )


@friendly_errors
def index_cmd(
    name: str = typer.Argument(..., help="Collection."),
    nlist: int | None = typer.Option(None, help="IVF lists (default: sqrt(rows), 64..4096)."),
    pq_m: int | None = typer.Option(
        None, "--pq-m", help="PQ bytes per photo, must divide the dim (default: 64)."
    ),
    partition_rows: int | None = typer.Option(None, help="Rows per partition (default: 5000000)."),
    nprobe: int | None = typer.Option(
        None, help="Lists probed per query (default: 32; widened under filters)."
    ),
    rescore: int | None = typer.Option(
        None, help="Candidates per result rescored exactly (default: 10)."
    ),
    exact_below: int | None = typer.Option(
        None,
        help="Filters selecting at most this many photos are searched exactly (default: 50000).",
    ),
    rebuild: bool = typer.Option(False, "--rebuild", help="Retrain and re-encode everything."),
    off: bool = typer.Option(False, "--off", help="Remove the index (back to 'auto')."),
    ray_address: str | None = typer.Option(
        None, "--ray", help="Encode partitions as Ray Data tasks on this cluster (address)."
    ),
) -> None:
    """Build or extend the partitioned IVF-PQ index (exact rescoring); rerun to resume.

    Options left out keep the index's own settings (or the defaults for a new index)."""
    given = {
        "nlist": nlist, "pq_m": pq_m, "partition_rows": partition_rows, "nprobe": nprobe,
        "rescore": rescore, "exact_below": exact_below,
    }  # fmt: skip
    options = {k: v for k, v in given.items() if v is not None}
    if ray_address:
        from inquire.collection.scale import ray_connection
        from inquire.index.ray_serve import run_ray

        with ray_connection(ray_address):
            sc = _index(name, options, rebuild, off, run_ray)
    else:
        sc = _index(name, options, rebuild, off, None)
    console = _console()
    if sc is None:
        console.print(f"[green]removed[/] the partitioned index of {name!r}; setting 'auto'")
        return
    from rich.text import Text

    console.print(Text(f"indexed {name!r}: {scale_line(sc)}"), soft_wrap=True)


def _index(name: str, options: dict[str, int], rebuild: bool, off: bool, runner: Any) -> Any:
    """:func:`~inquire.collection.scale.index_collection` with a progress bar."""
    from inquire._progress import enabled, rich_progress
    from inquire.collection.scale import index_collection

    with rich_progress("encoding", disable=not enabled()) as bar:
        task = bar.add_task("encoding", total=None, rate="")

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, rate=f"{done:,}/{total:,} rows")

        sc = index_collection(
            name, options=options, rebuild=rebuild, off=off,
            runner=runner, progress=progress,
        )  # fmt: skip
    return sc
