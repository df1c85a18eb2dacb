"""A small synthetic benchmark in INQUIRE's formats, generated in code.

Everything is random but structured so that retrieval is neither trivial nor hopeless: each
query has a direction in embedding space; its relevant images lie near that direction with a
per-query difficulty, some near-miss distractors lie close to it too, and the query's text
embedding is the direction plus noise.

Like real expert queries ("a heron swallowing a fish": many poses, backgrounds, fish), the
relevant images of a query are not one blob around the text: they form ``modes`` (1 to
``modes`` per query) whose directions lean away from the query direction by a per-query
angle (cosine 0.55-0.8), while the near misses sit on the query direction itself. The text
alone therefore confuses relevant images with near misses; examples of what is relevant tell
them apart (what relevance feedback can learn). ``modes=1`` gives the older
single-blob structure.

Layout written to ``out_dir``::

    SYNTHETIC.txt                       says that these data are synthetic
    inquire_queries_val.csv             INQUIRE's query format (with its unnamed index column)
    inquire_queries_test.csv
    inquire_annotations.csv             query_id, image_id, image_path
    embeddings/img_emb/img_emb_{i}.npy  float16, L2-normalised (clip-retrieval layout)
    embeddings/metadata/metadata_{i}.parquet   image_path (no .jpg, as INQUIRE's), image_id
    text_embeddings.parquet             query_text, embedding (float32 list), model_id
    images/train/synthetic_{id}.jpg     small JPEGs, only with ``write_images=True``

Deterministic: the same arguments (``seed`` included) write the same files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from inquire._io import atomic_open, atomic_path
from inquire.embed.folder import shard_numbers, write_shard
from inquire.embed.precomputed import write_text_embeddings
from inquire.errors import InputError

SYNTHETIC_MODEL_ID = "synthetic"

# (supercategory, category, iconic_group, text template) rows in INQUIRE's taxonomy.
_TEMPLATES = [
    ("Appearance", "Sex identification", "Birds", "a male {taxon} in breeding plumage"),
    ("Appearance", "Health and Disease", "Mammals", "a {taxon} with mange"),
    ("Appearance", "Life Cycle and Development", "Insects", "a {taxon} caterpillar"),
    ("Appearance", "Tracking and Identification", "Reptiles", "a {taxon} with a radio tag"),
    ("Behavior", "Feeding and Hydration", "Birds", "a {taxon} carrying food"),
    ("Behavior", "Defensive and Survival Behaviors", "Mammals", "a {taxon} standing alert"),
    ("Behavior", "Cooperative and Social Behaviors", "Amphibians", "{taxon}s in amplexus"),
    ("Behavior", "Reproductive Behavior", "Fish", "a {taxon} guarding eggs"),
    ("Context", "Human Impact", "Mammals", "a {taxon} crossing a road"),
    ("Context", "Habitat and Environment", "Plants", "a {taxon} growing on a rock face"),
    ("Context", "Interactions with Other Species", "Fungi", "a {taxon} on a dead tree"),
    ("Species", "Species Identification", "Arachnids", "a {taxon} on its web"),
    ("Species", "Species Identification", "Mollusks", "a {taxon} in a tide pool"),
]
# Taxa per iconic group, so that a query reads like one an ecologist could ask.
_TAXA = {
    "Birds": ["meadowlark", "puffin", "pheasant", "grouse", "heron", "swallow"],
    "Mammals": ["mongoose", "fox", "marmot", "coyote", "raccoon", "deer"],
    "Insects": ["swallowtail", "darner", "monarch", "hawk moth", "sphinx moth"],
    "Reptiles": ["tortoise", "gecko", "box turtle", "rattlesnake"],
    "Amphibians": ["toad", "wood frog", "tree frog", "spring peeper"],
    "Fish": ["cichlid", "stickleback", "bluegill", "trout"],
    "Plants": ["saxifrage", "fern", "stonecrop", "columbine"],
    "Fungi": ["bracket fungus", "turkey tail", "oyster mushroom", "shelf fungus"],
    "Arachnids": ["orb weaver", "garden spider", "jumping spider"],
    "Mollusks": ["sea slug", "limpet", "periwinkle", "sea hare"],
}


@dataclass(frozen=True)
class SyntheticBenchmark:
    """Paths of a generated synthetic benchmark."""

    root: Path
    queries_val: Path
    queries_test: Path
    annotations: Path
    embeddings: Path
    text_embeddings: Path
    images: Path | None  # root of the image tree (paths in the annotations are relative to it)


def make_synthetic_benchmark(
    out_dir: str | os.PathLike[str],
    n_images: int = 10000,
    dim: int = 128,
    n_val: int = 10,
    n_test: int = 40,
    n_shards: int = 2,
    seed: int = 0,
    write_images: bool = False,
    image_size: int = 64,
    modes: int = 3,
) -> SyntheticBenchmark:
    """Write a synthetic benchmark to ``out_dir`` (see module docs); return its paths."""
    rng = np.random.default_rng(seed)
    # The modes draw from their own stream, so every other random number stays the same.
    mode_rng = np.random.default_rng([seed, 7])
    if modes < 1:
        raise InputError(f"modes must be at least 1, got {modes}")
    if n_images < 200 * (n_val + n_test):
        raise InputError(
            f"n_images={n_images} is too small for {n_val + n_test} queries; use at least "
            f"{200 * (n_val + n_test)} (each query takes up to 180 relevant and near-miss images)"
        )
    root = Path(out_dir)
    check_synthetic_target(root)
    root.mkdir(parents=True, exist_ok=True)
    n_queries = n_val + n_test

    # Queries: INQUIRE-style ids (not contiguous), texts and categories.
    query_ids = np.sort(rng.choice(np.arange(1, 10 * n_queries + 1), n_queries, replace=False))
    rows = []
    for i, qid in enumerate(query_ids):
        sup, cat, group, template = _TEMPLATES[i % len(_TEMPLATES)]
        taxa = _TAXA[group]
        text = template.format(taxon=taxa[(i // len(_TEMPLATES)) % len(taxa)])
        text += f" (synthetic {qid})"
        rows.append((int(qid), text, sup, cat, group))
    queries = pd.DataFrame(
        rows, columns=["query_id", "query_text", "supercategory", "category", "iconic_group"]
    )
    order = rng.permutation(n_queries)
    val, test = queries.iloc[order[:n_val]], queries.iloc[order[n_val:]]

    # Embeddings: background noise, then each query's relevant and near-miss images.
    directions = rng.standard_normal((n_queries, dim)).astype(np.float32)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    emb = rng.standard_normal((n_images, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    image_ids = rng.permutation(np.arange(1_000_000, 1_000_000 + 3 * n_images))[:n_images]
    free = rng.permutation(n_images)
    pos = 0
    pairs: list[tuple[int, int]] = []
    owner = np.full(n_images, -1, np.int64)  # query index an image was placed near, or -1
    for qi, qid in enumerate(query_ids):
        n_rel = int(rng.integers(5, 80))
        n_near = int(rng.integers(20, 100))
        strength = float(rng.uniform(0.25, 0.9))  # per-query difficulty
        near = float(rng.uniform(0.6, 1.0))  # how close the near misses come
        rel_rows = free[pos : pos + n_rel]
        near_rows = free[pos + n_rel : pos + n_rel + n_near]
        pos += n_rel + n_near
        emb[rel_rows] += strength * _mode_shifts(directions[qi], n_rel, modes, mode_rng)
        emb[near_rows] += near * strength * directions[qi]
        pairs.extend((int(qid), int(image_ids[r])) for r in rel_rows)
        owner[rel_rows] = qi
        owner[near_rows] = qi
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    text = directions + 0.25 * rng.standard_normal(directions.shape).astype(np.float32) / np.sqrt(
        dim
    )
    text /= np.linalg.norm(text, axis=1, keepdims=True)

    paths = [f"train/synthetic_{int(i)}" for i in image_ids]  # no .jpg, as INQUIRE's metadata
    emb_root = root / "embeddings"
    bounds = np.linspace(0, n_images, n_shards + 1).astype(int)
    for s in range(n_shards):
        lo, hi = bounds[s], bounds[s + 1]
        write_shard(emb_root, s, emb[lo:hi], paths[lo:hi], image_ids[lo:hi])

    bench = _layout(root, write_images)
    if bench.images is not None:
        _write_images(bench.images, paths, owner, image_size, rng)
    for frame, path in ((val, bench.queries_val), (test, bench.queries_test)):
        with atomic_open(path, "w", encoding="utf-8", newline="") as fh:
            frame.to_csv(fh, index=True)  # upstream files carry the unnamed index column
    ann = pd.DataFrame(pairs, columns=["query_id", "image_id"])
    path_of = dict(zip(image_ids.tolist(), paths, strict=True))
    ann["image_path"] = [path_of[i] + ".jpg" for i in ann["image_id"]]
    with atomic_open(bench.annotations, "w", encoding="utf-8", newline="") as fh:
        ann.to_csv(fh, index=False)
    write_text_embeddings(
        bench.text_embeddings, queries["query_text"].tolist(), text, SYNTHETIC_MODEL_ID
    )
    with atomic_open(root / "SYNTHETIC.txt", "w", encoding="utf-8") as fh:
        fh.write(
            "These data are SYNTHETIC: random embeddings and made-up queries in INQUIRE's file\n"
            f"formats (seed={seed}, n_images={n_images}, dim={dim}). Their metrics say nothing\n"
            "about any real model.\n"
        )
    return bench


def _mode_shifts(direction: np.ndarray, n: int, modes: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, d)`` unit directions of ``n`` relevant images: each in one of 1..``modes``
    modes, a mode leaning away from ``direction`` (unit) with cosine 0.55-0.8."""
    if modes == 1:
        return np.broadcast_to(direction, (n, len(direction)))
    k = int(rng.integers(1, modes + 1))
    cos = float(rng.uniform(0.55, 0.8))
    side = rng.standard_normal((k, len(direction))).astype(np.float32)
    side -= np.outer(side @ direction, direction)  # orthogonal to the query direction
    side /= np.linalg.norm(side, axis=1, keepdims=True)
    dirs = cos * direction + np.sqrt(1.0 - cos * cos) * side
    return dirs[rng.integers(0, k, n)]


def _layout(root: Path, images: bool) -> SyntheticBenchmark:
    return SyntheticBenchmark(
        root=root,
        queries_val=root / "inquire_queries_val.csv",
        queries_test=root / "inquire_queries_test.csv",
        annotations=root / "inquire_annotations.csv",
        embeddings=root / "embeddings",
        text_embeddings=root / "text_embeddings.parquet",
        images=root / "images" if images else None,
    )


def _layout_names() -> set[str]:
    """The names a synthetic benchmark writes at the top of its folder."""
    bench = _layout(Path("."), True)
    names = {
        Path(p).name
        for p in (bench.queries_val, bench.queries_test, bench.annotations, bench.text_embeddings)
    }
    return names | {"embeddings", "images", "SYNTHETIC.txt"}


def check_synthetic_target(root: Path) -> None:
    """Refuse to write a benchmark into a folder that holds anything else (a photo folder, a
    project): only a missing or empty folder, or one holding (part of) a synthetic benchmark's
    own files (a run interrupted before ``SYNTHETIC.txt``), is written to."""
    if not root.exists():
        return
    if not root.is_dir():
        raise InputError(
            f"{str(root)!r} is a file; a synthetic benchmark is written to a folder: pass a "
            "new folder name"
        )
    own = _layout_names()
    # Temporary files of an interrupted atomic write (".NAME.XXXX.tmp") are the benchmark's.
    foreign = sorted(
        p.name
        for p in root.iterdir()
        if p.name not in own
        and not (p.name.endswith(".tmp") and any(p.name.startswith(f".{n}.") for n in own))
    )
    if foreign:
        shown = ", ".join(repr(n) for n in foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise InputError(
            f"{str(root)!r} is not empty and not a synthetic benchmark (it holds {shown}); "
            "nothing was written there: pass a new or empty folder for the synthetic benchmark"
        )


def find_synthetic_benchmark(root: str | os.PathLike[str]) -> SyntheticBenchmark | None:
    """The benchmark already written to ``root``, or None when ``root`` does not hold a
    complete one (``SYNTHETIC.txt``, written last, and every file of the layout)."""
    r = Path(root)
    bench = _layout(r, (r / "images").is_dir())
    files = [r / "SYNTHETIC.txt", bench.queries_val, bench.queries_test, bench.annotations]
    files.append(bench.text_embeddings)
    if not all(f.is_file() for f in files):
        return None
    if not shard_numbers(bench.embeddings):
        return None
    return bench


def _write_images(
    root: Path, paths: list[str], owner: np.ndarray, size: int, rng: np.random.Generator
) -> None:
    """One small JPEG per image: a colour per owning query, random shapes on top."""
    from PIL import Image, ImageDraw

    palette = rng.integers(40, 216, size=(int(owner.max()) + 2, 3))
    for rel_path, who in zip(paths, owner, strict=True):
        target = root / f"{rel_path}.jpg"
        # Draw every image's random numbers even when it exists, so a resumed run writes
        # the same pictures as a fresh one.
        base = tuple(int(c) for c in (palette[who] if who >= 0 else rng.integers(90, 160, 3)))
        shapes = []
        for _ in range(3):
            x0, y0 = (int(v) for v in rng.integers(0, size - 8, 2))
            x1, y1 = x0 + int(rng.integers(6, size // 2)), y0 + int(rng.integers(6, size // 2))
            fill = tuple(int(v) for v in rng.integers(0, 256, 3))
            shapes.append(((x0, y0, x1, y1), fill))
        if target.is_file():
            continue
        img = Image.new("RGB", (size, size), base)
        draw = ImageDraw.Draw(img)
        for box, fill in shapes:
            draw.ellipse(box, fill=fill)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            img.save(tmp, format="JPEG", quality=85)
