"""Atomic writes (inquire._io)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_atomic_writes_get_the_permissions_of_a_plain_open(tmp_path: Path, mask: int) -> None:
    import os
    import stat

    from inquire._io import atomic_open, write_json

    old = os.umask(mask)
    try:
        with atomic_open(tmp_path / "a.csv", "w") as fh:
            fh.write("x\n")
        write_json(tmp_path / "b.json", {"x": 1})
        with open(tmp_path / "plain.txt", "w") as fh:
            fh.write("x\n")
    finally:
        os.umask(old)
    want = stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    assert want == 0o666 & ~mask
    for name in ("a.csv", "b.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == want, name


@pytest.mark.parametrize("name", ["a" * 250 + ".json", "é" * 125 + ".csv"])
def test_atomic_open_writes_a_file_whose_name_is_near_the_longest_allowed(
    tmp_path: Path, name: str
) -> None:
    """A 255-byte file name is valid; its temporary file's name (prefix and suffix added)
    must still fit, not fail with 'File name too long'."""
    from inquire._io import atomic_open

    assert len(name.encode()) >= 250
    with atomic_open(tmp_path / name) as fh:
        fh.write("x")
    assert [p.name for p in tmp_path.iterdir()] == [name]
