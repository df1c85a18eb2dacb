"""The upstream artifacts inquire can download, declared in one table.

Every artifact is a row: a short name, its upstream URL, the exact size and sha256 where they
are known, its license and a description. ``mirror_path`` is the URL without its scheme
(``host/path``), so a mirror built with ``wget --force-directories URL`` (or by copying the
download cache, which uses the same layout) serves every artifact once ``INQUIRE_BASE_URL``
points at its root: the artifact is then fetched from ``{INQUIRE_BASE_URL}/{mirror_path}``.

Checksums. The upstream files could not be fetched when this table was written, so most sizes
and checksums are ``None``. For such an artifact the size and sha256 of the first successful
download are recorded in the cache manifest (``downloads/manifest.json``) and every later use
is verified against that record. Fill in ``size``/``sha256`` here once they are known (the
manifest holds the values to copy) and every download is checked against them from the start.

Groups. Multi-file datasets (the INQUIRE-Rerank parquet shards) are groups of artifacts:
``fetch_dataset("rerank-test")`` returns the local paths of all of a group's shards.
The shard counts live in ``RERANK_SHARDS``: if the Hugging Face dataset is re-sharded,
correcting that one table renames every shard URL.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from inquire.errors import UnknownNameError

INQUIRE_LICENSE = "MIT (INQUIRE repository)"
INAT_LICENSE = "iNat terms (non-commercial)"
RERANK_LICENSE = "CC BY-NC 4.0"

_GITHUB_RAW = "https://raw.githubusercontent.com/inquire-benchmark/INQUIRE/main/data/inquire"
_HF_RERANK = "https://huggingface.co/datasets/evendrow/INQUIRE-Rerank/resolve/main/data"

# INQUIRE-Rerank on the Hugging Face hub: split -> (our name, number of parquet shards,
# approximate size of one shard). Shards are named ``{split}-{i:05d}-of-{n:05d}.parquet``.
RERANK_SHARDS: dict[str, tuple[str, int, str]] = {
    "validation": ("val", 1, "~360 MB"),
    "test": ("test", 4, "~380 MB"),
}
# Queries per Rerank split and candidates per query (for checks on the loaded shards).
RERANK_QUERIES = {"val": 40, "test": 160}
RERANK_CANDIDATES = 100


@dataclass(frozen=True)
class Artifact:
    """One downloadable file.

    ``size`` is in bytes and ``sha256`` a lowercase hex digest; ``None`` means not yet known
    (then the first download's values are recorded and enforced afterwards).
    ``approx_size`` is a human hint for listings. ``extract_member`` names the file inside a
    ``.tar.gz`` artifact that :func:`inquire.data.download.extract` unpacks.
    """

    name: str
    url: str
    license: str
    description: str
    size: int | None = None
    sha256: str | None = None
    approx_size: str = ""
    extract_member: str | None = None
    mirror_path: str = ""

    def __post_init__(self) -> None:
        if not self.mirror_path:
            object.__setattr__(self, "mirror_path", mirror_path_of(self.url))

    @property
    def filename(self) -> str:
        """The file's base name (the last part of its mirror path)."""
        return PurePosixPath(self.mirror_path).name


def mirror_path_of(url: str) -> str:
    """``https://host/a/b.csv`` -> ``host/a/b.csv``: where a mirror keeps the file."""
    parts = urlsplit(url)
    return f"{parts.netloc}{parts.path}".strip("/")


def _rerank_artifacts() -> list[Artifact]:
    rows = []
    for split, (short, n_shards, approx) in RERANK_SHARDS.items():
        for i in range(n_shards):
            rows.append(
                Artifact(
                    name=f"rerank-{short}-{i:05d}",
                    url=f"{_HF_RERANK}/{split}-{i:05d}-of-{n_shards:05d}.parquet",
                    license=RERANK_LICENSE,
                    description=(
                        f"INQUIRE-Rerank {split} shard {i + 1}/{n_shards} "
                        f"({RERANK_QUERIES[short]} queries x {RERANK_CANDIDATES} images in all)"
                    ),
                    approx_size=approx,
                )
            )
    return rows


ARTIFACTS: dict[str, Artifact] = {
    a.name: a
    for a in [
        Artifact(
            name="queries-val",
            url=f"{_GITHUB_RAW}/inquire_queries_val.csv",
            license=INQUIRE_LICENSE,
            description="INQUIRE validation queries (50)",
            approx_size="4 kB",
        ),
        Artifact(
            name="queries-test",
            url=f"{_GITHUB_RAW}/inquire_queries_test.csv",
            license=INQUIRE_LICENSE,
            description="INQUIRE test queries (200)",
            approx_size="17 kB",
        ),
        Artifact(
            name="annotations",
            url=f"{_GITHUB_RAW}/inquire_annotations.csv",
            license=INQUIRE_LICENSE,
            description="INQUIRE relevance labels, both splits (~33k pairs)",
            approx_size="~3 MB",
        ),
        Artifact(
            name="inat24-train-json",
            url="https://ml-inat-competition-datasets.s3.amazonaws.com/2024/train.json.tar.gz",
            license=INAT_LICENSE,
            description="iNat24 metadata: train.json (5M images), tar.gz",
            approx_size="438 MB",
            extract_member="train.json",
        ),
        *_rerank_artifacts(),
    ]
}

# Groups of artifacts fetched together (multi-shard datasets).
GROUPS: dict[str, tuple[str, ...]] = {
    f"rerank-{short}": tuple(a for a in ARTIFACTS if a.startswith(f"rerank-{short}-"))
    for _, (short, _, _) in RERANK_SHARDS.items()
}


def get_artifact(name: str) -> Artifact:
    """The registered artifact ``name``; unknown names raise with close matches."""
    try:
        return ARTIFACTS[name]
    except KeyError:
        raise UnknownNameError("artifact", name, [*ARTIFACTS, *GROUPS]) from None


def group_members(group: str) -> tuple[str, ...]:
    """Artifact names of ``group`` (a single artifact name is a group of one)."""
    if group in GROUPS:
        return GROUPS[group]
    if group in ARTIFACTS:
        return (group,)
    raise UnknownNameError("artifact or group", group, [*GROUPS, *ARTIFACTS])
