"""Downloads against a local fixture server: resume, retries, checksums, offline use."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from inquire.cli import app
from inquire.data import download, download_cache, download_http
from inquire.data.download import extract, fetch, fetch_dataset, local_path, source_url
from inquire.data.registry import (
    ARTIFACTS,
    GROUPS,
    RERANK_REVISION,
    RERANK_SHARDS,
    Artifact,
    get_artifact,
)
from inquire.errors import ChecksumError, DownloadError, InputError, UnknownNameError
from inquire.testing.data_mirror import tar_gz, write_mirror
from inquire.testing.http_server import FixtureServer

# 300 kB of non-repeating bytes: several read chunks, so "half-way" is mid-stream.
PAYLOAD = hashlib.sha256(b"seed").digest() * (300_000 // 32)
FAST = {"progress": False, "backoff_s": 0.0}


def _artifact(name: str = "fixture-blob", data: bytes = PAYLOAD, **kw: object) -> Artifact:
    """A test artifact with a known size and checksum, mirrored under example.org.

    Resumable (the iNat tarball's path) unless ``resumable=False`` (pooch's own downloader).
    """
    fields: dict[str, object] = {
        "name": name,
        "url": f"https://example.org/files/{name}.bin",
        "license": "test",
        "description": "fixture",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "resumable": True,
    }
    fields.update(kw)
    return Artifact(**fields)  # type: ignore[arg-type]


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FixtureServer]:
    """A running fixture server with PAYLOAD as ``fixture-blob``; INQUIRE_BASE_URL set."""
    root = write_mirror(tmp_path / "mirror", {_artifact(): PAYLOAD})
    with FixtureServer(root) as server:
        monkeypatch.setenv("INQUIRE_BASE_URL", server.url + "/")
        yield server


# ------------------------------------------------------------------ registry


def test_registry_has_the_required_artifacts() -> None:
    base = "https://raw.githubusercontent.com/inquire-benchmark/INQUIRE/main/data/inquire/"
    assert ARTIFACTS["queries-val"].url == base + "inquire_queries_val.csv"
    assert ARTIFACTS["queries-test"].url == base + "inquire_queries_test.csv"
    assert ARTIFACTS["annotations"].url == base + "inquire_annotations.csv"
    inat = ARTIFACTS["inat24-train-json"]
    assert (
        inat.url == "https://ml-inat-competition-datasets.s3.amazonaws.com/2024/train.json.tar.gz"
    )
    assert inat.extract_member == "train.json"
    # Mirror paths are the URL without its scheme, so `wget -x` builds a valid mirror.
    assert (
        inat.mirror_path == "ml-inat-competition-datasets.s3.amazonaws.com/2024/train.json.tar.gz"
    )
    # Pinned to one dataset commit, not the moving main branch.
    hf = (
        "https://huggingface.co/datasets/evendrow/INQUIRE-Rerank/resolve/"
        "e19e265fd92542bc5f839a5777a39942b16c9c33/data/"
    )
    val = [ARTIFACTS[n].url for n in GROUPS["rerank-val"]]
    assert val == [hf + "validation-00000-of-00001.parquet"]
    n_test = RERANK_SHARDS["test"][1]
    test = [ARTIFACTS[n].url for n in GROUPS["rerank-test"]]
    assert test == [hf + f"test-{i:05d}-of-{n_test:05d}.parquet" for i in range(n_test)]
    for art in ARTIFACTS.values():
        assert art.license and art.description
        assert art.sha256 is None or len(art.sha256) == 64


def test_unknown_artifact_suggests_close_names() -> None:
    with pytest.raises(UnknownNameError, match=r"Did you mean 'annotations'"):
        get_artifact("anotations")
    with pytest.raises(UnknownNameError, match=r"'rerank-test'"):
        fetch_dataset("rerank-tset")
    with pytest.raises(UnknownNameError, match=r"'queries-val'"):
        fetch("queries-vla")


def test_mirror_override_rewrites_every_url(monkeypatch: pytest.MonkeyPatch) -> None:
    art = ARTIFACTS["annotations"]
    assert source_url(art) == art.url
    monkeypatch.setenv("INQUIRE_BASE_URL", "http://mirror.local/base/")
    for a in ARTIFACTS.values():
        assert source_url(a) == f"http://mirror.local/base/{a.mirror_path}"


# ------------------------------------------------------------------ download


def test_happy_path_through_the_mirror(mirror: FixtureServer) -> None:
    art = _artifact()
    path = fetch(art, **FAST)
    assert path == local_path(art)
    assert path.read_bytes() == PAYLOAD
    assert not path.with_name(path.name + ".part").exists()
    [req] = mirror.gets()
    assert req.path == "/" + art.mirror_path and req.range is None and req.status == 200
    manifest = json.loads((download_cache.download_dir() / "manifest.json").read_text())
    assert manifest[art.mirror_path]["sha256"] == art.sha256
    # Second call: cached, no request at all.
    assert fetch(art, **FAST) == path
    assert len(mirror.requests) == 1
    # force: downloads again.
    fetch(art, force=True, **FAST)
    assert len(mirror.gets()) == 2


def test_resume_of_a_partial_part_file(mirror: FixtureServer) -> None:
    art = _artifact()
    part = local_path(art).with_name(local_path(art).name + ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    part.write_bytes(PAYLOAD[:123_457])
    path = fetch(art, **FAST)
    assert path.read_bytes() == PAYLOAD
    [req] = mirror.gets()
    assert req.range == "bytes=123457-" and req.status == 206


def test_server_ignoring_range_restarts_from_zero(mirror: FixtureServer) -> None:
    art = _artifact()
    part = local_path(art).with_name(local_path(art).name + ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    part.write_bytes(PAYLOAD[:1000])
    mirror.mode = "ignore-range"
    assert fetch(art, **FAST).read_bytes() == PAYLOAD  # not 1000 bytes too many
    [req] = mirror.gets()
    assert req.range == "bytes=1000-" and req.status == 200


def test_connection_dropped_half_way_is_resumed(mirror: FixtureServer) -> None:
    art = _artifact()
    mirror.mode, mirror.fail_times = "drop", 2
    path = fetch(art, **FAST)
    assert path.read_bytes() == PAYLOAD
    reqs = mirror.gets()
    assert len(reqs) == 3 and reqs[0].range is None
    # Each retry resumes after the bytes that arrived (whole network reads before the cut).
    starts = [int(r.range[len("bytes=") : -1]) for r in reqs[1:] if r.range]
    assert len(starts) == 2 and 0 < starts[0] < starts[1] < len(PAYLOAD)
    assert starts[0] <= len(PAYLOAD) // 2
    assert [r.status for r in reqs] == [200, 206, 206]


def test_retries_run_out_with_a_clear_error(mirror: FixtureServer) -> None:
    art = _artifact()
    mirror.mode = "error"  # 503 on every request
    with pytest.raises(DownloadError, match=r"fixture-blob.*after 3 attempts.*INQUIRE_BASE_URL"):
        fetch(art, retries=2, **FAST)
    assert len(mirror.gets()) == 3
    assert not local_path(art).exists()


def test_wrong_bytes_raise_checksum_error_and_leave_nothing(mirror: FixtureServer) -> None:
    art = _artifact()
    mirror.mode = "corrupt"
    with pytest.raises(ChecksumError, match=r"'fixture-blob'.*sha256.*expected") as info:
        fetch(art, **FAST)
    assert source_url(art) in str(info.value)
    folder = local_path(art).parent
    assert list(folder.iterdir()) == []  # neither the file nor a .part
    assert not (download_cache.download_dir() / "manifest.json").exists()


def test_wrong_size_is_a_checksum_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    art = _artifact(sha256=None, size=len(PAYLOAD) + 5)
    with FixtureServer(write_mirror(tmp_path / "m", {art: PAYLOAD})) as server:
        monkeypatch.setenv("INQUIRE_BASE_URL", server.url)
        with pytest.raises(ChecksumError, match=rf"size {len(PAYLOAD)} bytes, expected"):
            fetch(art, **FAST)
    assert not local_path(art).exists()


def test_missing_file_names_the_artifact_url_and_fix(mirror: FixtureServer) -> None:
    art = _artifact("not-on-the-mirror")
    with pytest.raises(DownloadError, match=r"'not-on-the-mirror'.*HTTP 404") as info:
        fetch(art, **FAST)
    msg = str(info.value)
    assert source_url(art) in msg and "INQUIRE_BASE_URL" in msg and str(local_path(art)) in msg
    assert len(mirror.gets()) == 1  # a 404 is not retried


def test_unreachable_server_fails_at_once_without_retries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with FixtureServer(Path(".")) as server:
        url = server.url  # a port that is free again once the server stops
    monkeypatch.setenv("INQUIRE_BASE_URL", url)
    waits: list[float] = []
    monkeypatch.setattr(download_http.time, "sleep", waits.append)
    with pytest.raises(DownloadError, match=r"refused.*not retried.*INQUIRE_BASE_URL"):
        fetch(_artifact(), retries=3, progress=False, backoff_s=30.0)
    assert waits == []  # one attempt: no backoff waits at all


def test_corrupt_cached_file_is_fetched_again(mirror: FixtureServer) -> None:
    art = _artifact()
    path = fetch(art, **FAST)
    data = bytearray(path.read_bytes())
    data[1000] ^= 0x01  # same size, one bit wrong
    path.write_bytes(bytes(data))
    assert fetch(art, **FAST).read_bytes() == PAYLOAD
    assert len(mirror.gets()) == 2


def test_truncated_cached_file_is_fetched_again(mirror: FixtureServer) -> None:
    art = _artifact()
    path = fetch(art, **FAST)
    path.write_bytes(PAYLOAD[:5000])
    assert fetch(art, **FAST).read_bytes() == PAYLOAD
    assert len(mirror.gets()) == 2


def test_unknown_checksum_is_recorded_then_enforced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    art = _artifact(size=None, sha256=None)
    with FixtureServer(write_mirror(tmp_path / "m", {art: PAYLOAD})) as server:
        monkeypatch.setenv("INQUIRE_BASE_URL", server.url)
        path = fetch(art, **FAST)
        record = json.loads((download_cache.download_dir() / "manifest.json").read_text())
        assert record[art.mirror_path]["sha256"] == hashlib.sha256(PAYLOAD).hexdigest()
        assert record[art.mirror_path]["size"] == len(PAYLOAD)
        # Flip a byte without changing the size: the recorded sha256 catches it.
        data = bytearray(PAYLOAD)
        data[7] ^= 0xFF
        path.write_bytes(bytes(data))
        os.utime(path, ns=(1, 1))
        assert fetch(art, **FAST).read_bytes() == PAYLOAD
        assert len(server.gets()) == 2


def test_offline_with_a_filled_cache_makes_no_request(mirror: FixtureServer) -> None:
    art = _artifact()
    fetch(art, **FAST)
    n = len(mirror.requests)
    mirror.stop()
    # Even with a full re-hash, a good cached file needs no network at all.
    assert fetch(art, rehash=True, retries=0, progress=False).read_bytes() == PAYLOAD
    assert len(mirror.requests) == n


def test_hand_placed_file_is_verified_and_used(mirror: FixtureServer) -> None:
    art = _artifact()
    target = local_path(art)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(PAYLOAD)
    assert fetch(art, **FAST) == target
    assert mirror.requests == []


def test_fetch_dataset_returns_shards_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    members = GROUPS["rerank-test"]
    files = {n: f"shard {n}".encode() for n in members}
    with FixtureServer(write_mirror(tmp_path / "m", files)) as server:
        monkeypatch.setenv("INQUIRE_BASE_URL", server.url)
        paths = fetch_dataset("rerank-test", progress=False)
    assert [p.read_bytes() for p in paths] == [files[n] for n in members]
    assert [p.name for p in paths] == [ARTIFACTS[n].filename for n in members]


def test_extract_streams_the_member_into_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train_json = json.dumps({"images": [{"id": 1, "file_name": "train/x/1.jpg"}]}).encode()
    archive = tar_gz({"train.json": train_json, "README.txt": b"other member"})
    art = _artifact("inat-fixture", archive, extract_member="train.json")
    with FixtureServer(write_mirror(tmp_path / "m", {art: archive})) as server:
        monkeypatch.setenv("INQUIRE_BASE_URL", server.url)
        out = extract(art, progress=False)
        assert out.read_bytes() == train_json and out.name == "train.json"
        # A second call reuses the extraction (no request, no re-read).
        server.stop()
        assert extract(art, progress=False) == out
    with pytest.raises(InputError, match=r"no member named 'nope.json'"):
        extract(art, "nope.json", progress=False)


def test_extract_of_a_non_archive_is_a_clear_error(mirror: FixtureServer) -> None:
    art = _artifact(extract_member="train.json")
    with pytest.raises(DownloadError, match=r"not a readable \.tar\.gz.*--force"):
        extract(art, progress=False)


# ------------------------------------------------------------------ CLI


def test_cli_download_and_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FixtureServer(write_mirror(tmp_path / "m", {"queries-val": b"a,b\n1,2\n"})) as server:
        monkeypatch.setenv("INQUIRE_BASE_URL", server.url)
        runner = CliRunner()
        res = runner.invoke(app, ["download", "queries-val", "--no-progress"])
        assert res.exit_code == 0, res.output
        path = Path(res.output.strip().splitlines()[-1])
        assert path.read_bytes() == b"a,b\n1,2\n"
        res = runner.invoke(app, ["download", "queries-val", "--force", "--no-progress"])
        assert res.exit_code == 0 and len(server.gets()) == 2
    res = CliRunner().invoke(app, ["download", "--list"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    for name in (*ARTIFACTS, *GROUPS):
        assert name in res.output
    assert "438 MB" in res.output and "CC BY-NC 4.0" in res.output


def test_cli_download_errors_exit_2() -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["download", "anotations"])
    assert res.exit_code == 2 and "Did you mean 'annotations'" in res.output
    res = runner.invoke(app, ["download"])
    assert res.exit_code == 2 and "--list" in res.output


# ------------------------------------------------------------------ local mirrors, concurrency


@pytest.mark.parametrize("as_uri", [False, True])
def test_local_folder_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, as_uri: bool) -> None:
    art = _artifact()
    root = write_mirror(tmp_path / "disk mirror", {art: PAYLOAD})  # a space: URL-quoted
    monkeypatch.setenv("INQUIRE_BASE_URL", root.as_uri() if as_uri else str(root))
    assert source_url(art).startswith("file://")
    assert fetch(art, **FAST).read_bytes() == PAYLOAD
    with pytest.raises(DownloadError, match=r"local mirror has no file"):
        fetch(_artifact("absent"), **FAST)


def test_concurrent_fetches_download_once(mirror: FixtureServer) -> None:
    from concurrent.futures import ThreadPoolExecutor

    art = _artifact()
    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda _: fetch(art, **FAST), range(4)))
    assert len(set(paths)) == 1 and paths[0].read_bytes() == PAYLOAD
    assert len(mirror.gets()) == 1
    manifest = json.loads((download_cache.download_dir() / "manifest.json").read_text())
    assert list(manifest) == [art.mirror_path]


def test_cli_download_extract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tar_gz({"train.json": b'{"images": []}'})
    with FixtureServer(write_mirror(tmp_path / "m", {"inat24-train-json": archive})) as server:
        monkeypatch.setenv("INQUIRE_BASE_URL", server.url)
        runner = CliRunner()
        res = runner.invoke(app, ["download", "inat24-train-json", "--extract", "--no-progress"])
        assert res.exit_code == 0, res.output
        archive_path, json_path = map(Path, res.output.strip().splitlines()[-2:])
        assert archive_path.read_bytes() == archive
        assert json_path.name == "train.json" and json_path.read_bytes() == b'{"images": []}'
        res = runner.invoke(app, ["download", "rerank-val", "--extract"])
        assert res.exit_code == 2 and "--extract needs a single archive" in res.output
    res = CliRunner().invoke(app, ["download", "annotations", "--extract"])
    assert res.exit_code == 2 and "archives: ['inat24-train-json']" in res.output


def test_complete_part_of_unknown_size_is_not_downloaded_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A crash between the last byte and the rename leaves a complete .part behind.
    art = _artifact(size=None, sha256=None)
    with FixtureServer(write_mirror(tmp_path / "m", {art: PAYLOAD})) as server:
        monkeypatch.setenv("INQUIRE_BASE_URL", server.url)
        part = local_path(art).with_name(local_path(art).name + ".part")
        part.parent.mkdir(parents=True, exist_ok=True)
        part.write_bytes(PAYLOAD)
        assert fetch(art, **FAST).read_bytes() == PAYLOAD
        assert [(r.range, r.status) for r in server.gets()] == [(f"bytes={len(PAYLOAD)}-", 416)]


def test_part_longer_than_the_file_restarts(mirror: FixtureServer) -> None:
    art = _artifact()
    part = local_path(art).with_name(local_path(art).name + ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    part.write_bytes(PAYLOAD + b"junk")
    assert fetch(art, **FAST).read_bytes() == PAYLOAD
    assert [r.range for r in mirror.gets()] == [None]


def test_stale_part_that_fails_verification_restarts_once(mirror: FixtureServer) -> None:
    # A .part left by an older version of the file: resuming gives wrong bytes, so the
    # download starts over from byte 0 once before giving up.
    art = _artifact()
    part = local_path(art).with_name(local_path(art).name + ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    part.write_bytes(b"X" * 1000)
    assert fetch(art, **FAST).read_bytes() == PAYLOAD
    assert [r.range for r in mirror.gets()] == ["bytes=1000-", None]


# ------------------------------------------------------------------ pooch's own downloader


def test_small_files_go_through_pooch_and_are_retried_from_zero(mirror: FixtureServer) -> None:
    # Not resumable (the CSVs): a cut-off body is downloaded again from byte 0.
    art = _artifact(resumable=False)
    mirror.mode, mirror.fail_times = "drop", 2
    assert fetch(art, **FAST).read_bytes() == PAYLOAD
    assert [(r.range, r.status) for r in mirror.gets()] == [(None, 200)] * 3
    mirror.mode, mirror.fail_times = "corrupt", None
    with pytest.raises(ChecksumError, match=r"'fixture-blob'.*sha256.*expected"):
        fetch(art, force=True, **FAST)
    assert list(local_path(art).parent.iterdir()) == []  # pooch's temporary file is gone too
    mirror.mode = "error"
    with pytest.raises(DownloadError, match=r"after 2 attempts: 503"):
        fetch(art, retries=1, **FAST)
    with pytest.raises(DownloadError, match=r"HTTP 404.*INQUIRE_BASE_URL"):
        fetch(_artifact("absent", resumable=False), **FAST)
    assert len(mirror.gets("absent.bin")) == 1


def test_backoff_doubles_between_retries(
    mirror: FixtureServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[float] = []
    monkeypatch.setattr(download_http.time, "sleep", waits.append)
    mirror.mode = "error"
    with pytest.raises(DownloadError, match=r"after 4 attempts"):
        fetch(_artifact(), retries=3, progress=False, backoff_s=0.5)
    assert waits == [0.5, 1.0, 2.0]


# ------------------------------------------------------------------ the Hugging Face hub

REV = RERANK_REVISION
HUB_FOLDER = "datasets--evendrow--INQUIRE-Rerank"


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache (what HF_HUB_CACHE names) for this test."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def hub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hub_cache: Path
) -> Iterator[tuple[FixtureServer, dict[str, bytes]]]:
    """A hub endpoint serving the Rerank test shards, as HF_ENDPOINT would set it; online."""
    from huggingface_hub import constants

    files = {n: f"shard {n} ".encode() * 2000 for n in GROUPS["rerank-test"]}
    root = write_mirror(tmp_path / "hub-mirror", files)
    with FixtureServer(root) as server:
        endpoint = server.url + "/huggingface.co"
        # What HF_ENDPOINT=<endpoint> sets when huggingface_hub is imported.
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
        monkeypatch.setattr(
            constants,
            "HUGGINGFACE_CO_URL_TEMPLATE",
            endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        )
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        yield server, files


def _fill_hub_cache(cache: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` (artifact name -> bytes) in the hub cache layout at the pinned
    revision: blobs named by sha256, snapshot links to them, refs/main -> the revision."""
    repo = cache / HUB_FOLDER
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REV)
    for name, data in files.items():
        digest = hashlib.sha256(data).hexdigest()
        blob = repo / "blobs" / digest
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        hub_file = get_artifact(name).hub
        assert hub_file is not None
        link = repo / "snapshots" / REV / hub_file.filename
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))


def test_rerank_shards_come_through_the_hub_client(
    hub: tuple[FixtureServer, dict[str, bytes]], hub_cache: Path
) -> None:
    server, files = hub
    paths = fetch_dataset("rerank-test", progress=False)
    assert [p.read_bytes() for p in paths] == [files[n] for n in GROUPS["rerank-test"]]
    snapshot = hub_cache / HUB_FOLDER / "snapshots" / REV / "data"
    assert [p.parent for p in paths] == [snapshot] * len(paths)
    # Blobs are named by the ETag (sha256), as the hub stores LFS files.
    for p in paths:
        assert p.resolve().name == hashlib.sha256(p.read_bytes()).hexdigest()
    prefix = f"/huggingface.co/datasets/evendrow/INQUIRE-Rerank/resolve/{REV}/data/"
    gets = server.gets(".parquet")
    assert len(gets) == len(paths) and all(r.path.startswith(prefix) for r in gets)
    manifest = json.loads((download_cache.download_dir() / "manifest.json").read_text())
    keys = [k for k in manifest if k.startswith("hf://datasets/evendrow/INQUIRE-Rerank@")]
    assert len(keys) == len(paths)
    # Cached now: no request at all, even with the server gone.
    server.stop()
    assert fetch_dataset("rerank-test", progress=False) == paths


def test_a_filled_hugging_face_cache_is_used_offline(hub_cache: Path) -> None:
    # As `datasets.load_dataset("evendrow/INQUIRE-Rerank")` or `hf download` leave it;
    # HF_HUB_OFFLINE is set in the tests, and no server exists.
    files = {n: f"cached {n}".encode() for n in GROUPS["rerank-val"]}
    _fill_hub_cache(hub_cache, files)
    [path] = fetch_dataset("rerank-val", progress=False)
    assert (
        path
        == hub_cache
        / HUB_FOLDER
        / "snapshots"
        / REV
        / get_artifact("rerank-val-00000").hub.filename
    )  # type: ignore[union-attr]
    assert path.read_bytes() == files["rerank-val-00000"]
    # A static mirror setting does not send it to the network either.
    assert download.cached_path("rerank-val-00000") == path


def test_a_corrupt_hugging_face_cache_is_not_used(hub_cache: Path) -> None:
    _fill_hub_cache(hub_cache, {"rerank-val-00000": b"good bytes"})
    [blob] = (hub_cache / HUB_FOLDER / "blobs").iterdir()
    blob.write_bytes(b"bad bytes!")  # same size, not the sha256 it is named by
    with pytest.raises(DownloadError, match=r"rerank-val-00000.*HF_HUB_OFFLINE"):
        fetch("rerank-val-00000", progress=False)


def test_not_cached_while_offline_is_a_clear_error(hub_cache: Path) -> None:
    with pytest.raises(DownloadError) as info:
        fetch("rerank-test-00001", progress=False)
    msg = str(info.value)
    assert "'rerank-test-00001'" in msg and REV in msg and "HF_HUB_OFFLINE" in msg
    assert "INQUIRE_BASE_URL" in msg and "HF_ENDPOINT" in msg


def test_a_hub_mirror_serving_wrong_bytes_is_a_checksum_error(
    hub: tuple[FixtureServer, dict[str, bytes]], hub_cache: Path
) -> None:
    server, _ = hub
    server.mode = "corrupt"  # the ETag names the right sha256, the body differs
    with pytest.raises(ChecksumError, match=r"rerank-test-00000.*expected.*ETag"):
        fetch("rerank-test-00000", progress=False)
    snapshot = hub_cache / HUB_FOLDER / "snapshots" / REV
    assert not any(p.is_file() for p in snapshot.rglob("*"))
    assert not any((hub_cache / HUB_FOLDER / "blobs").iterdir())


def test_static_mirror_still_serves_rerank_shards_but_the_hub_cache_comes_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hub_cache: Path
) -> None:
    val = {"rerank-val-00000": b"from the hub cache"}
    _fill_hub_cache(hub_cache, val)
    files = {n: f"mirror {n}".encode() for n in (*GROUPS["rerank-val"], *GROUPS["rerank-test"])}
    with FixtureServer(write_mirror(tmp_path / "m", files)) as server:
        monkeypatch.setenv("INQUIRE_BASE_URL", server.url)
        [v] = fetch_dataset("rerank-val", progress=False)
        assert v.read_bytes() == val["rerank-val-00000"] and server.requests == []
        t = fetch_dataset("rerank-test", progress=False)
        assert [p.read_bytes() for p in t] == [files[n] for n in GROUPS["rerank-test"]]
        assert t[0] == local_path("rerank-test-00000")


def test_hf_endpoint_environment_variable_is_honoured(tmp_path: Path) -> None:
    # In a fresh process, as a user sets it: HF_ENDPOINT and HF_HUB_CACHE from the environment.
    import subprocess
    import sys

    files = {"rerank-val-00000": b"served by a hub mirror"}
    with FixtureServer(write_mirror(tmp_path / "m", files)) as server:
        env = {
            **os.environ,
            "HF_ENDPOINT": server.url + "/huggingface.co",
            "HF_HUB_CACHE": str(tmp_path / "hf"),
            "HF_HUB_OFFLINE": "0",
            "TRANSFORMERS_OFFLINE": "0",
            "INQUIRE_HOME": str(tmp_path / "home"),
        }
        env.pop("INQUIRE_BASE_URL", None)
        code = "from inquire.data import fetch; print(fetch('rerank-val-00000', progress=False))"
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr
        path = Path(out.stdout.strip().splitlines()[-1])
        assert path.read_bytes() == files["rerank-val-00000"]
        assert path.is_relative_to(tmp_path / "hf" / HUB_FOLDER / "snapshots" / REV)
        assert server.gets(get_artifact("rerank-val-00000").mirror_path)


def test_a_cache_filled_at_another_revision_is_linked_without_downloading(
    hub: tuple[FixtureServer, dict[str, bytes]], hub_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A download of the dataset's main branch (a later commit) left the same bytes under
    # another snapshot. Offline, the error says so; online, the hub client only asks for the
    # file's ETag and links the pinned revision to the blob already there.
    from huggingface_hub import constants

    server, files = hub
    name = GROUPS["rerank-test"][0]
    _fill_hub_cache(hub_cache, {name: files[name]})
    other = "0123456789abcdef0123456789abcdef01234567"
    snapshots = hub_cache / HUB_FOLDER / "snapshots"
    (snapshots / REV).rename(snapshots / other)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DownloadError, match=r"other revision\(s\) \(0123456789ab\)"):
        fetch(name, progress=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    path = fetch(name, progress=False)
    assert path.read_bytes() == files[name] and path.parent.parent.name == REV
    requests = [r for r in server.requests if r.path.endswith(".parquet")]
    assert [r.method for r in requests] == ["HEAD"]  # no GET: no bytes downloaded again


def test_fetch_and_extract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tar_gz({"train.json": b'{"images": [1]}'})
    with FixtureServer(write_mirror(tmp_path / "m", {"inat24-train-json": archive})) as server:
        monkeypatch.setenv("INQUIRE_BASE_URL", server.url)
        (only,) = download.fetch_and_extract("inat24-train-json", progress=False)
        assert only.read_bytes() == archive
        paths = download.fetch_and_extract("inat24-train-json", extract_member=True, progress=False)
        assert paths[0] == only and paths[1].read_bytes() == b'{"images": [1]}'
        n_gets = len(server.gets())
        with pytest.raises(InputError, match="archives: \\['inat24-train-json'\\]"):
            download.fetch_and_extract("annotations", extract_member=True)
        assert len(server.gets()) == n_gets  # refused before any download
