"""LLM-judged metrics through Ragas and the real openai SDK against an HTTP-level fake judge:
scores and tokens, bounded concurrency, SDK retries on 429, malformed replies and API errors as
NaN with their reason; and no judge at all when none is configured."""

from __future__ import annotations

import asyncio
import math

import pytest
import respx
from pydantic import SecretStr

from core.evalstore import EvalSample, ScoredSample, summarise
from core.settings import JudgeSettings
from eval.judge import JUDGE_METRICS, Judge, build_judge
from tests.support import fakes
from tests.support.judgefake import judge

URL = "https://judge.test/v1/chat/completions"


def data(n: int = 3):
    samples = [
        EvalSample(user_input=f"Who keeps lighthouse {i}?", reference=f"Keeper {i}")
        for i in range(n)
    ]
    answered = [
        ScoredSample(
            idx=i,
            user_input=s.user_input,
            response=f"Keeper {i} keeps it.",
            retrieved_contexts=[f"Lighthouse {i} is kept by Keeper {i}."],
        )
        for i, s in enumerate(samples)
    ]
    return samples, answered


def make_judge(**kw) -> Judge:
    return Judge(
        JudgeSettings(
            model="judge-model",
            api_key=SecretStr("sk-test"),
            base_url="https://judge.test/v1",
            **kw,
        )
    )


def test_no_judge_configured_means_no_llm_metrics_and_no_calls():
    assert build_judge(JudgeSettings()) is None
    assert build_judge(JudgeSettings(model="gpt-4o-mini")) is None  # no key, no URL
    configured = build_judge(JudgeSettings(model="m", api_key=SecretStr("k"), concurrency=2))
    assert configured.model == "m" and configured.concurrency == 2


def test_judge_scores_every_metric_and_counts_tokens(embed_model):
    samples, answered = data()
    with respx.mock(assert_all_mocked=True) as mock:
        route = mock.post(URL).mock(side_effect=judge())
        prompt, completion = make_judge().score(samples, answered, embed_model, progress=False)
    for s in answered:
        assert set(JUDGE_METRICS) <= set(s.scores) and not s.nan_reasons
        assert s.scores["faithfulness"] == 1.0
    assert prompt == 20 * route.call_count and completion == 8 * route.call_count


def test_concurrency_is_bounded(embed_model):
    samples, answered = data(4)
    live = {"now": 0, "most": 0}
    reply = judge()

    async def slow(request):
        live["now"] += 1
        live["most"] = max(live["most"], live["now"])
        await asyncio.sleep(0.02)
        live["now"] -= 1
        return reply(request)

    with respx.mock(assert_all_mocked=True) as mock:
        mock.post(URL).mock(side_effect=slow)
        make_judge(concurrency=2).score(samples, answered, embed_model, progress=False)
    assert live["most"] == 2


def test_malformed_judge_reply_is_nan_with_reason_and_counted(embed_model):
    samples, answered = data(4)
    with respx.mock(assert_all_mocked=True) as mock:
        mock.post(URL).mock(side_effect=judge(malformed_when="lighthouse 2"))
        make_judge(concurrency=2).score(samples, answered, embed_model, progress=False)
    bad = answered[2]
    reasons = [r for s in answered for r in s.nan_reasons.values()]
    assert len(reasons) == len(bad.nan_reasons) >= 3  # only the sample the judge garbled
    assert all(r.startswith("malformed judge reply") for r in reasons)
    summary = summarise(answered)
    nan = sum(summary[m].nan for m in JUDGE_METRICS)
    assert nan == len(reasons)  # counted, never averaged away
    assert all(summary[m].measured + summary[m].nan == 4 for m in JUDGE_METRICS)
    assert any(summary[m].measured for m in JUDGE_METRICS)


def test_rate_limit_is_retried_by_the_sdk(embed_model):
    samples, answered = data(1)
    reply = judge()
    calls = {"n": 0}

    def flaky(request):
        calls["n"] += 1
        if calls["n"] <= 2:
            return fakes.error(429, "Rate limit reached", "rate_limit_exceeded")
        return reply(request)

    with respx.mock(assert_all_mocked=True) as mock:
        mock.post(URL).mock(side_effect=flaky)
        make_judge(concurrency=1, max_retries=3).score(
            samples, answered, embed_model, progress=False
        )
    assert not answered[0].nan_reasons and answered[0].scores["faithfulness"] == 1.0


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (401, "rejected the API key (401)"),
        (400, "refused the request (400)"),
        (500, "failed (500) after retries"),
        (429, "kept rate limiting (429)"),
    ],
)
def test_api_errors_become_nan_with_the_reason(embed_model, status, reason):
    samples, answered = data(2)
    with respx.mock(assert_all_mocked=True) as mock:
        route = mock.post(URL).mock(return_value=fakes.error(status, "nope"))
        make_judge(concurrency=1, max_retries=1).score(
            samples, answered, embed_model, progress=False
        )
    for s in answered:
        assert all(math.isnan(s.scores[m]) for m in JUDGE_METRICS)
        assert all(reason in s.nan_reasons[m] for m in JUDGE_METRICS)
    if status == 401:
        assert route.call_count == 1  # a rejected key is not asked again and again
