"""One writer at a time per collection and per embedding folder, with real processes.

The first writer is made to pause mid-run (its encoder waits for a file), so that the second
process provably starts while it writes; nothing here depends on timing.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from inquire.collection import create_collection, open_collection
from inquire.testing.collection_encoder import make_photo_folder

# A writer whose encoder records each call and, on its second call, waits for RELEASE: the
# update has then committed its first chunk (a shard + database rows) and holds the lock.
WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from inquire.collection import update_collection
    from inquire.embed.toy_backend import ColourEncoder

    flags = Path(sys.argv[2])

    class Gated(ColourEncoder):
        calls = 0

        def encode_images(self, images):
            Gated.calls += 1
            (flags / f"call_{Gated.calls}").touch()
            while Gated.calls == 2 and not (flags / "release").exists():
                time.sleep(0.05)
            return super().encode_images(images)

    _, stats = update_collection(
        sys.argv[1], encoder=Gated(), batch_size=2, chunk_size=2, workers=0
    )
    print("embedded", stats.embedded, "shards", stats.shards_written)
    """
)

HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from inquire._lock import writer_lock

    with writer_lock(sys.argv[1], "test folder"):
        Path(sys.argv[2], "held").touch()
        while not Path(sys.argv[2], "release").exists():
            time.sleep(0.05)
    """
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", COLUMNS="200", INQUIRE_LOG_LEVEL="WARNING")
    return env


def _wait_for(cond, what: str, procs: list[subprocess.Popen], limit: float = 120.0) -> None:
    end = time.monotonic() + limit
    while not cond():
        for p in procs:
            if p.poll() is not None:
                out, err = p.communicate()
                raise AssertionError(
                    f"process ended ({p.returncode}) while waiting for {what}: {out}\n{err}"
                )
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _stderr_file(tmp: Path, name: str) -> tuple[Path, io.BufferedWriter]:
    """A file for a process's output (log lines go to stdout, progress to stderr)."""
    path = tmp / f"{name}.out"
    return path, open(path, "wb")


def test_second_collection_update_waits_readers_keep_working(tmp_path: Path) -> None:
    home = Path(os.environ["INQUIRE_HOME"])
    photos = tmp_path / "photos"
    make_photo_folder(photos, n=4, seed=1)
    create_collection("walks", photos, "toy:colour", workers=0, index="none")
    make_photo_folder(photos / "new", n=6, seed=2)  # 6 new files: 3 chunks of 2
    flags = tmp_path / "flags"
    flags.mkdir()
    env = _env()
    env["INQUIRE_HOME"] = str(home)
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, "walks", str(flags)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    err_path, err_fh = _stderr_file(tmp_path, "second")
    second = None
    try:
        _wait_for(lambda: (flags / "call_2").exists(), "the writer's second chunk", [writer])
        # A reader during the update: works, and sees the first 4 photos at least.
        search = subprocess.run(
            [sys.executable, "-m", "inquire", "search", "walks", "red", "-k", "50", "--csv"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert search.returncode == 0, search.stderr
        found = pd.read_csv(io.StringIO(search.stdout))
        assert len(found) >= 4 and found["image_id"].is_unique
        # A second writer: waits (and says so) until the first is done.
        second = subprocess.Popen(
            [sys.executable, "-m", "inquire", "collection", "update", "walks", "--workers", "0"],
            env=env,
            stdout=err_fh,
            stderr=subprocess.STDOUT,
        )
        _wait_for(
            lambda: b"waiting" in err_path.read_bytes(), "the second writer to wait", [second]
        )
        assert writer.poll() is None and second.poll() is None
    finally:
        (flags / "release").touch()
        out, err = writer.communicate(timeout=300)
        if second is not None:
            second.wait(timeout=300)
        err_fh.close()
    assert writer.returncode == 0, err
    assert "embedded 6 shards [1, 2, 3]" in out
    assert second is not None and second.returncode == 0, err_path.read_text()
    message = " ".join(err_path.read_text().split())
    assert "collection 'walks' is being written by another process" in message
    assert "embedded 0," in message  # found everything done: nothing embedded twice
    coll = open_collection("walks")
    try:
        images = coll.images()
        assert len(images) == 10 and images["path"].is_unique
        locs = coll.conn.execute("SELECT shard, row FROM images WHERE status = 'ok'").fetchall()
        assert len(set(map(tuple, locs))) == 10  # no two files share an embedding row
        index = coll.index()
        assert len(index) == 10 and int(index.valid.sum()) == 10  # no row embedded twice
        assert sorted(index.store.shard_indices) == [0, 1, 2, 3]
    finally:
        coll.close()


@pytest.mark.slow  # two processes that each load torch and open_clip
def test_second_embed_into_one_folder_waits_then_embeds_nothing_twice(tmp_path: Path) -> None:
    pytest.importorskip("open_clip")
    from inquire.testing.embed_images import write_jpegs
    from inquire.testing.embed_models import make_tiny_open_clip

    model = make_tiny_open_clip(tmp_path / "model")
    images = tmp_path / "images"
    write_jpegs(images, 5)
    out = tmp_path / "emb"
    flags = tmp_path / "flags"
    flags.mkdir()
    env = _env()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out), str(flags)], env=env)
    cmd = [sys.executable, "-m", "inquire", "embed", "--model", model, "--images", str(images)]
    cmd += ["--out", str(out), "--workers", "0", "--shard-size", "2", "--batch-size", "2"]
    errs = [_stderr_file(tmp_path, f"embed{i}") for i in range(2)]
    procs: list[subprocess.Popen] = []
    try:
        _wait_for(lambda: (flags / "held").exists(), "the lock holder", [holder])
        procs = [
            subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT) for _, fh in errs
        ]
        for path, _ in errs:
            _wait_for(
                lambda p=path: b"waiting" in p.read_bytes(), "embed to wait", procs, limit=900
            )
    finally:
        (flags / "release").touch()
        holder.wait(timeout=60)
        for p in procs:
            p.wait(timeout=600)
        for _, fh in errs:
            fh.close()
    for p, (path, _) in zip(procs, errs, strict=True):
        assert p.returncode == 0, path.read_text()
    said = sorted(" ".join(path.read_text().split()) for path, _ in errs)
    assert all("is being written by another process" in s for s in said)
    # The two runs went one after the other: one embedded all 5 images, the other none.
    assert sorted("(5 images this run" in s for s in said) == [False, True], said
    assert sum("(0 images this run" in s for s in said) == 1, said
    from inquire.embed.store import EmbeddingStore

    store = EmbeddingStore(out)
    assert len(store) == 5 and store.shard_indices == [0, 1, 2]
    assert store.metadata["image_path"].is_unique
    assert np.isfinite(store.rows(np.arange(5))).all()


def test_lock_timeout_raises_busy_naming_the_holder(tmp_path: Path) -> None:
    from inquire.collection import update_collection
    from inquire.errors import BusyError

    photos = tmp_path / "photos"
    make_photo_folder(photos, n=2, seed=3)
    coll, _ = create_collection("c", photos, "toy:colour", workers=0, index="none")
    coll.close()
    flags = tmp_path / "flags"
    flags.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(coll.folder), str(flags)])
    try:
        _wait_for(lambda: (flags / "held").exists(), "the lock holder", [holder])
        with pytest.raises(BusyError, match=rf"process {holder.pid} on .* after 0.2 s"):
            update_collection("c", workers=0, lock_timeout=0.2)
    finally:
        (flags / "release").touch()
        holder.wait(timeout=60)
    _, stats = update_collection("c", workers=0, lock_timeout=5)  # free again
    assert stats.embedded == 0 and stats.unchanged == 2
