"""``inquire download``: fetch benchmark artifacts into the cache."""

from __future__ import annotations

import typer

from inquire.cli._common import friendly_errors


@friendly_errors
def download_cmd(
    name: str | None = typer.Argument(
        None, help="An artifact (e.g. annotations) or a group (e.g. rerank-test)."
    ),
    force: bool = typer.Option(False, "--force", help="Download again even if cached."),
    list_: bool = typer.Option(False, "--list", help="List the registered artifacts."),
    extract_: bool = typer.Option(
        False, "--extract", help="Also unpack the archive's main member (e.g. train.json)."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress."),
) -> None:
    """Download NAME and print its local path(s).

    INQUIRE-Rerank shards go to the Hugging Face cache (an existing copy is reused; HF_ENDPOINT
    and HF_TOKEN apply), everything else to inquire's cache (INQUIRE_HOME). Files already
    cached and verified are not downloaded again (no network is used). Set INQUIRE_BASE_URL
    to fetch every artifact from a static mirror.
    """
    from rich.console import Console

    from inquire.data import download
    from inquire.errors import InputError

    console = Console()
    if list_:
        _print_registry(console)
        return
    if name is None:
        raise InputError(
            "name an artifact or group to download (see `inquire download --list`), e.g. "
            "`inquire download annotations`"
        )
    for path in download.fetch_and_extract(
        name, extract_member=extract_, force=force, progress=progress
    ):
        typer.echo(str(path))


def _print_registry(console: object) -> None:
    """Every artifact with the URL it is fetched from (the mirror's when INQUIRE_BASE_URL is
    set), then the groups; vertical when the URLs do not fit the terminal."""
    from inquire._render import Col, print_records
    from inquire.config import base_url
    from inquire.data.download import cached_path, source_url
    from inquire.data.registry import ARTIFACTS, GROUPS

    rows = []
    for art in ARTIFACTS.values():
        size = f"{art.size:,} B" if art.size is not None else art.approx_size or "?"
        rows.append(
            (
                art.name,
                size,
                "yes" if cached_path(art) is not None else "no",
                source_url(art),
                art.sha256[:12] if art.sha256 else "recorded on 1st download",
                art.license,
                art.description,
            )
        )
    mirror = base_url()
    print_records(
        console,
        [
            Col("name", keep=True, style="bold"),
            Col("size"),
            Col("cached"),
            Col("url", keep=True),
            Col("sha256"),
            Col("license"),
            Col("description"),
        ],
        rows,
        f"inquire artifacts (from the mirror INQUIRE_BASE_URL={mirror})"
        if mirror
        else "inquire artifacts (set INQUIRE_BASE_URL to fetch every one from a mirror)",
    )
    print_records(
        console,
        [Col("group", keep=True, style="bold"), Col("artifacts", keep=True)],
        [(group, " ".join(members)) for group, members in GROUPS.items()],
        "groups (download all their artifacts at once)",
    )


def register(app: typer.Typer) -> None:
    app.command("download")(download_cmd)
