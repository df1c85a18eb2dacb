"""``inquire embed`` (images -> embedding shards) and ``inquire models`` (the registry)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from inquire.cli._common import check_device_precision, friendly_errors


def _embedded_kept(kwargs: dict[str, Any]) -> str:
    """What an interrupted or failed ``inquire embed`` left in OUT, and how to go on."""
    from inquire.embed.store import EmbeddingStore

    out = Path(kwargs["out"])
    try:
        n = len(EmbeddingStore(out))
    except Exception:  # nothing committed yet (no manifest, no shard)
        n = 0
    again = "the same command" + (" without --overwrite" if kwargs.get("overwrite") else "")
    return (
        f"the {n:,} embeddings committed so far to {str(out)!r} are kept; run {again} to "
        "resume where it stopped (committed images are not embedded again)"
    )


@friendly_errors(on_stop=_embedded_kept, on_interrupt=_embedded_kept)
def embed_cmd(
    model: str = typer.Option(..., "--model", "-m", help="Model id or alias (see inquire models)."),
    images: Path = typer.Option(
        ..., "--images", help="Folder of images, uncompressed .tar, or iNat-style train.json/tree."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (clip-retrieval layout)."),
    batch_size: int = typer.Option(64, help="Images per forward pass."),
    shard_size: int = typer.Option(100_000, help="Images per output shard."),
    workers: int = typer.Option(
        2, help="Decoding processes (local engine) or encoder actors (ray engine)."
    ),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:N or mps."),
    precision: str = typer.Option("fp32", help="fp32, fp16 or bf16."),
    engine: str = typer.Option("local", help="local or ray."),
    address: str | None = typer.Option(None, help="Ray cluster address to join (engine ray)."),
    overwrite: bool = typer.Option(False, help="Replace an existing output instead of resuming."),
) -> None:
    """Embed every image under IMAGES into OUT; rerun the same command to resume."""
    from rich.console import Console

    from inquire.embed.pipeline import embed_images

    check_device_precision(device, precision)
    console = Console(stderr=True)
    summary = embed_images(
        model,
        images,
        out,
        batch_size=batch_size,
        shard_size=shard_size,
        workers=workers,
        engine=engine,
        address=address,
        device=device,
        precision=precision,
        overwrite=overwrite,
        console=console,
    )
    msg = (
        f"{summary.count:,} embeddings in {summary.n_shards} shard(s) at {summary.out}"
        f" ({summary.new_images:,} images this run"
        + (f", {summary.images_per_s:,.1f} img/s)" if summary.new_images else ")")
    )
    console.print(msg)
    if summary.n_errors:
        console.print(
            f"[yellow]{summary.n_errors} image(s) could not be decoded; see "
            f"{summary.out / 'errors.csv'}[/]"
        )


@friendly_errors
def models_cmd() -> None:
    """List the model backends and INQUIRE's model aliases (with INQUIRE's own ids)."""
    from inquire.embed.models import describe_models

    typer.echo(describe_models(), nl=False)


def register(app: typer.Typer) -> None:
    app.command("embed")(embed_cmd)
    app.command("models")(models_cmd)
