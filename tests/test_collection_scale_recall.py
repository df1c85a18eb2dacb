"""The recall `collection info` shows is measured: of the router, and of the IVF route alone.

A collection below the exact threshold answers every search exactly (recall 1 by
construction); what its index would do is measured by forcing the IVF route at the
configured nprobe. nprobe=1 over 8 lists of about 250 photos loses part of the true top 100;
probing every list with every row rescored (k x rescore >= rows) loses nothing.
"""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from inquire.cli import app
from inquire.collection import create_collection
from inquire.collection.ann import scale_dir
from inquire.collection.scale import index_collection
from inquire.index import ivfpq
from inquire.testing.collection_encoder import PixelHashEncoder, make_photo_folder

pytest.importorskip("faiss")

N = 2000


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("recall")
    make_photo_folder(root / "p", n=N, seed=5)
    return root


def test_ivf_route_recall_is_measured_below_the_exact_threshold(photos):
    enc = PixelHashEncoder(dim=16)
    coll, _ = create_collection("r", photos / "p", enc.model_id, encoder=enc, index="none")
    # Default exact_below (50,000) > 2,000 photos: the router answers exactly.
    opts = {"nlist": 8, "pq_m": 4, "partition_rows": 800, "nprobe": 1, "rescore": 2}
    info = index_collection("r", options=opts)
    assert info is not None and info["rows"] == N
    rec = info["recall"]
    assert rec["unfiltered_route"] == "exact" and rec["unfiltered"] == 1.0
    assert rec["nprobe"] == 1 and rec["rows"] == N and rec["k"] == 100
    assert rec["unfiltered_ivf"] < 0.9, rec  # nprobe=1 misses part of the top 100
    # The stored figure is the one measured against exact search, recomputed here.
    cindex = coll.index()
    scale = cindex.ann
    assert isinstance(scale, ivfpq.ScaleIndex)
    again = ivfpq.measure_recall(scale, cindex.valid, cindex.image_id)
    assert again == rec
    assert ivfpq.read_manifest(scale_dir(coll)).recall == rec  # in the manifest
    res = CliRunner().invoke(app, ["collection", "info", "r"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert f"unfiltered 1.000 (exact route; IVF route alone {rec['unfiltered_ivf']:.3f}" in text
    assert "at nprobe 1" in text and f"over {N:,} rows" in text

    # Every list probed, every row rescored (100 x 20 >= 2000): the IVF route loses nothing.
    info = index_collection("r", options={"nprobe": 8, "rescore": 20})
    assert info is not None
    rec = info["recall"]
    assert rec["unfiltered_ivf"] == 1.0 and rec["filter_1pct_ivf"] == 1.0, rec
    assert rec["nprobe"] == 8
    coll.close()


def test_ivf_route_recall_when_the_router_takes_it(photos):
    """exact_below 0: a search takes the IVF route, so the two figures are one."""
    enc = PixelHashEncoder(dim=16)
    coll, _ = create_collection("r", photos / "p", enc.model_id, encoder=enc, index="none")
    opts = {"nlist": 8, "pq_m": 4, "partition_rows": 800, "nprobe": 1, "exact_below": 0}
    rec = index_collection("r", options=opts)["recall"]  # type: ignore[index]
    assert rec["unfiltered_route"] == "ivf"
    assert rec["unfiltered"] == rec["unfiltered_ivf"] < 0.9
    # 20 of 2,000 rows under the 1% filter: fewer than k, answered exactly whatever the route.
    assert rec["filter_1pct"] == 1.0
    res = CliRunner().invoke(app, ["collection", "info", "r"])
    assert f"unfiltered {rec['unfiltered']:.3f} (IVF route, nprobe 1)" in " ".join(
        res.output.split()
    )
    assert np.isfinite(rec["unfiltered"])
    coll.close()
