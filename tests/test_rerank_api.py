"""The API reranker against a local fake OpenAI-compatible server."""

from __future__ import annotations

import io
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openai")

from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from inquire.errors import InputError
from inquire.rerank import load_reranker
from inquire.rerank.api import API_QUESTION, APIReranker, score_from_top_logprobs
from inquire.rerank.cache import ScoreCache, score_candidates
from inquire.testing.rerank_fake_openai import FakeOpenAI, fake_p_yes

KEY_ENV = "INQUIRE_TEST_API_KEY"
SECRET = "sk-test-SECRET-1234567890"
QUERY = "a mongoose standing upright alert"


def _jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture
def server():
    with FakeOpenAI(delay_s=1.0) as fake:
        yield fake


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(KEY_ENV, SECRET)
    return SECRET


def _reranker(server: FakeOpenAI, **kw) -> APIReranker:
    opts = {"api_key_env": KEY_ENV, "max_retries": 3, "timeout_s": 5.0}
    return APIReranker("fake-model", base_url=server.base_url, **{**opts, **kw})


def test_scores_are_p_yes_from_logprobs(server: FakeOpenAI, key: str) -> None:
    images = [_jpeg(i) for i in range(5)]
    scores = _reranker(server).score(QUERY, images)
    prompt = API_QUESTION.format(query=QUERY)
    expected = [fake_p_yes(im, prompt) for im in images]
    np.testing.assert_allclose(scores, expected, atol=1e-12)
    body = server.requests[0]["body"]
    assert body["logprobs"] is True and body["top_logprobs"] == 20
    assert body["max_tokens"] == 1 and body["temperature"] == 0.0
    content = body["messages"][0]["content"]
    # INQUIRE's GPT prompt, character for character (a newline after the question)
    assert content[0]["text"] == f'Does this picture show exactly "{QUERY}"?\n' + (
        'Answer the question with either "Yes" or "No" and nothing else.'
    )
    assert len(body["messages"]) == 1  # no system message
    assert content[1]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert server.requests[0]["headers"]["authorization"] == f"Bearer {SECRET}"


def test_pil_images_and_paths_are_sent_too(server: FakeOpenAI, key: str, tmp_path: Path) -> None:
    path = tmp_path / "im.jpg"
    path.write_bytes(_jpeg(1))
    pil = Image.open(io.BytesIO(_jpeg(2)))
    scores = _reranker(server).score(QUERY, [path, pil])
    prompt = API_QUESTION.format(query=QUERY)
    assert scores[0] == pytest.approx(fake_p_yes(_jpeg(1), prompt))
    assert 0 < scores[1] < 1


def test_all_yes_is_one_and_no_yes_is_zero(server: FakeOpenAI, key: str) -> None:
    server.script(["all-yes"])
    assert _reranker(server, concurrency=1).score(QUERY, [_jpeg(0)])[0] == 1.0
    server.script(["no-yes"])
    assert _reranker(server, concurrency=1).score(QUERY, [_jpeg(0)])[0] == 0.0


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("ok", None),  # Yes and No listed: p_yes / (p_yes + p_no)
        ("all-yes", 1.0),  # Yes without No
        ("no-yes", 0.0),  # No only
        ("neither", 0.0),
        ("lowercase-yes", 0.0),  # "yes" is not "Yes": no Yes listed
        ("400", 0.0),  # refused
    ],
)
def test_inquire_2024_parsing(server: FakeOpenAI, key: str, reply: str, expected) -> None:
    server.script([reply])
    reranker = _reranker(server, concurrency=1)
    assert reranker.protocol == "inquire-2024"
    with ScoreCache() as cache:
        score = score_candidates(reranker, QUERY, [7], [_jpeg(0)], cache=cache)[0]
        if expected is None:
            expected = fake_p_yes(_jpeg(0), API_QUESTION.format(query=QUERY))
        assert score == pytest.approx(expected, abs=1e-12)
        assert reranker.failures == []
        # a refusal scores 0 but is asked again next time (never cached)
        assert cache.count() == (0 if reply == "400" else 1)
    assert len(reranker.refusals) == (1 if reply == "400" else 0)
    assert len(server.requests) == 1  # a 400 is not retried


@pytest.mark.parametrize(("reply", "failed"), [("lowercase-yes", False), ("400", True)])
def test_inquire_sum_parsing_differs(server: FakeOpenAI, key: str, reply: str, failed: bool):
    server.script([reply])
    reranker = _reranker(server, concurrency=1, protocol="inquire-sum")
    score = reranker.score(QUERY, [_jpeg(0)])[0]
    if failed:  # a refused request is a recorded failure, not a 0
        assert np.isnan(score) and "HTTP 400" in reranker.failures[0].reason
    else:  # "yes" counts whatever its case
        prompt = reranker.prompt(QUERY)
        assert score == pytest.approx(fake_p_yes(_jpeg(0), prompt), abs=1e-12)
        assert prompt == f'Does this picture show exactly "{QUERY}"? ' + (
            'Answer the question with either "Yes" or "No" and nothing else.'
        )


def test_vila_rows_send_inquires_vila_prompt(server: FakeOpenAI, key: str) -> None:
    reranker = _reranker(server)
    vila = APIReranker(
        "Efficient-Large-Model/VILA1.5-13B",
        base_url=server.base_url,
        api_key_env=KEY_ENV,
    )
    assert vila.prompt_version != reranker.prompt_version
    vila.score(QUERY, [_jpeg(0)])
    content = server.requests[-1]["body"]["messages"][0]["content"]
    # INQUIRE's VILA prompt is "<image>\n Does this picture show ...": the image part goes
    # where the placeholder stood, first; the text is the rest, character for character.
    assert content[0]["type"] == "image_url"
    assert content[1]["text"] == (
        f" Does this picture show {QUERY}?\n"
        'Answer the question with either "Yes" or "No" and nothing else.'
    )


def test_top_logprob_arithmetic() -> None:
    lp = np.log
    top = [
        {"token": "Yes", "logprob": lp(0.3)},
        {"token": " yes", "logprob": lp(0.1)},
        {"token": "NO", "logprob": lp(0.2)},
        {"token": "Maybe", "logprob": lp(0.4)},
    ]
    score, mass = score_from_top_logprobs(top)
    assert score == pytest.approx(0.4 / 0.6) and mass == pytest.approx(0.6)
    assert score_from_top_logprobs(top[:2])[0] == 1.0
    assert score_from_top_logprobs(top[2:])[0] == 0.0


@pytest.mark.parametrize("fault", ["429", "500", "malformed", "bad-shape", "timeout"])
def test_transient_faults_are_retried(server: FakeOpenAI, key: str, fault: str) -> None:
    server.script([fault, fault])
    timeout = 0.3 if fault == "timeout" else 5.0
    reranker = _reranker(server, concurrency=1, timeout_s=timeout)
    score = reranker.score(QUERY, [_jpeg(3)])
    assert score[0] == pytest.approx(fake_p_yes(_jpeg(3), API_QUESTION.format(query=QUERY)))
    assert len(server.requests) == 3 and reranker.failures == []


def test_a_request_that_keeps_failing_is_a_recorded_failure(server: FakeOpenAI, key: str) -> None:
    server.retry_after_ms = 1  # the client waits what the server asks: keep the test quick
    server.script(["500"] * 4)  # max_retries=3: four attempts, all fail
    reranker = _reranker(server, concurrency=1)
    scores = reranker.score(QUERY, [_jpeg(0)])
    assert np.isnan(scores[0]) and len(server.requests) == 4
    assert len(reranker.failures) == 1
    assert reranker.failures[0].index == 0
    assert reranker.failures[0].reason.startswith("HTTP 500: ")
    assert reranker.failures[0].reason.endswith("after 4 attempts")
    # and a failure is never cached: the next run asks again
    with ScoreCache() as cache:
        server.script(["500"] * 4)
        out = score_candidates(reranker, QUERY, [10], [_jpeg(0)], cache=cache)
        assert np.isnan(out[0]) and cache.count() == 0
        ok = score_candidates(reranker, QUERY, [11], [_jpeg(1)], cache=cache)
        assert not np.isnan(ok[0]) and cache.count() == 1
        n = len(server.requests)
        again = score_candidates(reranker, QUERY, [10, 11], [_jpeg(0), _jpeg(1)], cache=cache)
        assert len(server.requests) == n + 1 and not np.isnan(again).any()


def test_http_errors_and_malformed_replies_share_one_retry_budget(
    server: FakeOpenAI, key: str
) -> None:
    server.retry_after_ms = 1
    # max_retries=3: four tries in all, so the fifth reply (ok) is never asked for
    server.script(["500", "malformed", "500", "malformed"])
    reranker = _reranker(server, concurrency=1)
    assert np.isnan(reranker.score(QUERY, [_jpeg(0)])[0])
    assert len(server.requests) == 4
    reason = reranker.failures[0].reason
    assert reason.startswith("malformed reply") and reason.endswith("after 4 attempts")
    server.script(["malformed", "500", "ok"])  # within the budget: scored
    assert not np.isnan(reranker.score(QUERY, [_jpeg(0)])[0])
    assert len(server.requests) == 7 and len(reranker.failures) == 1


def test_client_errors_are_not_retried(server: FakeOpenAI, key: str) -> None:
    server.script(["401", "ok"])
    reranker = _reranker(server, concurrency=1)
    out = reranker.score(QUERY, [_jpeg(0), _jpeg(1)])
    assert np.isnan(out[0]) and not np.isnan(out[1])
    assert len(server.requests) == 2 and "HTTP 401" in reranker.failures[0].reason


def test_concurrency_is_limited(key: str) -> None:
    with FakeOpenAI(latency_s=0.2) as slow:
        _reranker(slow, concurrency=3).score(QUERY, [_jpeg(i) for i in range(12)])
        assert 2 <= slow.max_in_flight <= 3


def test_scoring_loop_gives_the_api_chunks_that_fill_every_slot(
    server: FakeOpenAI, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    many = _reranker(server, concurrency=40)
    sizes: list[int] = []
    original = many.score

    def recording(query_text: str, images: list) -> np.ndarray:
        sizes.append(len(images))
        return original(query_text, images)

    monkeypatch.setattr(many, "score", recording)
    out = score_candidates(many, QUERY, list(range(200)), [_jpeg(i % 7) for i in range(200)])
    assert sizes == [160, 40]  # 4 x concurrency per call, not the loop's default of 32
    assert not np.isnan(out).any()


def test_key_is_never_logged_shown_or_cached(
    server: FakeOpenAI, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    server.retry_after_ms = 1
    # a failing request, a gateway that repeats the key in its error, and a good one
    server.script(["500"] * 4 + ["401-echo"])
    with caplog.at_level(logging.DEBUG):  # every logger: ours, openai's, httpx's
        reranker = _reranker(server, concurrency=1)
        with ScoreCache() as cache:
            ids, images = [1, 2, 3], [_jpeg(0), _jpeg(1), _jpeg(2)]
            out = score_candidates(reranker, QUERY, ids, images, cache=cache)
            db = cache.path
    assert np.isnan(out[:2]).all() and not np.isnan(out[2])
    assert server.requests[0]["headers"]["authorization"] == f"Bearer {SECRET}"
    echoed = reranker.failures[1].reason
    assert echoed.startswith("HTTP 401") and "Bearer <api key>" in echoed
    assert "POST" in caplog.text  # the client's own request log was captured
    assert SECRET not in caplog.text
    assert all(SECRET not in f.reason for f in reranker.failures)
    assert SECRET not in repr(reranker)
    assert SECRET not in reranker.reranker_id + reranker.revision + reranker.prompt_version
    for f in db.parent.iterdir():
        assert SECRET.encode() not in f.read_bytes()


def test_sampled_outputs_are_not_cached(server: FakeOpenAI, key: str) -> None:
    hot = _reranker(server, temperature=0.7)
    no_logprobs = _reranker(server, top_logprobs=0)
    assert not hot.cacheable and not no_logprobs.cacheable
    with ScoreCache() as cache:
        score_candidates(hot, QUERY, [1], [_jpeg(0)], cache=cache)
        out = score_candidates(no_logprobs, QUERY, [1], [_jpeg(0)], cache=cache)
        assert cache.count() == 0
    assert out[0] in (0.0, 1.0)  # scored from the answer text
    assert "logprobs" not in server.requests[-1]["body"]


def test_missing_key_and_bad_url_are_clear_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(InputError, match="OPENAI_API_KEY"):
        load_reranker("api:gpt-4o")
    with pytest.raises(InputError, match="base-url"):
        APIReranker("m", base_url="127.0.0.1:8000")
    with pytest.raises(InputError, match="top_logprobs"):
        APIReranker("m", base_url="http://127.0.0.1:1/v1", top_logprobs=50)


def test_registry_builds_an_api_reranker(server: FakeOpenAI, key: str) -> None:
    reranker = load_reranker("api:fake-model", base_url=server.base_url, api_key_env=KEY_ENV)
    assert reranker.reranker_id == "api:fake-model"
    assert reranker.revision.startswith("127.0.0.1:")
    assert reranker.score(QUERY, [_jpeg(5)]).shape == (1,)


def test_retry_after_is_honoured(key: str) -> None:
    # The client's own first backoff is at most 0.5 s: only the header explains a longer gap.
    with FakeOpenAI(retry_after="1") as server:
        server.script(["429"])
        reranker = _reranker(server, concurrency=1)
        score = reranker.score(QUERY, [_jpeg(2)])
    assert not np.isnan(score[0]) and reranker.failures == []
    assert [r["reply"] for r in server.requests] == ["429", "ok"]
    assert server.requests[1]["at"] - server.requests[0]["at"] >= 0.99


def test_a_retry_after_beyond_two_minutes_is_a_failure_not_a_wait(key: str) -> None:
    with FakeOpenAI(retry_after="600") as server:
        server.script(["429"])
        reranker = _reranker(server, concurrency=1)
        score = reranker.score(QUERY, [_jpeg(2)])
    assert np.isnan(score[0]) and len(server.requests) == 1
    assert reranker.failures[0].reason.startswith("HTTP 429")


def _wait_until(condition: Callable[[], bool], limit_s: float = 30.0) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {limit_s} s")
        time.sleep(0.01)


@pytest.mark.timeout(120)
def test_a_server_slower_than_the_timeout_is_a_clean_failure(key: str) -> None:
    # The server would answer after 30 s; the client gives each attempt 0.2 s. Stopping the
    # server wakes its slow replies, so the test ends as soon as the client has given up.
    with FakeOpenAI(delay_s=30.0) as slow:
        slow.script(["timeout", "timeout"])
        reranker = _reranker(slow, concurrency=1, timeout_s=0.2, max_retries=1)
        with ScoreCache() as cache:
            out = score_candidates(reranker, QUERY, [4], [_jpeg(4)], cache=cache)
            assert cache.count() == 0  # a failure is never cached
        assert np.isnan(out[0]) and len(slow.requests) == 2
    _wait_until(lambda: slow.in_flight == 0)  # the slow replies ended with the server
    (failure,) = reranker.failures
    assert failure.reason == (
        "timed out: no answer within timeout_s=0.2 s after 2 attempts; "
        "raise timeout_s for a slow server"
    )
    assert (failure.index, failure.image_id) == (0, 4)


def test_without_a_key_no_authorization_header_is_sent(
    server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-for-this-server")
    score = _reranker(server).score(QUERY, [_jpeg(0)])
    assert not np.isnan(score[0])
    assert "authorization" not in server.requests[0]["headers"]


def _upstream_score(top: list[dict]) -> float:
    """INQUIRE's rule for one API reply (convert_gpt_response_to_preds), restated: exact
    tokens, listed-or-not decides 0 and 1, else exp, sum and divide in float64."""
    yes = [lp["logprob"] for lp in top if lp["token"] == "Yes"]
    no = [lp["logprob"] for lp in top if lp["token"] == "No"]
    if not yes:
        return 0.0
    if not no:
        return 1.0
    p_yes, p_no = np.exp(yes).sum(), np.exp(no).sum()
    with np.errstate(invalid="ignore"):
        return float(p_yes / (p_yes + p_no))


def _top(*pairs: tuple[str, float]) -> list[dict]:
    return [{"token": t, "logprob": lp} for t, lp in pairs]


@pytest.mark.parametrize(
    ("top", "upstream", "ours"),
    [
        # listed at a floor value: upstream looks at presence, and so do we
        (_top(("Yes", -9999.0), (" maybe", -0.1)), 1.0, 1.0),
        (_top(("No", -9999.0), ("Perhaps", -0.1)), 0.0, 0.0),
        (_top(("Yes", -9999.0), ("No", -0.1)), 0.0, 0.0),
        (_top(("Yes", -0.1), ("No", -9999.0)), 1.0, 1.0),
        # both underflow: upstream divides 0 by 0; log space gives the exact ratio
        (_top(("Yes", -9999.0), ("No", -10000.0)), math.nan, 1 / (1 + math.exp(-1.0))),
        (_top(("Yes", -10000.0), ("No", -9999.0)), math.nan, 1 / (1 + math.exp(1.0))),
        (_top(("Yes", -9999.0), ("No", -9999.0)), math.nan, 0.5),
        (_top(("Yes", -math.inf), ("No", -math.inf)), math.nan, 0.5),
        (_top(("Yes", -800.0), ("Yes", -800.0), ("No", -800.0)), math.nan, 2 / 3),
    ],
)
def test_presence_decides_and_underflow_is_exact(top, upstream: float, ours: float) -> None:
    expected_upstream = _upstream_score(top)
    assert expected_upstream == upstream or (math.isnan(upstream) and math.isnan(expected_upstream))
    assert score_from_top_logprobs(top, exact=True)[0] == pytest.approx(ours, rel=1e-12, abs=0)
    assert score_from_top_logprobs(top, exact=False)[0] == pytest.approx(ours, rel=1e-12, abs=0)


def test_a_logprob_that_is_not_one_is_refused() -> None:
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError, match="log-probability"):
            score_from_top_logprobs(_top(("Yes", bad), ("No", -1.0)))


_TOKENS = st.sampled_from(["Yes", "No", "yes", " No", "Maybe", "Yes "])


@given(
    st.lists(st.tuples(_TOKENS, st.floats(min_value=-30.0, max_value=0.0)), min_size=0, max_size=20)
)
def test_ordinary_replies_score_as_upstream(pairs: list[tuple[str, float]]) -> None:
    top = _top(*pairs)
    upstream = _upstream_score(top)  # finite: probabilities above e^-30 never underflow
    assert score_from_top_logprobs(top, exact=True)[0] == pytest.approx(
        upstream, rel=1e-12, abs=1e-15
    )


@given(
    st.lists(
        st.tuples(_TOKENS, st.floats(min_value=-1e4, max_value=-800.0)), min_size=1, max_size=8
    )
)
def test_floor_values_always_give_a_score_in_0_1(pairs: list[tuple[str, float]]) -> None:
    top = _top(*pairs)
    score = score_from_top_logprobs(top, exact=True)[0]
    assert 0.0 <= score <= 1.0
    upstream = _upstream_score(top)
    if not math.isnan(upstream):  # only where Yes or No is missing: then equal
        assert score == upstream


@pytest.mark.parametrize(
    ("reply", "expected"), [("floor-yes", 1.0), ("floor-both", 0.7310585786300049)]
)
def test_floor_values_from_a_server(server: FakeOpenAI, key: str, reply: str, expected: float):
    server.script([reply])
    reranker = _reranker(server, concurrency=1)
    assert reranker.score(QUERY, [_jpeg(0)])[0] == pytest.approx(expected, rel=1e-12)
    assert reranker.failures == []
