"""Local VLM rerankers: tiny random-weight checkpoints of each family, loaded from disk like a
downloaded model, scored in batches and checked against the model's own one-step generate."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from inquire.errors import InputError, UnknownNameError  # noqa: E402
from inquire.rerank import load_reranker  # noqa: E402
from inquire.rerank.vlm import (  # noqa: E402
    FAMILIES,
    VLMFamily,
    VLMReranker,
    local_fingerprint,
    parse_vlm_id,
    yes_probability,
)
from inquire.testing.rerank_tiny_vlm import BUILDERS, build_tiny_vlm  # noqa: E402

QUERY = "a heron carrying food"


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(1)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    # different sizes: LLaVA-1.6's tiling then gives different numbers of image tokens
    shapes = [(40, 48), (64, 32), (32, 70)]
    return [Image.fromarray(rng.integers(0, 255, (*s, 3), dtype=np.uint8)) for s in shapes]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_vlms")
    return {fam: build_tiny_vlm(fam, root / fam) for fam in BUILDERS}


def test_every_family_row_has_a_tiny_builder() -> None:
    assert set(FAMILIES) == set(BUILDERS)


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_batched_score_equals_one_step_generate(family: str, model_dirs: dict[str, Path]) -> None:
    reranker = load_reranker(f"vlm:{family}/{model_dirs[family]}", batch_size=2)
    assert isinstance(reranker, VLMReranker)
    images = _images()
    scores = reranker.score(QUERY, images)
    assert scores.shape == (3,) and scores.dtype == np.float64
    assert np.all((scores > 0) & (scores < 1))
    reference = np.array([reranker.generate_score(QUERY, im) for im in images])
    np.testing.assert_allclose(scores, reference, atol=1e-5, rtol=0)
    # batching does not change scores
    one_batch = VLMReranker(FAMILIES[family], str(model_dirs[family]), batch_size=8)
    np.testing.assert_allclose(one_batch.score(QUERY, images), scores, atol=1e-5, rtol=0)


def test_score_is_yes_over_yes_plus_no_of_the_full_forward(model_dirs: dict[str, Path]) -> None:
    """Brute force: run the model on the full prompt (all positions' logits), softmax, sum the
    probabilities of every Yes and No variant by hand."""
    reranker = VLMReranker(FAMILIES["llava-1.5"], str(model_dirs["llava-1.5"]))
    image = _images()[0]
    inputs = reranker.inputs(QUERY, [image])
    with torch.no_grad():
        logits = reranker.model(**inputs).logits[0, -1]
    probs = torch.softmax(logits.double(), -1).numpy()
    tok = reranker.processor.tokenizer
    yes = {tok.encode(v, add_special_tokens=False)[0] for v in ("Yes", " Yes", "yes", " yes")}
    no = {tok.encode(v, add_special_tokens=False)[0] for v in ("No", " No", "no", " no")}
    p_yes, p_no = sum(probs[i] for i in yes), sum(probs[i] for i in no)
    assert reranker.score(QUERY, [image])[0] == pytest.approx(p_yes / (p_yes + p_no), abs=1e-6)
    assert len(yes) == 4 and len(no) == 4  # the tokenizer has all four variants as tokens


def test_prompts_follow_each_family_format(model_dirs: dict[str, Path]) -> None:
    llava = VLMReranker(FAMILIES["llava-1.5"], str(model_dirs["llava-1.5"]))
    assert llava.prompt("a fox") == (
        'USER: <image>\nDoes this picture show a fox? Answer the question with either "Yes" '
        'or "No" and nothing else. ASSISTANT:'
    )
    pali = VLMReranker(FAMILIES["paligemma"], str(model_dirs["paligemma"]))
    assert pali.prompt("a fox") == (
        "<image>Q: Does this picture show a fox? Respond with yes or no.\nA:"
    )


def test_low_yes_no_mass_warns(model_dirs: dict[str, Path], caplog: pytest.LogCaptureFixture):
    reranker = VLMReranker(FAMILIES["llava-1.5"], str(model_dirs["llava-1.5"]), min_mass=0.5)
    with caplog.at_level(logging.WARNING, logger="inquire.rerank.vlm"):
        _, mass = reranker.score_with_mass(QUERY, _images()[:1])
    assert mass[0] < 0.5  # a random tiny model spreads its mass over the whole vocabulary
    assert "not answering yes/no" in caplog.text
    caplog.clear()
    quiet = VLMReranker(FAMILIES["llava-1.5"], str(model_dirs["llava-1.5"]), min_mass=0.0)
    with caplog.at_level(logging.WARNING, logger="inquire.rerank.vlm"):
        quiet.score(QUERY, _images()[:1])
    assert "not answering" not in caplog.text


def test_yes_probability_matches_hand_computation() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0], [0.0, 0.0, 0.0, 0.0]])
    score, mass = yes_probability(logits, [0, 2], [1])
    p = np.exp([2.0, 1.0, 0.0, -1.0]) / np.exp([2.0, 1.0, 0.0, -1.0]).sum()
    assert score[0] == pytest.approx((p[0] + p[2]) / (p[0] + p[1] + p[2]))
    assert mass[0] == pytest.approx(p[0] + p[1] + p[2])
    assert score[1] == pytest.approx(2 / 3) and mass[1] == pytest.approx(0.75)


def test_revision_is_a_fingerprint_of_the_local_weights(tmp_path: Path) -> None:
    a = build_tiny_vlm("llava-1.5", tmp_path / "a", seed=0)
    b = build_tiny_vlm("llava-1.5", tmp_path / "b", seed=1)
    assert local_fingerprint(a) == local_fingerprint(a)
    assert local_fingerprint(a) != local_fingerprint(b)
    reranker = load_reranker(f"vlm:llava-1.5/{a}")
    assert reranker.revision == local_fingerprint(a)
    assert reranker.prompt_version.startswith("llava-1.5-")


def test_bad_ids_are_refused() -> None:
    with pytest.raises(UnknownNameError, match=r"llava-1\.5"):
        parse_vlm_id("llava15/x")
    with pytest.raises(InputError, match="names no model"):
        parse_vlm_id("llava-1.5")
    with pytest.raises(UnknownNameError, match="precision"):
        VLMReranker(FAMILIES["llava-1.5"], "x", precision="int3")


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot load VLM"):
        load_reranker("vlm:llava-1.5/not-a-model/anywhere-local")


def test_answer_tokens_missing_from_vocabulary_is_refused(model_dirs: dict[str, Path]) -> None:
    row = VLMFamily(
        name="llava-1.5",
        model_class="LlavaForConditionalGeneration",
        template="USER: {image}\n{question} ASSISTANT:",
        example="x",
        yes=("Oui certainement",),
    )
    with pytest.raises(InputError, match="single token"):
        VLMReranker(row, str(model_dirs["llava-1.5"]))


def test_bf16_runs_and_stays_close_to_fp32(model_dirs: dict[str, Path]) -> None:
    images = _images()
    fp32 = VLMReranker(FAMILIES["llava-1.5"], str(model_dirs["llava-1.5"]))
    bf16 = VLMReranker(FAMILIES["llava-1.5"], str(model_dirs["llava-1.5"]), precision="bf16")
    assert bf16.model.dtype == torch.bfloat16
    assert bf16.inputs(QUERY, images[:1])["pixel_values"].dtype == torch.bfloat16
    low = bf16.score(QUERY, images)
    np.testing.assert_allclose(low, fp32.score(QUERY, images), atol=0.02)
    reference = [bf16.generate_score(QUERY, im) for im in images]
    np.testing.assert_allclose(low, reference, atol=1e-2)
