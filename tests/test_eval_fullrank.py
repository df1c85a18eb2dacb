"""INQUIRE-Fullrank evaluation (inquire.eval.fullrank and `inquire eval fullrank`)."""

from __future__ import annotations

from pathlib import Path


def test_fullrank_joins_paths_with_the_stores_own_rule(tmp_path: Path) -> None:
    """Annotations and embedding metadata join on one path key everywhere (any image
    extension, leading ./, backslashes), as EmbeddingStore.ids_for_paths does."""
    from inquire.embed.store import EmbeddingStore
    from inquire.eval.fullrank import UNANNOTATED_ID_BASE, image_ids_by_path
    from inquire.testing.search_stores import random_unit, write_store

    root = write_store(
        tmp_path / "emb",
        random_unit(3, 8),
        paths=["train/a/1", "train/a/2", "train/b/3"],
        with_image_id=False,
    )
    store = EmbeddingStore(root)
    annotated = {101: "train/a/1.JPEG", 102: "./train\\a\\2.png"}
    ids = image_ids_by_path(store, annotated)
    assert ids.tolist() == [101, 102, UNANNOTATED_ID_BASE + 2]
    # The store's own lookup agrees with the full-rank join.
    by_store = store.ids_for_paths(list(annotated.values()))
    assert [int(ids[i]) for i in by_store] == [101, 102]


def test_eval_fullrank_passes_device_precision_batch_size_and_short_options(
    tmp_path: Path, monkeypatch
) -> None:
    """`inquire eval fullrank` loads its text model with the options given (they used to be
    dropped: the model always ran on cpu in fp32), and takes -m/-k/-o like other commands."""
    from typer.testing import CliRunner

    from inquire.cli import app
    from inquire.data.synthetic import make_synthetic_benchmark
    from inquire.embed import models

    bench = make_synthetic_benchmark(tmp_path / "b", n_images=1200, dim=16, n_val=2, n_test=4)
    seen: dict[str, object] = {}
    real = models.load_encoder

    def spy(model_id: str, **kwargs):
        seen.update(kwargs)
        return real(model_id, **kwargs)

    monkeypatch.setattr(models, "load_encoder", spy)
    out = tmp_path / "res"
    args = [
        "eval", "fullrank", "-m", f"precomputed:{bench.text_embeddings}",
        "--embeddings", str(bench.embeddings), "--queries", str(bench.queries_test),
        "--annotations", str(bench.annotations), "-k", "10", "-o", str(out),
        "--device", "cpu", "--precision", "fp16", "--batch-size", "7",
    ]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert seen == {"device": "cpu", "precision": "fp16", "batch_size": 7}
    assert (out / "per_query.csv").is_file()


def test_topk_cache_is_keyed_by_text_model_precision(tmp_path: Path) -> None:
    from inquire.data.queries import read_queries
    from inquire.data.synthetic import make_synthetic_benchmark
    from inquire.embed import EmbeddingStore, load_encoder
    from inquire.eval.fullrank import fullrank_topk

    bench = make_synthetic_benchmark(tmp_path / "b", n_images=1200, dim=16, n_val=2, n_test=4)
    queries = read_queries(bench.queries_test)
    store = EmbeddingStore(bench.embeddings)
    enc = load_encoder(f"precomputed:{bench.text_embeddings}")
    enc.revision = "pinned"
    calls: list[int] = []
    real = enc.encode_text
    enc.encode_text = lambda texts: calls.append(len(texts)) or real(texts)  # type: ignore[method-assign]
    fullrank_topk(enc, queries, store, 10)
    fullrank_topk(enc, queries, store, 10)  # cached
    enc.precision = "fp16"
    fullrank_topk(enc, queries, store, 10)  # another precision: searched again
    assert calls == [4, 4]


def test_topk_cache_keys_the_index_parameters_really_in_use(tmp_path: Path) -> None:
    """faiss keeps search parameters on the index: a later search without parameters still
    uses them, so the cache must not file its lists under "no parameters"."""
    from inquire.data.queries import read_queries
    from inquire.data.synthetic import make_synthetic_benchmark
    from inquire.embed import EmbeddingStore, load_encoder
    from inquire.eval.fullrank import fullrank_topk
    from inquire.index.ann import AnnIndex, build_index

    bench = make_synthetic_benchmark(tmp_path / "b", n_images=1200, dim=16, n_val=2, n_test=4)
    queries = read_queries(bench.queries_test)
    store = EmbeddingStore(bench.embeddings)
    build_index(store, "IVF8,Flat", name="ivf")
    enc = load_encoder(f"precomputed:{bench.text_embeddings}")
    enc.revision = "pinned"
    calls: list[int] = []
    real = enc.encode_text
    enc.encode_text = lambda texts: calls.append(len(texts)) or real(texts)  # type: ignore[method-assign]
    ix = AnnIndex.load(store, "ivf")
    fullrank_topk(enc, queries, store, 10, index=ix, index_params={"nprobe": 1})
    fullrank_topk(enc, queries, store, 10, index=ix)  # still nprobe=1: the same cached lists
    assert len(calls) == 1 and ix.params == {"nprobe": 1.0}
    fresh = AnnIndex.load(store, "ivf")  # faiss defaults: another searcher, searched again
    fullrank_topk(enc, queries, store, 10, index=fresh)
    assert len(calls) == 2
