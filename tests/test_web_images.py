"""Images are served only from the configured roots; every attack gets a 4xx, never a file."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image

from inquire.errors import InputError
from inquire.web.config import WebConfig
from inquire.web.images import (
    BadImagePath,
    BadThumbSize,
    ImageNotFound,
    ImageRoots,
    NotAnImage,
    OutsideRoot,
    ThumbnailCache,
    check_relative,
)

SECRET = b"TOP-SECRET-CONTENT"


def _jpeg(path: Path, size: tuple[int, int] = (40, 20), color: str = "red", exif=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, color)
    if exif is not None:
        img.save(path, format="JPEG", exif=exif)
    else:
        img.save(path, format="JPEG")
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """root/ with real images, a text file, a fake .jpg and symlinks in and out; a secret
    folder beside the root holding a real JPEG and a text file."""
    base = tmp_path_factory.mktemp("imgworld")
    root, outside = base / "root", base / "outside"
    _jpeg(root / "train" / "a.jpg")
    _jpeg(root / "train" / "noext_target.jpg", color="blue")
    (root / "notes.txt").write_text("not an image")
    (root / "fake.jpg").write_bytes(b"this is text pretending to be a jpeg")
    outside.mkdir()
    (outside / "secret.txt").write_bytes(SECRET)
    _jpeg(outside / "secret.jpg", color="green")
    (root / "escape.jpg").symlink_to(outside / "secret.jpg")
    (root / "escape_dir").symlink_to(outside, target_is_directory=True)
    (root / "inside_link.jpg").symlink_to(root / "train" / "a.jpg")
    return {"base": base, "root": root, "outside": outside}


@pytest.fixture(scope="module")
def roots(world: dict[str, Path]) -> ImageRoots:
    return ImageRoots(
        [world["root"]],
        {
            1: "train/a.jpg",
            2: "train/noext_target",
            3: "escape.jpg",
            4: "../outside/secret.jpg",
            5: "notes.txt",
            6: "fake.jpg",
        },
    )


# --- the resolver on its own ---------------------------------------------------------------
@pytest.mark.parametrize(
    "rel",
    [
        "../outside/secret.jpg",
        "train/../../outside/secret.jpg",
        "/etc/passwd",
        "",
        "a//b.jpg",
        "./train/a.jpg",
        "train\\a.jpg",
        "train/a.jpg\x00.png",
        "C:/Windows/win.ini",
        "..",
    ],
)
def test_check_relative_rejects_unsafe_paths(rel: str) -> None:
    with pytest.raises(BadImagePath):
        check_relative(rel)


def test_resolve_finds_images_with_and_without_suffix(roots: ImageRoots, world) -> None:
    assert roots.resolve_id(1) == (world["root"] / "train" / "a.jpg").resolve()
    assert roots.resolve_id(2) == (world["root"] / "train" / "noext_target.jpg").resolve()
    # A symlink that stays inside the root is followed.
    assert roots.resolve("inside_link.jpg") == (world["root"] / "train" / "a.jpg").resolve()


def test_resolve_refuses_symlinks_out_of_the_root(roots: ImageRoots) -> None:
    with pytest.raises(OutsideRoot):
        roots.resolve_id(3)
    with pytest.raises(OutsideRoot):
        roots.resolve("escape_dir/secret.jpg")


def test_resolve_refuses_traversal_unknown_and_non_images(roots: ImageRoots) -> None:
    with pytest.raises(BadImagePath):
        roots.resolve_id(4)
    with pytest.raises(ImageNotFound, match="image id 999"):
        roots.resolve_id(999)
    with pytest.raises(ImageNotFound):
        roots.resolve("train/missing.jpg")
    with pytest.raises(NotAnImage):
        roots.resolve_id(5)
    with pytest.raises(ImageNotFound, match="root 3"):
        roots.resolve("train/a.jpg", root_index=3)


def test_root_that_is_not_a_folder_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a folder"):
        ImageRoots([tmp_path / "nope"])


def test_thumbnail_is_exif_transposed_cached_and_keyed_by_mtime(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    src = _jpeg(tmp_path / "img" / "rot.jpg", size=(80, 40), exif=exif)
    cache = ThumbnailCache(tmp_path / "thumbs")
    t1 = cache.get(src, 32)
    with Image.open(t1) as im:
        assert im.size == (16, 32)  # 80x40 landscape shown upright as portrait
    assert cache.get(src, 32) == t1  # the second request reuses the file
    mtime = t1.stat().st_mtime_ns
    assert cache.get(src, 32).stat().st_mtime_ns == mtime
    assert cache.get(src, 64) != t1  # size is part of the key
    _jpeg(src, size=(50, 50))
    os.utime(src, ns=(src.stat().st_atime_ns, src.stat().st_mtime_ns + 10**9))
    t2 = cache.get(src, 32)
    assert t2 != t1
    with Image.open(t2) as im:
        assert im.size == (32, 32)
    leftovers = [p for p in (tmp_path / "thumbs").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


@pytest.mark.parametrize("size", [0, 15, 1025, 100_000, -5])
def test_absurd_thumbnail_sizes_are_refused(tmp_path: Path, size: int) -> None:
    src = _jpeg(tmp_path / "a.jpg")
    with pytest.raises(BadThumbSize, match=str(size)):
        ThumbnailCache(tmp_path / "thumbs").get(src, size)


def test_thumbnail_of_a_fake_jpeg_is_not_an_image(world) -> None:
    with pytest.raises(NotAnImage):
        ThumbnailCache(world["base"] / "thumbs").get(world["root"] / "fake.jpg", 64)


# --- over HTTP, through uvicorn (its own path decoding) -------------------------------------
@pytest.fixture(scope="module")
def server(world: dict[str, Path], roots: ImageRoots) -> Iterator[str]:
    from inquire.web.app import create_app
    from inquire.web.server import BackgroundServer

    app = create_app(WebConfig(image_roots=[world["root"]], thumb_cache=world["base"] / "th"))
    app.state.inquire.catalog.images = roots  # the id table of the resolver tests above
    with BackgroundServer(app) as srv:
        yield f"{srv.host}:{srv.port}"


def _raw_get(hostport: str, target: str) -> tuple[int, bytes]:
    """Send ``GET target`` byte for byte (no client-side normalisation of '..' or '%2e')."""
    host, port = hostport.split(":")
    with socket.create_connection((host, int(port)), timeout=120) as s:
        head = f"GET {target} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n"
        s.sendall(head.encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_http_serves_images_from_the_root(server: str) -> None:
    status, body = _raw_get(server, "/files/0/train/a.jpg")
    assert status == 200 and body.startswith(b"\xff\xd8")
    status, body = _raw_get(server, "/images/2?size=32")
    assert status == 200 and body.startswith(b"\xff\xd8")
    with Image.open(__import__("io").BytesIO(body)) as im:
        assert max(im.size) <= 32


@pytest.mark.parametrize(
    "target",
    [
        "/files/0/../outside/secret.txt",
        "/files/0/../../outside/secret.jpg",
        "/files/0/%2e%2e/outside/secret.jpg",
        "/files/0/%2E%2E%2Foutside%2Fsecret.jpg",
        "/files/0/..%2f..%2foutside%2fsecret.txt",
        "/files/0/train/..%2f..%2f..%2foutside/secret.jpg",
        "/files/0/%2Fetc%2Fpasswd",
        "/files/0//etc/passwd",
        "/files/0/train%5c..%5c..%5coutside%5csecret.jpg",
        "/files/0/train/a.jpg%00.txt",
        "/files/0/%252e%252e/outside/secret.jpg",
        "/files/0/escape.jpg",
        "/files/0/escape_dir/secret.jpg",
        "/files/0/escape_dir/secret.txt",
        "/files/0/notes.txt",
        "/files/0/fake.jpg",
        "/files/0/fake.jpg?size=64",
        "/files/1/train/a.jpg",
        "/files/-1/train/a.jpg",
        "/files/x/train/a.jpg",
        "/images/3",
        "/images/3?size=64",
        "/images/4",
        "/images/5",
        "/images/999",
        "/images/-1",
        "/images/abc",
        "/images/1?size=0",
        "/images/1?size=99999999",
        "/images/1?size=-3",
        "/images/1?size=big",
    ],
)
def test_http_attacks_get_4xx_and_never_the_file(server: str, target: str, world) -> None:
    status, body = _raw_get(server, target)
    assert 400 <= status < 500, (target, status)
    assert SECRET not in body
    assert not body.startswith(b"\xff\xd8")  # no JPEG bytes at all
    assert str(world["base"]).encode() not in body  # errors never reveal server paths


def test_http_error_statuses_are_specific(server: str) -> None:
    assert _raw_get(server, "/files/0/%2e%2e/outside/secret.jpg")[0] == 400
    assert _raw_get(server, "/files/0/escape.jpg")[0] == 403
    assert _raw_get(server, "/images/999")[0] == 404
    assert _raw_get(server, "/files/0/notes.txt")[0] == 415
    assert _raw_get(server, "/images/1?size=99999")[0] == 422


# --- thumbnail sizes and the cache's bound ---------------------------------------------------
def test_every_size_of_one_photo_makes_at_most_one_file_per_snapped_size(tmp_path: Path) -> None:
    """A page asking for each of 16..1024 px (an <img> loop on a foreign site) makes no more
    files than there are snapped sizes, and each answer is no smaller than asked."""
    from inquire.web.config import THUMB_SIZES
    from inquire.web.images import snap_thumb_size

    src = _jpeg(tmp_path / "img" / "big.jpg", size=(1200, 900))
    cache = ThumbnailCache(tmp_path / "thumbs")
    for size in range(16, 1025, 4):
        want = snap_thumb_size(size)
        assert want >= size and want in THUMB_SIZES
        assert want == min(s for s in THUMB_SIZES if s >= size)
        with Image.open(cache.get(src, size)) as im:
            assert max(im.size) == want
    files = list((tmp_path / "thumbs").rglob("*.jpg"))
    assert len(files) == len(THUMB_SIZES)
    assert cache.total_bytes() == sum(p.stat().st_size for p in files)


def test_thumbnail_cache_one_past_its_cap_drops_the_least_recently_used(tmp_path: Path) -> None:
    srcs = [
        _jpeg(tmp_path / "img" / f"{i}.jpg", size=(64, 64), color=c)
        for i, c in enumerate(["red", "green", "blue", "white", "black"])
    ]
    probe = ThumbnailCache(tmp_path / "probe")
    sizes = [probe.get(s, 64).stat().st_size for s in srcs]
    cap = sum(sizes[:3])  # exactly three thumbnails fit
    cache = ThumbnailCache(tmp_path / "thumbs", max_bytes=cap)
    t = [cache.get(s, 64) for s in srcs[:3]]
    assert all(p.is_file() for p in t) and cache.total_bytes() == cap
    cache.get(srcs[0], 64)  # used again: now the most recent
    t3 = cache.get(srcs[3], 64)  # one past the cap
    assert t3.is_file() and t[0].is_file() and not t[1].exists()
    assert cache.total_bytes() <= cap
    on_disk = sum(p.stat().st_size for p in (tmp_path / "thumbs").rglob("*.jpg"))
    assert on_disk == cache.total_bytes()
    # A new process over the same folder counts what is there and keeps the bound.
    again = ThumbnailCache(tmp_path / "thumbs", max_bytes=cap)
    assert again.total_bytes() == on_disk
    again.get(srcs[4], 64)
    assert sum(p.stat().st_size for p in (tmp_path / "thumbs").rglob("*.jpg")) <= cap
    with pytest.raises(InputError, match="positive"):
        ThumbnailCache(tmp_path / "x", max_bytes=0)


def test_thumbnails_read_while_others_delete_them_to_make_room(tmp_path: Path) -> None:
    """Two caches over one folder (two servers) with room for a few thumbnails, 16 threads
    asking for 40 photos at every size: each one deletes the other's files to make room,
    yet every read gives a whole JPEG of its snapped size (a file deleted between making it
    and reading it is made again), as made alone by a fresh cache."""
    import io
    import random
    from concurrent.futures import ThreadPoolExecutor

    from inquire.web.config import THUMB_SIZES

    colors = ["red", "green", "blue", "white", "black", "yellow", "cyan", "magenta"]
    srcs = [
        _jpeg(tmp_path / "img" / f"{i}.jpg", size=(300 + i, 200), color=colors[i % 8])
        for i in range(40)
    ]
    caches = [ThumbnailCache(tmp_path / "shared", max_bytes=20_000) for _ in range(2)]

    def job(i: int) -> tuple[int, int, bytes]:
        rng = random.Random(i)
        j, size = rng.randrange(len(srcs)), rng.choice(THUMB_SIZES)
        return j, size, caches[i % 2].read(srcs[j], size)

    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(job, range(1500)))
    alone = ThumbnailCache(tmp_path / "alone")
    for j, size, data in got[:200]:
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == "JPEG" and max(im.size) == min(size, 300 + j)
        assert data == alone.read(srcs[j], size)
    for c in caches:  # each keeps its own bound; together at most twice the cap
        assert c.total_bytes() <= 20_000
    assert sum(p.stat().st_size for p in (tmp_path / "shared").rglob("*.jpg")) <= 40_000


def test_thumbnail_made_again_by_another_thread_while_a_read_fails_stays_counted(
    tmp_path: Path,
) -> None:
    """One interleaving of the test above, in order: a read finds its thumbnail deleted (another
    server made room), another thread of the same cache makes it again and counts it, and
    only then does the failed read take the lock to forget the file. It must not forget the
    new file: counted by no cache, it would never be deleted, and the folder would grow past
    the caches' bounds."""
    import threading

    src = _jpeg(tmp_path / "img" / "a.jpg", size=(300, 200))
    cache = ThumbnailCache(tmp_path / "thumbs", max_bytes=20_000)

    class HookedLock:
        """The cache's lock, running ``hook`` (once) just before it is next taken."""

        def __init__(self) -> None:
            self.lock = threading.Lock()
            self.hook: Callable[[], object] | None = None

        def __enter__(self) -> None:
            hook, self.hook = self.hook, None
            if hook is not None:
                hook()
            self.lock.acquire()

        def __exit__(self, *exc: object) -> None:
            self.lock.release()

    lock = HookedLock()
    cache._lock = lock  # type: ignore[assignment]
    gets = []

    def get() -> Path:
        target = cache.get(src, 64)
        if not gets:  # the first time: deleted before it is read, made again once that fails
            target.unlink()
            lock.hook = lambda: cache.get(src, 64)
        gets.append(target)
        return target

    data = cache._read(get)
    assert len(gets) == 2 and gets[0] == gets[1] and lock.hook is None
    assert data == gets[0].read_bytes()
    assert cache.total_bytes() == gets[0].stat().st_size  # still counted, so still bounded


def test_http_thumbnail_sizes_are_snapped(server: str, world: dict[str, Path]) -> None:
    from inquire.web.config import THUMB_SIZES

    before = set((world["base"] / "th").rglob("*.jpg"))
    for size in range(16, 1025, 5):  # ~200 sizes of one photo
        status, body = _raw_get(server, f"/images/2?size={size}")
        assert status == 200 and body.startswith(b"\xff\xd8")
    made = set((world["base"] / "th").rglob("*.jpg")) - before
    assert len(made) <= len(THUMB_SIZES)
