"""The promotion gate as pure functions: paired bootstrap intervals and decide_promotion on a clear
win, a win inside noise, a guard regression, too many NaNs and too few samples."""

from __future__ import annotations

import math
import random

from core.evalstore import ScoredSample
from eval.gate import GatePolicy, bootstrap_interval, compare_runs, decide_promotion

POLICY = GatePolicy(
    primary_metric="semantic_similarity",
    margin=0.01,
    guard_metrics=["hit_at_5"],
    guard_tolerance=0.02,
    max_nan_share=0.1,
    min_samples=20,
    seed=7,
)


def runs(
    n: int,
    primary_shift: float,
    noise: float,
    guard_shift: float = 0.0,
    nans: int = 0,
    seed: int = 1,
):
    """A champion run and a candidate run over the same n samples."""
    rng = random.Random(seed)
    champion, candidate = [], []
    for i in range(n):
        base = rng.uniform(0.3, 0.7)
        guard = float(rng.random() < 0.6)
        champion.append(
            ScoredSample(
                idx=i, user_input=f"q{i}", scores={"semantic_similarity": base, "hit_at_5": guard}
            )
        )
        cand_primary = math.nan if i < nans else base + primary_shift + rng.gauss(0, noise)
        cand_guard = guard if rng.random() > abs(guard_shift) else float(guard_shift > 0)
        candidate.append(
            ScoredSample(
                idx=i,
                user_input=f"q{i}",
                scores={"semantic_similarity": cand_primary, "hit_at_5": cand_guard},
            )
        )
    return champion, candidate


def test_bootstrap_is_seeded_and_brackets_the_mean():
    deltas = [0.1, 0.2, -0.05, 0.15, 0.3, 0.0, 0.12, 0.08]
    a = bootstrap_interval(deltas, 2000, 0.95, seed=3)
    assert a == bootstrap_interval(deltas, 2000, 0.95, seed=3)  # reproducible
    assert a != bootstrap_interval(deltas, 2000, 0.95, seed=4)
    mean = sum(deltas) / len(deltas)
    assert a[0] < mean < a[1]
    narrow = bootstrap_interval(deltas, 2000, 0.5, seed=3)
    assert a[0] < narrow[0] < narrow[1] < a[1]


def test_clear_win_is_promoted():
    champion, candidate = runs(60, primary_shift=0.08, noise=0.02)
    comparison = compare_runs(champion, candidate, POLICY)
    promote, reasons = decide_promotion(comparison, POLICY)
    assert promote, reasons
    assert comparison["semantic_similarity"].low > 0
    assert any("a real improvement" in r for r in reasons)


def test_win_inside_noise_is_rejected():
    champion, candidate = runs(30, primary_shift=0.02, noise=0.3)
    comparison = compare_runs(champion, candidate, POLICY)
    primary = comparison["semantic_similarity"]
    assert primary.delta > POLICY.margin and primary.low <= 0  # looks better, but it is noise
    promote, reasons = decide_promotion(comparison, POLICY)
    assert not promote and any("includes zero" in r for r in reasons)


def test_win_below_the_margin_is_rejected():
    champion, candidate = runs(200, primary_shift=0.004, noise=0.001)
    promote, reasons = decide_promotion(compare_runs(champion, candidate, POLICY), POLICY)
    assert not promote and any("below the margin" in r for r in reasons)


def test_guard_regression_is_rejected():
    champion, candidate = runs(60, primary_shift=0.08, noise=0.02, guard_shift=-0.5)
    comparison = compare_runs(champion, candidate, POLICY)
    assert comparison["hit_at_5"].delta < -POLICY.guard_tolerance
    promote, reasons = decide_promotion(comparison, POLICY)
    assert not promote and any("guard hit_at_5 regressed" in r for r in reasons)


def test_too_many_nans_is_rejected():
    champion, candidate = runs(60, primary_shift=0.08, noise=0.02, nans=12)
    comparison = compare_runs(champion, candidate, POLICY)
    assert comparison["semantic_similarity"].nan_share == 12 / 60
    promote, reasons = decide_promotion(comparison, POLICY)
    assert not promote and any("too many NaNs: 20%" in r for r in reasons)


def test_too_few_samples_is_rejected():
    champion, candidate = runs(8, primary_shift=0.1, noise=0.01)
    comparison = compare_runs(champion, candidate, POLICY)
    assert comparison["semantic_similarity"].low > 0  # a clear win, but on 8 samples
    promote, reasons = decide_promotion(comparison, POLICY)
    assert not promote and any("too few samples: 8" in r for r in reasons)


def test_self_against_self_is_not_promoted():
    champion, _ = runs(60, primary_shift=0.0, noise=0.0)
    promote, reasons = decide_promotion(compare_runs(champion, champion, POLICY), POLICY)
    assert not promote and any("below the margin" in r for r in reasons)


def test_unmeasured_primary_and_guards():
    champion, candidate = runs(30, primary_shift=0.1, noise=0.01)
    policy = POLICY.model_copy(update={"guard_metrics": ["faithfulness"]})
    promote, reasons = decide_promotion(compare_runs(champion, candidate, policy), policy)
    assert promote and "guard faithfulness: not measured on this set (skipped)" in reasons
    policy = POLICY.model_copy(update={"primary_metric": "faithfulness"})
    promote, reasons = decide_promotion(compare_runs(champion, candidate, policy), policy)
    assert not promote and reasons == ["primary metric faithfulness was not measured on this set"]


def test_only_evidence_its_recipe_did_not_make_may_judge_a_retrieval_candidate():
    """An embedding (or reranker) candidate is never judged on the held-out split of its own
    training pairs, nor on questions from the generator that wrote its training questions; a
    golden set, a dataset or rated chat turns are evidence. Chat candidates are not affected."""
    from datetime import UTC, datetime

    from core.evalstore import EvalSample
    from core.questions import question_key
    from core.registry import ModelVersion
    from eval.evidence import evidence_refusal

    def version(kind: str, **provenance) -> ModelVersion:
        return ModelVersion(
            id=7, kind=kind, name="c", status="candidate", provenance=provenance,
            created_at=datetime.now(UTC),
        )  # fmt: skip

    held = ["Who kept the lighthouse?", "When is the festival?"]
    samples = [EvalSample(user_input=q) for q in [*held, "Where is Velmora?"]]
    fresh = [EvalSample(user_input="How tall is the tower?")]
    cand = version(
        "embedding",
        heldout_question_keys=[question_key(q) for q in held],
        recipe=["generated", "headings"],
        generator="gpt-x",
    )
    assert "training diagnostic, not evidence" in evidence_refusal(cand, samples, {"kind": "file"})
    same_writer = {"kind": "generated", "generator": "gpt-x"}
    assert "also wrote embedding v7's training questions" in evidence_refusal(
        cand, fresh, same_writer
    )
    assert evidence_refusal(cand, fresh, {"kind": "generated", "generator": "other"}) is None
    for origin in ({"kind": "file"}, {"kind": "dataset"}, {"kind": "chatlog"}, None):
        assert evidence_refusal(cand, fresh, origin) is None
    chat = version("chat", heldout_question_keys=[question_key(q) for q in held])
    assert evidence_refusal(chat, samples, {"kind": "file"}) is None


def test_samples_the_set_cannot_measure_are_left_out_not_counted_as_nan():
    """A chat-log set gives gold passages only to its rated-up turns: the retrieval guard is
    judged on those, and the others (no gold: a property of the set, the same for both runs)
    neither pair nor count as unmeasured. A sample the candidate failed to measure still does."""
    from core.evalstore import NO_GOLD

    champion, candidate = runs(60, primary_shift=0.05, noise=0.01)
    for run in (champion, candidate):
        for s in run[:30]:
            s.scores["hit_at_5"] = math.nan
            s.nan_reasons["hit_at_5"] = NO_GOLD
    comparison = compare_runs(champion, candidate, POLICY)
    guard = comparison["hit_at_5"]
    assert guard.total == 30 and guard.paired == 30 and guard.nan_share == 0.0
    ok, reasons = decide_promotion(comparison, POLICY)
    assert ok, reasons
    candidate[40].scores["hit_at_5"] = math.nan  # the run's own failure: counted
    candidate[40].nan_reasons["hit_at_5"] = "the retriever failed"
    for s in candidate[41:45]:
        s.scores["hit_at_5"] = math.nan
    assert compare_runs(champion, candidate, POLICY)["hit_at_5"].nan_share == 5 / 30
