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
from inquire.rerank.protocol import VLMPrompt  # noqa: E402
from inquire.rerank.vlm import (  # noqa: E402
    FAMILIES,
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


# INQUIRE's prompts (src/lmm_utils.py get_lmm_prompt), written out by hand for "a fox".
_A = 'Answer the question with either "Yes" or "No" and nothing else.'
UPSTREAM_PROMPTS = {
    "blip2": "Does this picture show a fox?" + _A + "\nAnswer: ",
    "instructblip": "Does this picture show a fox?" + _A + "\nAnswer: ",
    "llava-1.5": "USER: <image>\nDoes this picture show a fox?" + _A + "\nASSISTANT:",
    "llava-1.6-mistral": "[INST] <image>\nDoes this picture show a fox?" + _A + " [/INST]",
    "llava-1.6-34b": (
        "<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n<image>\n"
        'Does this picture show "a fox"?Answer the question with either "Yes" or "No".'
        "<|im_end|><|im_start|>answer\n"
    ),
    "paligemma": "Q: Does this picture show a fox? Respond with yes or no.\nA:",
}
# INQUIRE's token choice: (text, position in tokenizer(text).input_ids)
UPSTREAM_TOKENS = {
    "blip2": (("Yes", 0), ("No", 0)),
    "instructblip": (("Yes", 0), ("No", 0)),
    "llava-1.5": (("Yes", 1), ("No", 1)),
    "llava-1.6-mistral": (("Yes", 1), ("No", 1)),
    "llava-1.6-34b": ((" Yes", 1), (" No", 1)),
    "paligemma": (("yes", -1), ("no", -1)),
}


def _upstream_reference(reranker: VLMReranker, family: str, query: str, image) -> float:
    """INQUIRE's ModelWrapper.score_image, written out: one image, its exact prompt, the
    sampled generate at temperature 0.5 with renormalised scores, the first step's
    probabilities at the Yes / No ids, p_yes / (p_yes + p_no) in float32."""
    proc, model = reranker.processor, reranker.model
    prompt = UPSTREAM_PROMPTS[family].replace("a fox", query)
    if family in ("blip2", "instructblip"):
        image = image.convert("RGB")
    inputs = proc(images=image, text=prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(
            **inputs,
            do_sample=True,
            temperature=0.5,
            max_new_tokens=1,
            return_dict_in_generate=True,
            output_scores=True,
            renormalize_logits=True,
            pad_token_id=proc.tokenizer.eos_token_id,
        )
    (yes_text, yes_pos), (no_text, no_pos) = UPSTREAM_TOKENS[family]
    yes = proc.tokenizer(yes_text).input_ids[yes_pos]
    no = proc.tokenizer(no_text).input_ids[no_pos]
    probs = out.scores[0][0].exp()
    assert probs.dtype == torch.float32
    p_yes, p_no = probs[yes], probs[no]
    if float(p_yes + p_no) == 0.0:  # both outside the top-k: scored 0 (documented)
        return 0.0
    return float(p_yes / (p_yes + p_no))


@pytest.mark.parametrize("top_k", [None, 0])
@pytest.mark.parametrize("family", sorted(UPSTREAM_PROMPTS))
def test_inquire_2024_scores_equal_upstreams_generate(
    family: str, top_k: int | None, model_dirs: dict[str, Path]
) -> None:
    """Default protocol, batched, against INQUIRE's own generate call; top_k None is
    generate's default top-k of 50, 0 switches the filter off (so the ratio is never 0/1)."""
    reranker = load_reranker(f"vlm:{family}/{model_dirs[family]}", batch_size=2)
    assert isinstance(reranker, VLMReranker) and reranker.protocol == "inquire-2024"
    assert reranker.prompt("a fox") == UPSTREAM_PROMPTS[family]
    reranker.generation_config.top_k = top_k
    images = _images()
    scores = reranker.score(QUERY, images)
    assert scores.shape == (3,) and scores.dtype == np.float64
    reference = np.array([_upstream_reference(reranker, family, QUERY, im) for im in images])
    np.testing.assert_allclose(scores, reference, atol=1e-6, rtol=0)
    if top_k == 0:
        assert np.all((scores > 0) & (scores < 1))
    # and the reranker's own reference path agrees
    np.testing.assert_allclose(
        [reranker.generate_score(QUERY, im) for im in images], reference, atol=1e-6, rtol=0
    )


def test_inquire_2024_repetition_penalty_with_left_padding(
    model_dirs: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """A generation config with a repetition penalty: applied over each row's own prompt ids
    (padding excluded), as generate does for one image; LLaVA-1.6 tiles give rows of
    different lengths, so the batch is left-padded."""
    family = "llava-1.6-mistral"
    with caplog.at_level(logging.WARNING, logger="inquire.rerank.vlm"):
        reranker = load_reranker(f"vlm:{family}/{model_dirs[family]}", batch_size=3)
    assert "generation config sets" not in caplog.text  # nothing unreproduced in the tiny one
    reranker.generation_config.top_k = 0
    reranker.generation_config.repetition_penalty = 3.0
    images = _images()
    assert (reranker.inputs(QUERY, images)["attention_mask"] == 0).any()  # padded
    scores = reranker.score(QUERY, images)
    reference = [_upstream_reference(reranker, family, QUERY, im) for im in images]
    np.testing.assert_allclose(scores, reference, atol=1e-6, rtol=0)
    reranker.generation_config.repetition_penalty = 1.0
    assert np.abs(reranker.score(QUERY, images) - scores).max() > 1e-3  # the penalty mattered


def test_inquire_2024_token_ids_and_image_handling(model_dirs: dict[str, Path]) -> None:
    llava = load_reranker(f"vlm:llava-1.5/{model_dirs['llava-1.5']}")
    tok = llava.processor.tokenizer
    assert tok("Yes").input_ids[0] == tok.bos_token_id  # the <s> INQUIRE skips with [1]
    assert llava.yes_ids == [tok("Yes").input_ids[1]] and llava.no_ids == [tok("No").input_ids[1]]
    gray = Image.fromarray(np.full((20, 30), 128, np.uint8))  # mode "L"
    assert llava.prepare_image(gray).mode == "L"  # passed as decoded, as INQUIRE did
    blip = load_reranker(f"vlm:blip2/{model_dirs['blip2']}")
    assert blip.prepare_image(gray).mode == "RGB"  # BLIP models: convert("RGB")
    assert blip.yes_ids == [blip.processor.tokenizer("Yes").input_ids[0]]
    # PaliGemma: the "<image>" prefix gives the ids the processor builds from the bare prompt
    pali = load_reranker(f"vlm:paligemma/{model_dirs['paligemma']}")
    image = _images()[0]
    ours = pali.inputs("a fox", [image])["input_ids"]
    bare = pali.processor(images=image, text=UPSTREAM_PROMPTS["paligemma"], return_tensors="pt")
    assert torch.equal(ours, bare["input_ids"])


def test_inquire_2024_refuses_families_inquire_did_not_evaluate(
    model_dirs: dict[str, Path],
) -> None:
    with pytest.raises(InputError, match="inquire-sum"):
        load_reranker(f"vlm:idefics3/{model_dirs['idefics3']}")
    with pytest.raises(UnknownNameError, match="inquire-2024"):
        load_reranker(f"vlm:llava-1.5/{model_dirs['llava-1.5']}", protocol="inquire-2023")


def test_first_step_by_hand() -> None:
    """Temperature 0.5, top-2, renormalise, then p_yes / (p_yes + p_no): computed by hand."""
    from inquire.rerank.protocol import FirstStep
    from inquire.rerank.vlm import _ratio_from_logprobs, first_step_logprobs

    class Config:
        top_k, top_p, repetition_penalty = 2, 1.0, None

    logits = torch.tensor([[1.0, 0.5, 0.0, -3.0], [0.0, 3.0, 2.0, 1.0]])
    logp = first_step_logprobs(logits, FirstStep(0.5, True, "float32"), Config())
    score, mass = _ratio_from_logprobs(logp, [0], [1], torch.float32)
    # row 0: top-2 keeps ids 0 and 1; p ∝ exp(2), exp(1)
    assert score[0] == pytest.approx(np.exp(2) / (np.exp(2) + np.exp(1)), abs=1e-7)
    assert mass[0] == pytest.approx(1.0, abs=1e-6)
    # row 1: top-2 keeps ids 1 and 2; Yes (id 0) is filtered out -> 0
    assert score[1] == 0.0 and mass[1] == pytest.approx(np.exp(6) / (np.exp(6) + np.exp(4)))
    both_out = first_step_logprobs(
        torch.tensor([[0.0, 0.0, 5.0, 5.0]]), FirstStep(0.5, True, "float32"), Config()
    )
    assert _ratio_from_logprobs(both_out, [0], [1], torch.float32)[0][0] == 0.0


# --- inquire-sum: the family chat formats, every yes/no spelling summed --------------------


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_sum_protocol_batched_score_equals_one_step_generate(
    family: str, model_dirs: dict[str, Path]
) -> None:
    reranker = load_reranker(
        f"vlm:{family}/{model_dirs[family]}", batch_size=2, protocol="inquire-sum"
    )
    assert isinstance(reranker, VLMReranker)
    images = _images()
    scores = reranker.score(QUERY, images)
    assert scores.shape == (3,) and scores.dtype == np.float64
    assert np.all((scores > 0) & (scores < 1))
    reference = np.array([reranker.generate_score(QUERY, im) for im in images])
    np.testing.assert_allclose(scores, reference, atol=1e-5, rtol=0)
    # batching does not change scores
    one_batch = VLMReranker(
        FAMILIES[family], str(model_dirs[family]), batch_size=8, protocol="inquire-sum"
    )
    np.testing.assert_allclose(one_batch.score(QUERY, images), scores, atol=1e-5, rtol=0)


def test_score_is_yes_over_yes_plus_no_of_the_full_forward(model_dirs: dict[str, Path]) -> None:
    """Brute force: run the model on the full prompt (all positions' logits), softmax, sum the
    probabilities of every Yes and No variant by hand."""
    reranker = VLMReranker(
        FAMILIES["llava-1.5"], str(model_dirs["llava-1.5"]), protocol="inquire-sum"
    )
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


def test_sum_prompts_follow_each_family_format(model_dirs: dict[str, Path]) -> None:
    llava = VLMReranker(FAMILIES["llava-1.5"], str(model_dirs["llava-1.5"]), protocol="inquire-sum")
    assert llava.prompt("a fox") == (
        'USER: <image>\nDoes this picture show a fox? Answer the question with either "Yes" '
        'or "No" and nothing else. ASSISTANT:'
    )
    pali = VLMReranker(FAMILIES["paligemma"], str(model_dirs["paligemma"]), protocol="inquire-sum")
    assert pali.prompt("a fox") == (
        "<image>Q: Does this picture show a fox? Respond with yes or no.\nA:"
    )


def test_low_yes_no_mass_warns(model_dirs: dict[str, Path], caplog: pytest.LogCaptureFixture):
    reranker = VLMReranker(
        FAMILIES["llava-1.5"], str(model_dirs["llava-1.5"]), min_mass=0.5, protocol="inquire-sum"
    )
    with caplog.at_level(logging.WARNING, logger="inquire.rerank.vlm"):
        _, mass = reranker.score_with_mass(QUERY, _images()[:1])
    assert mass[0] < 0.5  # a random tiny model spreads its mass over the whole vocabulary
    assert "not answering yes/no" in caplog.text
    caplog.clear()
    quiet = VLMReranker(
        FAMILIES["llava-1.5"], str(model_dirs["llava-1.5"]), min_mass=0.0, protocol="inquire-sum"
    )
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
    row = VLMPrompt("USER: {image}\n{query} ASSISTANT:", ("Oui certainement",), ("No",))
    with pytest.raises(InputError, match="single token"):
        VLMReranker(FAMILIES["llava-1.5"], str(model_dirs["llava-1.5"]), prompt=row)
    at = VLMPrompt("USER: {image}\n{query} ASSISTANT:", ("Yes",), ("No",), token_index=5)
    with pytest.raises(InputError, match="no position 5"):
        VLMReranker(FAMILIES["llava-1.5"], str(model_dirs["llava-1.5"]), prompt=at)


def test_bf16_runs_and_stays_close_to_fp32(model_dirs: dict[str, Path]) -> None:
    images = _images()
    d = str(model_dirs["llava-1.5"])
    fp32 = VLMReranker(FAMILIES["llava-1.5"], d, protocol="inquire-sum")
    bf16 = VLMReranker(FAMILIES["llava-1.5"], d, precision="bf16", protocol="inquire-sum")
    assert bf16.model.dtype == torch.bfloat16
    assert bf16.inputs(QUERY, images[:1])["pixel_values"].dtype == torch.bfloat16
    low = bf16.score(QUERY, images)
    np.testing.assert_allclose(low, fp32.score(QUERY, images), atol=0.02)
    reference = [bf16.generate_score(QUERY, im) for im in images]
    np.testing.assert_allclose(low, reference, atol=1e-2)


def test_first_step_matches_a_numpy_reference_on_random_logits() -> None:
    """Property: temperature 0.5 + top-k + renormalise, read at one Yes and one No id, equals
    the obvious numpy computation (float64) on random logits, for any k."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from inquire.rerank.protocol import FirstStep
    from inquire.rerank.vlm import _ratio_from_logprobs, first_step_logprobs

    @settings(max_examples=60, deadline=None, derandomize=True)
    @given(
        seed=st.integers(0, 2**32 - 1),
        vocab=st.integers(3, 40),
        top_k=st.integers(0, 45),
        scale=st.floats(0.1, 8.0),
    )
    def check(seed: int, vocab: int, top_k: int, scale: float) -> None:
        rng = np.random.default_rng(seed)
        x = rng.normal(0, scale, (2, vocab))
        yes, no = rng.choice(vocab, 2, replace=False)

        class Config:
            top_p, repetition_penalty = 1.0, None

        Config.top_k = top_k  # type: ignore[attr-defined]
        logp = first_step_logprobs(
            torch.tensor(x, dtype=torch.float32), FirstStep(0.5, True, "float32"), Config()
        )
        got, _ = _ratio_from_logprobs(logp, [int(yes)], [int(no)], torch.float32)
        z = x.astype(np.float32).astype(np.float64) / 0.5
        for r in range(2):
            keep = np.ones(vocab, bool)
            if 0 < top_k < vocab:
                keep = z[r] >= np.sort(z[r])[::-1][top_k - 1]
            p = np.where(keep, np.exp(z[r] - z[r].max()), 0.0)
            p /= p.sum()
            want = 0.0 if p[yes] + p[no] == 0 else p[yes] / (p[yes] + p[no])
            assert got[r] == pytest.approx(want, abs=2e-6)

    check()


def test_auto_precision_is_inquires_on_a_gpu_and_fp32_on_the_cpu() -> None:
    from inquire.rerank.vlm import FAMILIES, resolve_precision

    want = {"blip2": "fp32", "instructblip": "fp32", "llava-1.5": "fp16"}
    want |= {"llava-1.6-mistral": "fp16", "llava-1.6-34b": "fp16", "paligemma": "fp16"}
    for name, precision in want.items():
        assert resolve_precision("auto", FAMILIES[name], "cuda:0") == precision
        assert resolve_precision("auto", FAMILIES[name], "cpu") == "fp32"
        assert resolve_precision("bf16", FAMILIES[name], "cuda") == "bf16"


def test_a_family_is_one_row(model_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A row added to FAMILIES (here a LLaVA checkpoint under a new name and prompt) is all a
    new family needs: the id parser, the protocols, the loader and `inquire rerank list`."""
    from dataclasses import replace

    from typer.testing import CliRunner

    from inquire.cli import app
    from inquire.rerank.families import INQUIRE_SUM
    from inquire.rerank.protocol import PROTOCOLS

    prompt = VLMPrompt("USER: {image}\nIs this {query}? ASSISTANT:", ("Yes",), ("No",))
    row = replace(FAMILIES["llava-1.5"], name="llava-test", prompts={INQUIRE_SUM: prompt})
    monkeypatch.setitem(FAMILIES, "llava-test", row)
    assert PROTOCOLS[INQUIRE_SUM].vlm["llava-test"] is prompt
    with pytest.raises(InputError, match="use --protocol inquire-sum"):
        PROTOCOLS["inquire-2024"].vlm_prompt("llava-test")
    rr = load_reranker(f"vlm:llava-test/{model_dirs['llava-1.5']}", protocol=INQUIRE_SUM)
    assert rr.family is row and rr.prompt("a fox") == "USER: <image>\nIs this a fox? ASSISTANT:"
    images = _images()[:2]
    scores = rr.score(QUERY, images)
    assert scores.shape == (2,) and np.all((scores >= 0) & (scores <= 1))
    assert scores[0] == pytest.approx(rr.generate_score(QUERY, images[0]), abs=1e-5)
    listing = CliRunner().invoke(app, ["rerank", "list"], env={"COLUMNS": "200"})
    assert listing.exit_code == 0 and "llava-test" in listing.output
