"""``inquire serve``: the web page over evaluation results and an embedded collection."""

from __future__ import annotations

from pathlib import Path

import typer

from inquire.cli._common import friendly_errors
from inquire.errors import InputError


def check_port_free(host: str, port: int) -> None:
    """Fail before the URL is printed when ``host:port`` cannot be listened on (in use, or
    an address this machine does not have)."""
    import errno
    import socket

    if not 0 < port < 65536:
        raise InputError(f"--port {port} is out of range; use 1..65535")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise InputError(f"--host {host!r} is not an address of this machine ({exc})") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does
        try:
            sock.bind(addr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise InputError(
                    f"port {port} on {host} is already in use (another server is listening "
                    f"there); stop it or pass --port with a free port"
                ) from None
            raise InputError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None


@friendly_errors
def serve_cmd(
    results: list[Path] = typer.Argument(
        None, help="Evaluation result folders (summary.json, per_query.csv, run.parquet)."
    ),
    images: list[Path] = typer.Option(
        [], "--images", help="Image root folder (repeatable); images are served only from these."
    ),
    annotations: list[Path] = typer.Option(
        [], "--annotations", help="Annotation CSV marking results relevant (repeatable)."
    ),
    queries: list[Path] = typer.Option(
        [], "--queries", help="Query CSV giving each query its text (repeatable)."
    ),
    embeddings: Path | None = typer.Option(
        None, "--embeddings", help="Embedding folder: image ids -> paths, and free-text search."
    ),
    model: str | None = typer.Option(
        None, "--model", "-m", help="Text model id for free-text search (needs --embeddings)."
    ),
    rerank_data: list[Path] = typer.Option(
        [],
        "--rerank-data",
        help="INQUIRE-Rerank parquet file whose images the page may show (repeatable).",
    ),
    thumb_cache: Path | None = typer.Option(
        None, "--thumb-cache", help="Thumbnail cache folder (default: <cache>/web/thumbs)."
    ),
    collections: Path | None = typer.Option(
        None,
        "--collections",
        help="Folder of collections for the Verify page (default: the cache's collections).",
    ),
    host: str = typer.Option("127.0.0.1", help="Address to bind; the default is loopback only."),
    port: int = typer.Option(8000, help="TCP port."),
    allow_host: list[str] = typer.Option(
        [],
        "--allow-host",
        help="Another name clients use to reach the server (repeatable); requests naming "
        "any other host are refused.",
    ),
    ray_address: str | None = typer.Option(
        None,
        "--ray",
        help="Verify page: serve partitioned indexes from Ray actors on the Ray cluster at this "
        "address (HOST:PORT); stopped with the server.",
    ),
) -> None:
    """Serve a web page over RESULTS (metrics, top-k images, search) and the Verify page."""
    from rich.console import Console

    from inquire.web.app import create_app
    from inquire.web.config import WebConfig
    from inquire.web.server import serve
    from inquire.web.verify import make_router

    if collections is not None and not collections.is_dir():
        raise InputError(
            f"--collections {str(collections)!r} is not a folder; pass the folder that holds "
            "the collections (by default the cache's, see `inquire collection list`)"
        )
    config = WebConfig(
        results=list(results or []),
        image_roots=images,
        annotations=annotations,
        queries=queries,
        embeddings=embeddings,
        model=model,
        rerank_data=rerank_data,
        thumb_cache=thumb_cache,
        routers=[make_router(collections)],
        nav_links=[("Verify", "/verify")],
        host=host,
        allowed_hosts=allow_host,
    )
    from inquire.collection.scale import index_served

    app = create_app(config)
    check_port_free(host, port)
    with index_served(ray_address):
        Console(stderr=True).print(
            f"inquire web page: [bold]http://{host}:{port}/[/] (Ctrl+C stops)"
        )
        serve(app, host=host, port=port)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)
