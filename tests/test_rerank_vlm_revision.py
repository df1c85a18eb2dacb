"""A hub VLM's cache key names the snapshot's commit, not the branch it was loaded from."""

from __future__ import annotations

import logging
from pathlib import Path

from inquire.rerank.vlm import hub_revision

COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER = "fedcba9876543210fedcba9876543210fedcba98"


def _fake_cache(hub: Path, repo: str) -> None:
    """The HF cache layout: models--ORG--NAME/snapshots/<commit>/... and refs/<branch>."""
    repo_dir = hub / f"models--{repo.replace('/', '--')}"
    for commit in (COMMIT, OTHER):
        snap = repo_dir / "snapshots" / commit
        snap.mkdir(parents=True)
        (snap / "config.json").write_text("{}", encoding="utf-8")
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(COMMIT, encoding="utf-8")
    (repo_dir / "refs" / "dev").write_text(OTHER, encoding="utf-8")


def test_branch_resolves_to_the_cached_commit(tmp_path: Path) -> None:
    _fake_cache(tmp_path / "hub", "org/tiny-vlm")
    assert hub_revision("org/tiny-vlm", None, cache_dir=tmp_path / "hub") == COMMIT
    assert hub_revision("org/tiny-vlm", "main", cache_dir=tmp_path / "hub") == COMMIT
    assert hub_revision("org/tiny-vlm", "dev", cache_dir=tmp_path / "hub") == OTHER
    # a commit is already exact
    assert hub_revision("org/tiny-vlm", OTHER, cache_dir=tmp_path / "hub") == OTHER


def test_unresolvable_revision_falls_back_with_a_warning(tmp_path: Path, caplog) -> None:
    _fake_cache(tmp_path / "hub", "org/tiny-vlm")
    with caplog.at_level(logging.WARNING, logger="inquire.rerank.vlm"):
        assert hub_revision("org/absent", None, cache_dir=tmp_path / "hub") == "main"
        assert hub_revision("org/tiny-vlm", "v2", cache_dir=tmp_path / "hub") == "v2"
    assert sum("cannot resolve revision" in r.getMessage() for r in caplog.records) == 2
