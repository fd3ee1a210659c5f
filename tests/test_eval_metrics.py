"""Offline metrics on a real collection with the packaged model: retrieval metrics by hand, a run
stored with per-sample scores, NaN counted per metric with its reason, and the run's record; the
eval store (runs, decisions, locks) on SQLite and PostgreSQL."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from core.db.database import open_database
from core.evalstore import EvalSample, EvalStore, GateDecision, ScoredSample
from eval.metrics import answer_text, contains_reference, relevance, retrieval_scores
from rag.synthesis import EXTRACTIVE_LABEL
from tests.support.evalcorpus import make_eval_corpus


def test_answer_text_drops_the_label_quotes_and_citations():
    response = f"{EXTRACTIVE_LABEL}:\n\n> The ferry is the Silver Heron. [1]\n\n> Second. [2, 3]\n"
    assert answer_text(response) == "The ferry is the Silver Heron. Second."
    assert answer_text(None) == ""
    # The line that says which of the question's names the quotes lack is a note, not content.
    noted = f"{EXTRACTIVE_LABEL}:\n\n_None of these passages mentions `pg_x`._\n\n> Second. [1]\n"
    assert answer_text(noted) == "Second."
    assert contains_reference("The ferry is the Silver Heron.", "silver heron") == 1.0
    assert contains_reference("The ferry is the Silver Heronry.", "silver heron") == 0.0


def test_an_answer_identical_to_a_logged_reference_scores_as_identical(embed_model):
    """A reference taken from a rated answer in the chat log carries the same label, quote marks
    and citations as the answer; the two are compared by what they say."""
    from eval.metrics import score_offline

    logged = (
        f"{EXTRACTIVE_LABEL}:\n\n> The ferry is the Silver Heron. [1]\n\n"
        "> It sails from Ostrand at dawn. [2]\n"
    )
    sample = EvalSample(user_input="Which ferry sails at dawn?", reference=logged)
    answered = ScoredSample(idx=0, user_input=sample.user_input, response=logged)
    score_offline([sample], [answered], embed_model)
    assert answered.scores["answer_contains_reference"] == 1.0
    assert answered.scores["rouge_l"] == pytest.approx(1.0)
    assert answered.scores["string_similarity"] == pytest.approx(1.0)
    assert answered.scores["semantic_similarity"] == pytest.approx(1.0, abs=1e-4)


def test_retrieval_scores_by_hand():
    got = retrieval_scores([0, 1, 0], n_gold=1)
    assert got["hit_at_1"] == 0.0 and got["hit_at_5"] == 1.0 and got["mrr_at_10"] == 0.5
    assert got["ndcg_at_10"] == pytest.approx(1 / math.log2(3))
    both = retrieval_scores([1, 0, 1], n_gold=2)
    ideal = 1 + 1 / math.log2(3)
    assert both["ndcg_at_10"] == pytest.approx((1 + 1 / math.log2(4)) / ideal)
    assert retrieval_scores([], n_gold=1)["hit_at_10"] == 0.0


def test_relevance_from_sources_or_passages():
    by_source = EvalSample(user_input="q", reference_sources=["guide/fact01.md"])
    assert relevance(by_source, ["a", "b"], ["/x/docs/other.md", "/x/guide/fact01.md"]) == [0, 1]
    # A gold source counts once, even when two chunks of it are retrieved.
    assert relevance(by_source, ["a", "b"], ["/x/guide/fact01.md"] * 2) == [1, 0]
    by_text = EvalSample(user_input="q", reference_contexts=["Diamond is the hardest mineral."])
    assert relevance(by_text, ["diamond is the hardest mineral", "talc"], ["d", "d"]) == [1, 0]


@pytest.fixture(scope="module")
def ctx(tmp_path_factory, embed_model, embed_id):
    from core.index.store import chroma_client, open_collection
    from core.settings import Settings
    from eval.runner import EvalContext
    from ingest import ingest_paths

    root = tmp_path_factory.mktemp("metrics")
    corpus, golden = make_eval_corpus(root)
    settings = Settings(data_dir=root / "data")
    collection = open_collection(chroma_client(settings), settings.chroma.collection, embed_id)
    ingest_paths(settings, collection, embed_model, paths=[corpus], progress=False)
    context = EvalContext.open(settings)
    context.embeddings.put(settings, embed_model)
    return context, golden


def test_run_stores_per_sample_scores_and_counts_nan(ctx):
    from eval.runner import run_eval
    from eval.sets import content_hash, load_jsonl

    context, golden = ctx
    samples = [
        *load_jsonl(golden)[:4],
        EvalSample(user_input="What does the Penmoor beacon burn?"),  # no reference at all
        EvalSample(
            user_input="Which river feeds the Ostrand mill?",
            reference="river Calder",
            reference_contexts=["The Ostrand mill is fed by the river Calder."],
        ),
    ]
    set_id = context.save_set("mixed", samples)
    run = run_eval(context, set_id, progress=False)
    assert run.status == "done" and run.set_hash == content_hash(samples)
    assert run.chat_version_id == context.registry.active("chat").id
    assert run.duration_s > 0 and run.judge_model is None
    assert run.settings["retrieval"]["top_k"] == 4 and "api_key" not in run.settings["llm"]
    stored = context.store.samples(run.id)
    assert [s.idx for s in stored] == list(range(6))
    first = stored[0]
    assert first.scores["hit_at_1"] == 1.0 and first.scores["answer_contains_reference"] == 1.0
    assert first.scores["semantic_similarity"] > 0.3
    assert first.retrieved_sources[0].endswith("fact00.md")
    no_ref = stored[4]
    assert math.isnan(no_ref.scores["rouge_l"]) and no_ref.nan_reasons["rouge_l"] == "no reference"
    assert no_ref.nan_reasons["hit_at_5"] == "no reference_sources or reference_contexts"
    with_ctx = stored[5]
    assert with_ctx.scores["context_recall"] == 1.0 and with_ctx.scores["hit_at_1"] == 1.0
    # NaN counted per metric, never averaged in.
    assert run.summary["rouge_l"].nan == 1 and run.summary["rouge_l"].measured == 5
    assert run.summary["context_recall"].nan == 5 and run.summary["context_recall"].measured == 1
    assert run.summary["hit_at_1"].mean == pytest.approx(
        sum(s.scores["hit_at_1"] for s in stored if not math.isnan(s.scores["hit_at_1"])) / 5
    )


def test_the_gate_refuses_to_judge_a_run_against_itself_or_the_same_versions(ctx):
    """Two runs the gate could judge differ in a version: a run against itself, or two runs of
    the same versions, are refused with the reason, and no decision is stored."""
    from core.errors import RagError
    from eval.runner import run_eval
    from eval.service import judge_runs
    from eval.sets import load_jsonl

    context, golden = ctx
    set_id = context.save_set("same", load_jsonl(golden)[:3])
    first = run_eval(context, set_id, progress=False)
    second = run_eval(context, set_id, progress=False)
    decided = len(context.store.decisions())
    with pytest.raises(RagError, match=f"run {first.id} against itself proves nothing"):
        judge_runs(context, first.id, first.id)
    with pytest.raises(RagError, match=r"ran the same versions \(chat v\d+ \+ embedding v\d+\)"):
        judge_runs(context, first.id, second.id)
    assert len(context.store.decisions()) == decided


def test_eval_store_runs_decisions_and_locks(sql_url):
    store = EvalStore(open_database(sql_url))
    samples = [EvalSample(user_input="q1", reference="r")]
    set_id = store.save_set("s", "h" * 64, samples)
    run_id = store.start_run(set_id, 1, 2, {"retrieval": {"top_k": 4}}, None)
    scored = [
        ScoredSample(
            idx=0, user_input="q1", scores={"a": 0.5, "b": math.nan}, nan_reasons={"b": "no answer"}
        )
    ]
    run = store.finish_run(run_id, scored, 1.5, prompt_tokens=3)
    assert run.summary["b"].nan == 1 and run.summary["a"].mean == 0.5 and run.prompt_tokens == 3
    [back] = store.samples(run_id)
    assert math.isnan(back.scores["b"]) and back.nan_reasons == {"b": "no answer"}
    assert store.latest_run(set_id, 1, 2).id == run_id and store.latest_run(set_id, 9, 2) is None
    d = store.save_decision(
        GateDecision(
            champion_run_id=run_id,
            candidate_run_id=run_id,
            candidate_version_id=5,
            promote=False,
            reasons=["x"],
        )
    )
    store.mark_applied(d.id)
    assert store.decision(d.id).applied and store.decisions()[0].id == d.id
    # What the gate last said of a version, in words for an admin promoting it by hand: the
    # reason it failed, not a check it passed.
    from types import SimpleNamespace

    from eval.service import gate_verdict

    ctx = SimpleNamespace(store=store)
    assert gate_verdict(ctx, 6) == (False, "the gate has never compared it with the active version")
    last = store.save_decision(
        GateDecision(
            champion_run_id=run_id,
            candidate_run_id=run_id,
            candidate_version_id=5,
            promote=False,
            reasons=["mrr_at_10 +0.0400: a real improvement", "guard hit_at_5 regressed -0.0500"],
        )
    )
    assert store.last_decision_for(5).id == last.id
    approved, verdict = gate_verdict(ctx, 5)
    assert not approved and verdict.endswith(f"{last.id}: guard hit_at_5 regressed -0.0500)")
    assert store.try_lock("eval:1", "a", timedelta(minutes=5))
    assert not store.try_lock("eval:1", "b", timedelta(minutes=5))  # held
    store.unlock("eval:1", "b")  # not b's to release
    assert not store.try_lock("eval:1", "b", timedelta(minutes=5))
    store.unlock("eval:1", "a")
    assert store.try_lock("eval:1", "b", timedelta(minutes=5))
    # An expired lock (a crashed holder) is taken over.
    from datetime import UTC, datetime

    later = datetime.now(UTC) + timedelta(minutes=10)
    assert store.try_lock("eval:1", "c", timedelta(minutes=5), now=later)


def test_history_of_one_run_reads_on_the_metrics_own_scale():
    """One run's point: the y axis spans the scores' 0..1 and the x axis an hour either side,
    not plotly's guess around a single value (0..2, milliseconds)."""
    from datetime import UTC, datetime

    from core.evalstore import EvalRun, MetricSummary
    from eval.report import history_figure

    at = datetime(2026, 12, 7, 4, 35, tzinfo=UTC)
    run = EvalRun(
        id=1, set_id=1, set_hash="h", chat_version_id=1, embedding_version_id=2, status="done",
        summary={"hit_at_5": MetricSummary(mean=1.0, measured=1, nan=0)}, started_at=at,
    )  # fmt: skip
    fig = history_figure([run])
    assert list(fig.layout.yaxis.range) == [0, 1.05]
    low, high = fig.layout.xaxis.range
    assert (low, high) == (at - timedelta(hours=1), at + timedelta(hours=1))
