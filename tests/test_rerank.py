"""The reranker: a cross-encoder trained here from the packaged model's weights (a small real
run), served on ONNX int8 or torch with the same scores, mixed into retrieval only when a reranker
version names a model, followed per request by the app (badge, logged turn, rollback), judged by
the gate (one that does not win is rejected), and trained as a job from the command line with
hard negatives from the app's retriever; bad folders and bad requests are refused, creating
nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.chatlog import ChatLog
from core.db.database import open_database
from core.errors import ConfigError
from core.registry import Registry
from core.settings import Settings
from finetune.embedding.data import PairSet, save_llamaindex
from rag.live import EmbeddingCache, LivePipeline
from rag.prompt import system_prompt
from rag.rerank import CrossEncoderScorer, check_model_dir, focus, mix, pieces_of
from tests.support.corpus import make_corpus
from tests.support.embedding_pairs import TRAIN_TEMPLATES, codename_pairs

LENGTH = 64  # word pieces: the test texts are short, and short sequences train fast
QUESTION = "Who is the lighthouse keeper of Velmora?"


def _with_negatives(data: PairSet) -> PairSet:
    """Each question's negatives: two other codenames' passages (what a miner would find)."""
    ids = sorted(data.corpus)
    for qid in data.queries:
        own = data.relevant_docs[qid][0]
        data.negatives[qid] = [d for d in ids if d != own][:2]
    return data


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    from core.embedding.window import packaged_model_dir
    from finetune.rerank.train import RerankConfig, train_reranker

    out = tmp_path_factory.mktemp("reranker") / "model"
    cfg = RerankConfig(epochs=1, batch_size=8, max_length=LENGTH, learning_rate=3e-4)
    result = train_reranker(
        packaged_model_dir(), _with_negatives(codename_pairs(TRAIN_TEMPLATES)), out, cfg, False
    )
    assert result.steps == 6 and len(result.losses) == 6
    return out


def test_a_trained_reranker_is_a_cross_encoder_with_its_curve(trained):
    config = json.loads((trained / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"]
    assert (trained / "loss_curve.html").is_file() and (trained / "tokenizer.json").is_file()
    assert json.loads((trained / "train_config.json").read_text())["questions"] == 48
    check_model_dir(trained)


def test_folders_that_hold_no_reranker_are_refused_with_the_reason(tmp_path):
    from core.embedding.window import packaged_model_dir

    with pytest.raises(ConfigError, match="does not exist"):
        check_model_dir(tmp_path / "absent")
    with pytest.raises(ConfigError, match="not a cross-encoder"):
        check_model_dir(packaged_model_dir())  # an embedding model, not a reranker
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        check_model_dir(tmp_path / "broken")


def test_onnx_and_torch_serve_the_same_scores(trained, tmp_path):
    passages = [
        "The reservoir pumps lift drinking water into the hill district every night.",
        "Payroll runs on the last working day of the month and includes overtime.",
        "Library books may be renewed online up to three times.",
    ]
    question = "When does payroll run?"
    torch_scores = CrossEncoderScorer(trained, "torch", LENGTH).score(question, passages)
    fp32 = CrossEncoderScorer(trained, "onnx", LENGTH, tmp_path).score(question, passages)
    int8 = CrossEncoderScorer(trained, "onnx-int8", LENGTH, tmp_path).score(question, passages)
    assert np.allclose(torch_scores, fp32, atol=1e-4)
    assert np.argmax(int8) == np.argmax(torch_scores)
    assert any(p.name.endswith("-scores") for p in tmp_path.iterdir())  # its own export
    assert CrossEncoderScorer(trained, "onnx", LENGTH, tmp_path).score(question, []).size == 0


def _packaged_pieces():
    from tokenizers import Tokenizer

    from core.embedding.window import packaged_model_dir

    return pieces_of(Tokenizer.from_file(str(packaged_model_dir() / "tokenizer.json")))


FILLER = " ".join(
    f"The annual report lists item {i} among the company's holdings." for i in range(40)
)
ANSWER = "Payroll runs on the last working day of the month and includes overtime."


def test_a_long_passage_is_read_where_it_answers_the_question_not_cut_to_its_head():
    pieces = _packaged_pieces()
    assert pieces.special == 3  # [CLS] q [SEP] p [SEP], read from the tokenizer
    passage = f"{FILLER} {ANSWER} {FILLER}"
    question = "When does payroll run each month?"
    seen = focus(question, passage, pieces, 64)
    assert ANSWER in seen and len(pieces.offsets(question)) + len(pieces.offsets(seen)) + 3 <= 64
    # Of windows holding as many of its words, the one they stand most inside of: the sentence
    # is not cut at the window's edge.
    head = f"Payroll is handled in house. {FILLER}"
    assert ANSWER in focus(question, f"{head} {ANSWER} {FILLER}", pieces, 64)
    # The answer at the very end: the last window, though the stride does not land on it.
    assert focus(question, f"{FILLER} {ANSWER}", pieces, 64).endswith(ANSWER)
    # A passage that fits is read whole; a question sharing no word with it reads its head.
    assert focus(question, ANSWER, pieces, 64) == ANSWER
    assert focus(question, "", pieces, 64) == ""
    assert passage.startswith(focus("Zebra?", passage, pieces, 64))
    # A question that leaves the passage too little room is left to the tokenizer's cut.
    assert focus(" ".join(["payroll"] * 60), passage, pieces, 64) == passage


def test_the_question_words_are_matched_where_words_start():
    pieces = _packaged_pieces()
    # Glued and inflected words count: extracted text often loses its spaces.
    glued = f"{FILLER} Legal Proceedings46Item risks follow here. {FILLER}"
    assert "Proceedings46Item" in focus("What legal proceedings and risk?", glued, pieces, 64)
    # Not inside another word: "form" is not in "platform", nor "s" (of "Uber's") anywhere.
    inside = f"{FILLER} The platform platform platform. {FILLER} The form is filed yearly. {FILLER}"
    assert "form is filed" in focus("Which form is Uber's?", inside, pieces, 64)
    # A letter whose lower case is longer (İ) does not shift where words are found.
    dotted = "İ" * 300 + f" {FILLER} {ANSWER} {FILLER}"
    assert ANSWER in focus("When does payroll run each month?", dotted, pieces, 64)


def test_training_reads_each_passage_and_negative_as_serving_does():
    from finetune.rerank.train import training_table

    data = _with_negatives(codename_pairs(TRAIN_TEMPLATES))
    read = []

    def marked(query: str, text: str) -> str:
        read.append(query)
        return f"seen: {text}"

    for loss in ("listwise", "bce"):
        table = training_table(data, loss, marked)
        texts = [v for c in table.column_names if c not in ("query", "label") for v in table[c]]
        assert texts and all(t.startswith("seen: ") for t in texts)
    assert set(read) == {q for _, q, _ in data.pairs()}  # each read for its own question


def test_the_scorer_reads_the_window_that_answers_as_training_did(trained, tmp_path):
    from finetune.rerank.train import RerankConfig, load_cross_encoder, reader

    filler = " ".join(f"Library books may be renewed online, rule {i}." for i in range(30))
    long = f"{filler} {ANSWER} {filler}"
    question = "When does payroll run?"
    learned = reader(load_cross_encoder(trained, LENGTH), RerankConfig(max_length=LENGTH))
    seen = []
    for backend in ("torch", "onnx"):
        scorer = CrossEncoderScorer(trained, backend, LENGTH, tmp_path)
        seen.append(scorer.focused(question, long))
        assert np.allclose(
            scorer.score(question, [long]), scorer.score(question, [seen[-1]]), atol=1e-5
        )
    assert ANSWER in seen[0] and seen[0] == seen[1] == learned(question, long)
    head = CrossEncoderScorer(trained, "onnx", LENGTH, tmp_path, read_focus=False)
    assert head.focused(question, long) == long and ANSWER not in long[: len(seen[0])]
    unfocused = RerankConfig(max_length=LENGTH, focus=False)
    assert reader(load_cross_encoder(trained, LENGTH), unfocused)(question, long) == long


def test_mixing_keeps_the_retrieval_order_at_weight_zero_and_the_rerankers_at_one():
    fused, scores = [0.9, 0.5, 0.1], [-2.0, 3.0, 1.0]
    assert list(np.argsort(-mix(fused, scores, 0.0))) == [0, 1, 2]
    assert list(np.argsort(-mix(fused, scores, 1.0))) == [1, 2, 0]
    assert np.allclose(mix([0.4, 0.4], [1.0, 1.0], 0.5), [1.0, 1.0])  # ties: no division by 0


@pytest.fixture
def world(tmp_path, sql_url, embed_model, embed_id):
    from core.index.store import chroma_client, open_collection
    from ingest import ingest_paths

    settings = Settings(data_dir=tmp_path / "data")
    settings.app.docs_dir = tmp_path / "no-docs"
    settings.database.url = sql_url
    collection = open_collection(chroma_client(settings), settings.chroma.collection, embed_id)
    ingest_paths(
        settings, collection, embed_model, paths=[make_corpus(tmp_path / "c")], progress=False
    )
    log = ChatLog(open_database(sql_url))
    reg = Registry(log.db)
    seeded = reg.seed(settings)
    cache = EmbeddingCache()
    cache.put(settings, embed_model)
    live = LivePipeline(settings, reg, log, system_prompt(settings), cache)
    yield settings, reg, log, live, seeded
    log.db.dispose()


def test_the_seeded_reranker_changes_nothing_and_a_promoted_one_serves_per_request(world, trained):
    _, reg, log, live, seeded = world
    assert seeded["reranker"].status == "active" and not seeded["reranker"].spec
    before = list(live.ask("s", QUESTION))[-1]
    assert "reranker" not in live.badge and live.current().retriever.reranking is None
    cand = reg.register(
        "reranker",
        "tiny",
        {"reranker": {"model_dir": str(trained), "weight": 1.0, "top_n": 5}},
        parent_id=seeded["reranker"].id,
    )
    reg.promote(cand.id)
    after = list(live.ask("s", QUESTION))[-1]  # picked up on the next question, no restart
    reranking = live.current().retriever.reranking
    assert reranking is not None and reranking.weight == 1.0 and reranking.top_n == 5
    assert f"reranker v{cand.id}" in live.badge
    # The passages it re-scored come back in the order of its scores (weight 1: its alone).
    pipeline = live.current()
    emb = pipeline.embed_model.get_query_embedding(QUESTION)
    ranked = pipeline.retriever.ranked(QUESTION, emb, k=10)
    scored = [c.rerank_score for c in ranked if c.rerank_score is not None]
    assert scored and scored == sorted(scored, reverse=True)
    turns = sorted(log.turns(), key=lambda t: t.id)
    assert turns[-1].reranker_version_id == cand.id and turns[0].reranker_version_id is None
    assert before.sources and after.sources
    reg.rollback("reranker")
    list(live.ask("s", QUESTION))
    assert live.current().retriever.reranking is None and "reranker" not in live.badge


def test_the_gate_rejects_a_reranker_that_does_not_win(world, trained):
    from core.evalstore import EvalSample, EvalStore
    from eval.gate import GatePolicy
    from eval.runner import EvalContext, compare

    settings, reg, *_ = world
    seeded = reg.active("reranker")
    # Weight 0: its scores count for nothing, so it ranks exactly as the champion does.
    version = reg.register(
        "reranker", "no weight", {"reranker": {"model_dir": str(trained), "weight": 0.0}}
    )
    ctx = EvalContext(settings, reg, EvalStore(reg.db))
    samples = [
        EvalSample(user_input=QUESTION, reference_sources=["velmora.pdf"]),
        EvalSample(user_input="How many eggs does the lemon cake need?",
                   reference_sources=["page.html"]),
    ]  # fmt: skip
    policy = GatePolicy(primary_metric="mrr_at_10", min_samples=2, guard_metrics=[])
    set_id = ctx.save_set("two", samples)
    decision, champ, run = compare(ctx, set_id, version.id, True, False, policy)
    assert not decision.promote and run.reranker_version_id == version.id
    assert champ.reranker_version_id is None and "reranker v" in run.versions
    assert reg.get(version.id).status == "rejected" and reg.active("reranker").id == seeded.id


def test_cli_trains_a_reranker_job_with_retrieved_negatives_and_registers_it(
    world, monkeypatch, capsys, tmp_path
):
    from core.jobstore import JobStore
    from finetune.embedding.cli import main as embedding_main
    from finetune.rerank.__main__ import main

    settings, reg, *_ = world
    monkeypatch.setenv("RAG_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("RAG_DATABASE__URL", settings.database.url or "")
    monkeypatch.setenv("RAG_APP__DOCS_DIR", str(settings.app.docs_dir))
    save_llamaindex(codename_pairs(TRAIN_TEMPLATES), tmp_path / "pairs.json")
    args = ["--no-progress", "build", "--headings", "--cloze", "--negatives", "0"]
    assert embedding_main([*args, "--file", str(tmp_path / "pairs.json"), "--name", "mix"]) == 0
    capsys.readouterr()
    train = ["--no-progress", "train", "mix", "--max-steps", "2", "--max-length", str(LENGTH)]
    assert main([*train, "--batch-size", "4", "--negatives", "2"]) == 0
    out = capsys.readouterr().out
    # Corpus pairs take their negatives from what the retriever ranks; file pairs (whose
    # passages are not in the collection) from their own passages.
    assert "from the app's retriever" in out and "registered as candidate reranker v" in out
    (cand,) = reg.versions("reranker", status="candidate")
    assert Path(cand.spec["reranker"]["model_dir"]).is_dir()
    # Served at the window it was trained at, whatever the settings' default.
    assert cand.spec["reranker"]["max_length"] == LENGTH
    assert cand.spec["reranker"]["focus"] is True  # served reading as it learned
    negatives = cand.provenance["negatives"]
    assert negatives["retrieved"] > 0 and negatives["mined"] == 48
    assert cand.provenance["train_question_keys"] and "file" in cand.provenance["recipe"]
    db = reg.db
    (job,) = JobStore(db).jobs()
    assert job.method == "reranker" and job.status == "succeeded"
    assert job.candidate_version_id == cand.id and JobStore(db).metrics(job.id)

    # Refusals say why and create no job.
    assert main(["train", "mix", "--loss", "pointwise"]) == 2
    assert "unknown loss 'pointwise'" in capsys.readouterr().err
    assert main(["train", "mix", "--negatives", "0"]) == 2
    assert main(["train", "no-such-dataset"]) == 2
    assert main(["train", "mix", "--base", str(tmp_path / "nowhere")]) == 2
    assert "holds no model to start from" in capsys.readouterr().err
    assert len(JobStore(db).jobs()) == 1


def test_a_cancelled_reranker_job_stops_after_the_step(world, tmp_path):
    from core.jobstore import JobStore
    from finetune.context import FineTuneContext
    from finetune.embedding.service import PairsRequest, build_pairs
    from finetune.rerank.job import RerankRequest, launch_reranker, run_reranker

    settings, reg, *_ = world
    store = JobStore(reg.db)
    ctx = FineTuneContext(settings, store, reg)
    save_llamaindex(codename_pairs(TRAIN_TEMPLATES), tmp_path / "pairs.json")
    build_pairs(ctx, PairsRequest(name="cn", files=[tmp_path / "pairs.json"], negatives=0))
    request = RerankRequest(dataset_id="cn", max_length=LENGTH, batch_size=4, negatives=1)
    job = launch_reranker(ctx, request, wait=False)  # claimed for this process's worker
    # Its trainer is this process's: the cancel is asked, not done, until the trainer sees it
    # (a claim under the process's own holder used to pass for "nobody trains it").
    from finetune.service import cancel_job

    asked = cancel_job(ctx, job.id)
    assert asked.cancel_requested and not asked.done
    done = run_reranker(ctx, job.id)
    assert done.status == "cancelled" and done.candidate_version_id is None
    assert store.events(job.id)[-1].message.startswith("cancelled by an admin")
    assert not reg.versions("reranker", status="candidate")


def test_a_question_longer_than_the_window_is_cut_not_refused(trained, tmp_path):
    long_question = " ".join(["which reservoir pumps lift water at night"] * 40)
    scorer = CrossEncoderScorer(trained, "onnx-int8", LENGTH, tmp_path)
    scores = scorer.score(long_question, ["The reservoir pumps lift water.", "Payroll runs."])
    assert scores.shape == (2,) and np.isfinite(scores).all()


def test_a_reranker_that_cannot_load_or_fails_never_stops_an_answer(world, trained, tmp_path):
    import shutil

    _, reg, log, live, _ = world
    folder = tmp_path / "copy"
    shutil.copytree(trained, folder)
    cand = reg.register("reranker", "copy", {"reranker": {"model_dir": str(folder)}})
    reg.promote(cand.id)
    list(live.ask("s", QUESTION))
    assert live.current().retriever.reranking is not None
    # It fails while answering (its ONNX session breaks): the retrieval order answers.
    live.current().retriever.reranking.scorer._session = None
    last = list(live.ask("s", QUESTION))[-1]
    assert last.sources and "velmora" in last.sources[0].source.lower()
    # Its folder is gone when the app (re)starts: answered without it, and the turn says so.
    shutil.rmtree(folder)
    fresh = LivePipeline(live.settings, reg, log, system_prompt(live.settings), EmbeddingCache())
    last = list(fresh.ask("s", QUESTION))[-1]
    assert last.sources and fresh.current().retriever.reranking is None
    assert sorted(log.turns(), key=lambda t: t.id)[-1].reranker_version_id is None


def test_negatives_are_retrieved_passages_never_the_answer_and_as_many_for_each(world, embed_id):
    from core.index.store import chroma_client, open_collection
    from finetune.embedding.data import from_headings, from_inverse_cloze
    from finetune.rerank.data import _source_chunk, add_negatives

    settings, reg, *_ = world
    collection = open_collection(chroma_client(settings), settings.chroma.collection, embed_id)
    data = from_headings(collection, min_words=1).merge(from_inverse_cloze(collection))
    assert len(data) >= 4
    counts = add_negatives(settings, reg, data, 2)
    assert counts["retrieved"] == len(data) and counts["mined"] == 0
    for qid, query in data.queries.items():
        negatives = data.negatives[qid]
        answer = {_source_chunk(d) for d in data.relevant_docs[qid]}
        assert len(negatives) == len(set(negatives)) == 2
        assert not answer & {_source_chunk(d) for d in negatives}
        # An inverse-cloze sentence is never found again in its negatives.
        assert all(query not in data.corpus[d] for d in negatives)
    # A passage shown with an answer rated up is passed over: the next retrieved one replaces it.
    qid = next(iter(data.queries))
    first = _source_chunk(data.negatives[qid][0])
    data.shown[qid] = [first]
    add_negatives(settings, reg, data, 2)
    assert first not in {_source_chunk(d) for d in data.negatives[qid]}
    assert len(set(data.negatives[qid])) == 2
    from core.errors import RagError

    with pytest.raises(RagError, match="fewer than 500 passages"):
        add_negatives(settings, reg, data, 500)


def test_the_eval_cli_registers_and_runs_a_reranker(world, trained, monkeypatch, capsys, tmp_path):
    from eval.__main__ import main

    settings, reg, *_ = world
    monkeypatch.setenv("RAG_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("RAG_DATABASE__URL", settings.database.url or "")
    monkeypatch.setenv("RAG_APP__DOCS_DIR", str(settings.app.docs_dir))
    spec = json.dumps({"reranker": {"model_dir": str(trained)}})
    assert main(["register", "--kind", "reranker", "--name", "copied in", "--spec", spec]) == 0
    (cand,) = reg.versions("reranker", status="candidate")
    golden = tmp_path / "golden.jsonl"
    golden.write_text(json.dumps({"user_input": QUESTION, "reference_sources": ["velmora.pdf"]}))
    assert main(["run", "--set", str(golden), "--reranker", str(cand.id)]) == 0
    assert f"reranker v{cand.id}" in capsys.readouterr().out
