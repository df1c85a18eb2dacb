"""The demo's last step: say how to look at its results in the web page (never starts a server)."""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

from rich.console import Console
from rich.panel import Panel

from inquire.embed.folder import is_embedding_folder

DEMO_PORT = 8000


def program() -> list[str]:
    """How to run inquire from a shell: ``inquire`` when it is on PATH (an activated
    environment), else this interpreter with ``-m inquire`` (e.g. after ``make demo``)."""
    if shutil.which("inquire"):
        return ["inquire"]
    return [sys.executable, "-m", "inquire"]


def serve_command(
    results_dirs: list[Path],
    bench_root: Path,
    port: int = DEMO_PORT,
    collections: Path | None = None,
) -> str:
    """The ``inquire serve ...`` command line over ``results_dirs`` and the synthetic benchmark
    at ``bench_root`` (its images, annotations, query texts, embeddings and text model), with
    the Verify page over ``collections`` when given."""
    # Absolute paths: the command must work from any folder, not only the one the demo ran in.
    results_dirs = [Path(p).resolve() for p in results_dirs]
    bench_root = Path(bench_root).resolve()
    collections = Path(collections).resolve() if collections is not None else None
    args = [*program(), "serve", *(str(p) for p in results_dirs)]
    images = bench_root / "images"
    if images.is_dir():
        args += ["--images", str(images)]
    for name, flag in (
        ("inquire_annotations.csv", "--annotations"),
        ("inquire_queries_val.csv", "--queries"),
        ("inquire_queries_test.csv", "--queries"),
    ):
        if (bench_root / name).is_file():
            args += [flag, str(bench_root / name)]
    if is_embedding_folder(bench_root / "embeddings"):
        args += ["--embeddings", str(bench_root / "embeddings")]
        if (bench_root / "text_embeddings.parquet").is_file():
            args += ["--model", f"precomputed:{bench_root / 'text_embeddings.parquet'}"]
    if collections is not None:
        args += ["--collections", str(collections)]
    args += ["--port", str(port)]
    return shlex.join(args)


def demo_web(
    results_dirs: list[Path],
    bench_root: Path,
    console: Console,
    collections: Path | None = None,
) -> str:
    """Print the command (and URL) that serves the demo's results; return the command.

    Runs in milliseconds: it only checks which of the benchmark's files exist.
    """
    cmd = serve_command([Path(p) for p in results_dirs], Path(bench_root), collections=collections)
    url = f"http://127.0.0.1:{DEMO_PORT}/"
    note = ""
    if not (Path(bench_root) / "images").is_dir():
        note = (
            "\n[dim]This benchmark has no image files (make_synthetic_benchmark(..., "
            "write_images=True) writes them); the grid then shows image ids only.[/]"
        )
    console.print(
        Panel(
            f"Look at the results in your browser: run the command below, then open "
            f"[bold]{url}[/]. Free-text search accepts the synthetic query texts (the "
            f"precomputed text model knows only those; the search box suggests them)."
            + (
                " The Verify page (/verify) holds the demo's photo collection."
                if collections
                else ""
            )
            + f"{note}",
            title="web page",
        )
    )
    # Outside the panel and unwrapped, so it can be copied as one line.
    console.print(cmd, soft_wrap=True, markup=False, highlight=False)
    return cmd
