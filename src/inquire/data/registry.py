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

Pinned revision. INQUIRE-Rerank is fetched from one commit of the Hugging Face dataset,
``RERANK_REVISION``, through ``huggingface_hub`` (an artifact's ``hub`` field names the
repository, file and revision; its ``url`` is the hub's resolved-file URL
``https://huggingface.co/datasets/<id>/resolve/<revision>/<path>``): a later re-upload on
the dataset's ``main`` branch neither breaks nor silently changes the files. To move to a newer
upload, take the commit hash from the dataset's "Files and versions" history (or
``huggingface_hub.HfApi().dataset_info("evendrow/INQUIRE-Rerank").sha``), check the shard
names and counts of its ``data/`` folder against ``RERANK_SHARDS``, and set
``RERANK_REVISION`` to it. Cached copies of the old revision stay under their old path.
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

RERANK_DATASET = "evendrow/INQUIRE-Rerank"
# The dataset commit "Upload dataset" (September 2024) that wrote the current validation and
# test shards; the dataset's later commits (README edits) leave data/ unchanged.
RERANK_REVISION = "e19e265fd92542bc5f839a5777a39942b16c9c33"


def hf_dataset_file_url(dataset: str, revision: str, path: str) -> str:
    """The hub's resolved-file URL of ``path`` in ``dataset`` at ``revision``."""
    return f"https://huggingface.co/datasets/{dataset}/resolve/{revision}/{path}"


# INQUIRE-Rerank on the Hugging Face hub: split -> (our name, number of parquet shards,
# size of the shards as the hub lists them). Shards are named
# ``data/{split}-{i:05d}-of-{n:05d}.parquet``.
RERANK_SHARDS: dict[str, tuple[str, int, str]] = {
    "validation": ("val", 1, "362 MB"),
    "test": ("test", 4, "368-399 MB"),
}
# Queries per Rerank split and candidates per query (for checks on the loaded shards).
RERANK_QUERIES = {"val": 40, "test": 160}
RERANK_CANDIDATES = 100


@dataclass(frozen=True)
class HubFile:
    """A file of a Hugging Face hub repository at one revision (a full commit hash)."""

    repo_id: str
    filename: str
    revision: str
    repo_type: str = "dataset"


@dataclass(frozen=True)
class Artifact:
    """One downloadable file.

    ``size`` is in bytes and ``sha256`` a lowercase hex digest; ``None`` means not yet known
    (then the first download's values are recorded and enforced afterwards).
    ``approx_size`` is a human hint for listings. ``extract_member`` names the file inside a
    ``.tar.gz`` artifact that :func:`inquire.data.download.extract` unpacks.
    ``resumable`` marks the very large files whose interrupted downloads are resumed with
    HTTP ``Range`` requests. ``hub`` names the Hugging Face hub file of an artifact that is
    downloaded through ``huggingface_hub`` (into the Hugging Face cache).
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
    resumable: bool = False
    hub: HubFile | None = None

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
            filename = f"data/{split}-{i:05d}-of-{n_shards:05d}.parquet"
            rows.append(
                Artifact(
                    name=f"rerank-{short}-{i:05d}",
                    url=hf_dataset_file_url(RERANK_DATASET, RERANK_REVISION, filename),
                    hub=HubFile(RERANK_DATASET, filename, RERANK_REVISION),
                    resumable=True,  # ~400 MB: resumed when fetched from INQUIRE_BASE_URL
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
            # Over 4 MB (~33k rows of ~135 bytes); the exact size and sha256 are recorded on
            # the first download (see "Checksums" above).
            approx_size="~4.5 MB",
        ),
        Artifact(
            name="inat24-train-json",
            url="https://ml-inat-competition-datasets.s3.amazonaws.com/2024/train.json.tar.gz",
            license=INAT_LICENSE,
            description="iNat24 metadata: train.json (5M images), tar.gz",
            approx_size="438 MB",
            extract_member="train.json",
            resumable=True,
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
