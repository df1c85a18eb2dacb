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
    """Download NAME into the cache (INQUIRE_HOME) and print its local path(s).

    Files already cached and verified are not downloaded again (no network is used).
    Set INQUIRE_BASE_URL to fetch every artifact from a mirror.
    """
    from rich.console import Console

    from inquire.data import download
    from inquire.data.registry import ARTIFACTS, GROUPS, get_artifact, group_members
    from inquire.errors import InputError

    console = Console()
    if list_:
        console.print(_registry_table())
        return
    if name is None:
        raise InputError(
            "name an artifact or group to download (see `inquire download --list`), e.g. "
            "`inquire download annotations`"
        )
    members = group_members(name)  # unknown names fail here, before any download
    if extract_ and (name in GROUPS or not get_artifact(name).extract_member):
        archives = [a.name for a in ARTIFACTS.values() if a.extract_member]
        raise InputError(
            f"--extract needs a single archive artifact, not {name!r}; archives: {archives}"
        )
    for path in download.fetch_dataset(name, force=force, progress=progress):
        typer.echo(str(path))
    if extract_:
        typer.echo(str(download.extract(members[0], force=force, progress=progress)))


def _registry_table() -> object:
    from rich.table import Table

    from inquire.data.download import local_path
    from inquire.data.registry import ARTIFACTS, GROUPS

    table = Table(title="inquire artifacts (INQUIRE_BASE_URL overrides every host)")
    table.add_column("name", no_wrap=True, style="bold")
    for col in ("size", "sha256", "license", "cached", "description"):
        table.add_column(col, overflow="fold")
    for art in ARTIFACTS.values():
        size = f"{art.size:,} B" if art.size is not None else art.approx_size or "?"
        table.add_row(
            art.name,
            size,
            art.sha256[:12] if art.sha256 else "1st use",
            art.license,
            "yes" if local_path(art).is_file() else "",
            art.description,
        )
    for group, members in GROUPS.items():
        table.add_row(group, "", "", "", "", f"group: {', '.join(members)}", style="dim")
    return table


def register(app: typer.Typer) -> None:
    app.command("download")(download_cmd)
