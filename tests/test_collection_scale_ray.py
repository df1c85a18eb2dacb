"""`--ray ADDRESS` of `inquire search` and of the page: the partitioned index served by Ray
actors returns what one process returns, bit for bit; the actors stop with the command; a
missing Ray, an unreachable cluster or a collection without an index fail in one line.

The cluster test runs in a private network namespace (``private_network``, tests/conftest.py).
"""

from __future__ import annotations

import json
import socket
import sys
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from inquire.cli import app
from inquire.collection import create_collection
from inquire.collection.scale import index_collection, index_served
from inquire.collection.search import CollectionSearcher
from inquire.index import ivfpq
from inquire.testing.collection_encoder import PixelHashEncoder, make_photo_folder

pytest.importorskip("faiss")

# 3 partitions of 100 photos, nprobe 1 of 8 lists and no exact threshold: searches take the
# approximate IVF route, so equality with one process is a real check of the served path.
OPTS = {"nlist": 8, "pq_m": 4, "partition_rows": 100, "nprobe": 1, "exact_below": 0}
LIMIT_S = 120  # failure limit only


@pytest.fixture
def indexed(tmp_path):
    make_photo_folder(tmp_path / "p", n=300)
    enc = PixelHashEncoder(dim=16)
    coll, _ = create_collection(
        "big", tmp_path / "p", enc.model_id, encoder=enc, index="none", chunk_size=100
    )
    coll.close()
    return tmp_path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _one_line_error(res, *needles: str) -> None:
    assert res.exit_code != 0
    assert "Traceback" not in res.output
    text = " ".join(res.output.split())
    for needle in needles:
        assert needle in text, res.output


def test_ray_errors_are_one_line(indexed, monkeypatch):
    runner = CliRunner()
    search = ["search", "big", "--like", "1"]
    # No index: says which command builds it (checked before Ray is asked anything).
    res = runner.invoke(app, [*search, "--ray", f"127.0.0.1:{_free_port()}"])
    _one_line_error(res, "has no partitioned index", "inquire collection index big")
    index_collection("big", options=OPTS)
    # Nothing listens at the address: refused at once, Ray never started.
    port = _free_port()
    started = time.monotonic()
    res = runner.invoke(app, [*search, "--ray", f"127.0.0.1:{port}"])
    _one_line_error(res, f"127.0.0.1:{port}", "is unreachable")
    assert time.monotonic() - started < LIMIT_S
    if "ray" in sys.modules:
        assert not sys.modules["ray"].is_initialized()
    res = runner.invoke(app, [*search, "--ray", "head-node"])
    _one_line_error(res, "'head-node' is not a Ray address", "HOST:PORT")
    for serve in (["collection", "serve"], ["serve"]):  # both servers of the Verify page
        res = runner.invoke(
            app, [*serve, "--port", str(_free_port()), "--ray", f"127.0.0.1:{port}"]
        )
        _one_line_error(res, "is unreachable")
    # Ray not installed.
    monkeypatch.setitem(sys.modules, "ray", None)
    res = runner.invoke(app, [*search, "--ray", f"127.0.0.1:{port}"])
    _one_line_error(res, "--ray needs Ray", "pip install 'ray[data]'")
    # Without --ray nothing changes.
    res = runner.invoke(app, [*search, "--json"])
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize(
    "address",
    [
        ":",
        "host:",
        ":99999",
        "127.0.0.1:0",
        "127.0.0.1:65536",
        "[::1]:x",
        "auto",
        "",
        "127.0.0.1:\u00b2",  # superscript two: str.isdigit() says yes, int() fails
        "127.0.0.1:\uff16\uff13\uff17\uff19",  # full-width digits
        "http://127.0.0.1:6379",  # a URL of another scheme
        " 127.0.0.1:6379",
        "127.0.0.1\x00:6379",
    ],
)
def test_a_bad_ray_address_is_named_before_anything_is_asked(address, monkeypatch):
    from inquire.collection import scale
    from inquire.errors import InputError

    def no_socket(*args, **kwargs):
        raise AssertionError("a malformed address reached the network")

    monkeypatch.setattr(socket, "create_connection", no_socket)
    with pytest.raises(InputError, match="is not a Ray address") as err:
        scale.connect_ray(address, timeout=1)
    assert repr(address) in str(err.value) and "ray://HOST:PORT" in str(err.value)
    # Never searched in this process instead.
    with pytest.raises(InputError, match="is not a Ray address"), index_served(address):
        pass


def test_a_very_long_ray_address_fails_in_a_short_line():
    from inquire.collection import scale
    from inquire.errors import InputError

    # A host name label over 63 bytes fails in the idna codec (UnicodeError) before any
    # lookup; the address is cut in the message.
    address = "x" * 300_000 + ":6379"
    with pytest.raises(InputError, match="is unreachable") as err:
        scale.connect_ray(address, timeout=1)
    assert len(str(err.value)) < 600 and "300,005 characters" in str(err.value)


def _named_actors(ray) -> list[str]:
    return [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith("inquire-index-")
    ]


def _wait_no_actors(ray) -> None:
    deadline = time.monotonic() + LIMIT_S
    while _named_actors(ray):
        assert time.monotonic() < deadline, f"actors left running: {_named_actors(ray)}"
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.private_network
def test_search_and_page_on_ray_equal_one_process(ray_two_nodes, indexed, monkeypatch):
    ray = ray_two_nodes
    address = ray.get_runtime_context().gcs_address
    index_collection("big", options=OPTS)
    runner = CliRunner()

    # The CLI: the same results, served by 3 actors over both nodes, stopped afterwards.
    for extra in ([], ["--from", "2020-01-01", "--to", "2021-06-30"]):
        args = ["search", "big", "--like", "1", "--like", "7", "-k", "60", "--json", *extra]
        local = runner.invoke(app, args)
        served = runner.invoke(app, [*args, "--ray", address])
        assert local.exit_code == 0 and served.exit_code == 0, served.output
        assert "index served by 3 Ray actors on 2 nodes" in served.output
        assert json.loads(served.stdout) == json.loads(local.stdout)
        assert len(json.loads(local.stdout)) == 60 or extra
        _wait_no_actors(ray)

    # The command as a user runs it, in its own process: it connects to the cluster itself
    # (ray.init), serves, and leaves no actor behind when it exits.
    import subprocess

    args = ["search", "big", "--like", "1", "--like", "7", "-k", "60", "--json"]
    proc = subprocess.run(
        [sys.executable, "-m", "inquire", *args, "--ray", address],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "index served by 3 Ray actors on 2 nodes" in proc.stderr
    assert json.loads(proc.stdout) == json.loads(runner.invoke(app, args).stdout)
    _wait_no_actors(ray)

    # The library the CLI calls: bit for bit, filtered or not.
    from inquire.collection.store import open_collection

    q = np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    with open_collection("big") as coll:
        one = coll.index()
        masks = [None, np.random.default_rng(1).random(len(one)) < 0.3]
        want = [CollectionSearcher(one).search(q, 50, m) for m in masks]
        with index_served(address, "big") as serving:
            on_ray = coll.index()
            assert isinstance(on_ray.ann, ivfpq.ScaleIndex)
            assert serving is not None and serving.actors() == 3 and serving.nodes() == 2
            for m, (s, i) in zip(masks, want, strict=True):
                got_s, got_i = CollectionSearcher(on_ray).search(q, 50, m)
                np.testing.assert_array_equal(got_i, i)
                np.testing.assert_array_equal(got_s.view(np.uint32), s.view(np.uint32))
        assert serving.actors() == 0
    _wait_no_actors(ray)

    # The page (`inquire collection serve --ray`): its searches go to the actors while it
    # serves, rank what it ranks without Ray, and the actors stop with the server.
    from inquire.testing.web_client import page_client

    seen: dict[str, object] = {}

    def fake_serve(web_app, host, port):
        client = page_client(web_app)
        r = client.post("/verify/api/c/big/searches", json={"like": [1, 7]})
        assert r.status_code == 200, r.text
        sid = r.json()["search_id"]
        page = client.get(f"/verify/api/c/big/searches/{sid}/results", params={"limit": 40})
        assert page.status_code == 200, page.text
        key = "ray" if _named_actors(ray) else "local"
        seen[key] = [(x["image_id"], x["score"]) for x in page.json()["results"]]

    monkeypatch.setattr("inquire.web.server.serve", fake_serve)
    # The page loads the collection's encoder (a test stand-in, not in the model table).
    monkeypatch.setattr("inquire.embed.models.load_encoder", lambda _: PixelHashEncoder(16))
    for extra in ([], ["--ray", address]):
        res = runner.invoke(app, ["collection", "serve", "--port", str(_free_port()), *extra])
        assert res.exit_code == 0, res.output
    assert set(seen) == {"local", "ray"} and seen["ray"] == seen["local"]
    assert len(seen["local"]) >= 20  # type: ignore[arg-type]  # the first page ranked
    _wait_no_actors(ray)
