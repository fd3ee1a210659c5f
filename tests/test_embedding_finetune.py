"""Embedding fine-tuning: training pairs from every source (malformed input refused with a reason),
hard negatives that never drop a query, a small real training run of the packaged model whose
held-out paraphrases retrieve better, the query adapter likewise, and a registered candidate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.db.database import open_database
from core.embedding.window import packaged_model_dir
from core.jobstore import JobStore
from core.openai_api import ModelClient
from core.settings import LLMSettings
from finetune.embedding.data import (
    DataError,
    PairSet,
    cited_chunks,
    from_headings,
    from_inverse_cloze,
    load_llamaindex,
    mine_negatives,
    read_dataset,
    save_llamaindex,
    write_dataset,
)
from finetune.embedding.evaluate import evaluate_model, holdout_split, retrieval_metrics
from finetune.embedding.train import TrainConfig, load_model, train_model
from tests.support.embedding_pairs import HELD_OUT_TEMPLATES, TRAIN_TEMPLATES, codename_pairs

WINDOW = 64  # word pieces: the test texts are short, and short sequences train fast


@pytest.fixture(scope="module")
def base_model():
    return load_model(packaged_model_dir(), WINDOW)


# -- pure pieces -------------------------------------------------------------------------------


def test_retrieval_metrics_rank_the_first_relevant_hit():
    ranked = [["a", "b", "c"], ["x", "y", "gold"], ["n1", "n2"]]
    relevant = [{"a"}, {"gold"}, {"missing"}]
    m = retrieval_metrics(ranked, relevant)
    assert m["hit_at_1"] == pytest.approx(1 / 3)
    assert m["hit_at_5"] == pytest.approx(2 / 3)
    assert m["mrr_at_10"] == pytest.approx((1 + 1 / 3) / 3)
    assert m["ndcg_at_10"] == pytest.approx((1 + 1 / np.log2(4)) / 3)


def test_holdout_keeps_questions_about_one_passage_on_one_side():
    data = codename_pairs(TRAIN_TEMPLATES)
    train, held = holdout_split(data, share=0.25, seed=1)
    assert set(train).isdisjoint(held) and len(train) + len(held) == len(data)
    held_docs = {data.relevant_docs[q][0] for q in held}
    assert held_docs.isdisjoint(data.relevant_docs[q][0] for q in train)
    assert holdout_split(data, 0.25, seed=1) == (train, held)  # seeded


def test_cited_chunks_are_quotes_else_bracket_markers():
    from core.records import SourceRef

    refs = [
        SourceRef(chunk_id=f"c{i}", source="s", score=0.5, text="t", quotes=q)
        for i, q in enumerate([[], ["a quote"], []])
    ]
    assert cited_chunks("extractive", refs) == ["c1"]
    # An extractive answer leads with its best quote's passage, not the first retrieved: the
    # passages it quoted come in the order it cites them.
    refs[2].quotes = ["the best quote"]
    assert cited_chunks("> the best quote [3]\n\n> a quote [2]", refs) == ["c2", "c1"]
    # A number in brackets inside a quote is the document's footnote, not a citation.
    assert cited_chunks("> see note [3] of the report [2]\n\n> the best [3]", refs) == ["c1", "c2"]
    assert cited_chunks("no markers", refs) == ["c1", "c2"]
    for r in refs:
        r.quotes = []
    assert cited_chunks("As said [3] and [1][3], not [9].", refs) == ["c2", "c0"]
    assert cited_chunks("No citation at all.", refs) == []


# -- files: malformed input is refused with a reason, nothing half-written -----------------------


def test_llamaindex_file_round_trips_and_bad_files_say_what_is_wrong(tmp_path):
    data = codename_pairs(TRAIN_TEMPLATES)
    save_llamaindex(data, tmp_path / "ok.json")
    back = load_llamaindex(tmp_path / "ok.json")
    assert back.queries == data.queries and back.relevant_docs == data.relevant_docs

    KEYS = ("queries", "corpus", "relevant_docs")
    cases = {
        "not.json": ("{not json", "is not JSON"),
        "keys.json": (json.dumps({"queries": {}}), "needs the keys"),
        "dangling.json": (
            json.dumps({"queries": {"q": "x?"}, "corpus": {}, "relevant_docs": {"q": ["d"]}}),
            "not in corpus",
        ),
        "empty.json": (json.dumps({key: {} for key in KEYS}), "no queries"),
        "types.json": (json.dumps({**{key: {} for key in KEYS}, "queries": [1]}), "malformed"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(DataError, match=message):
            load_llamaindex(tmp_path / name)
    with pytest.raises(DataError, match="cannot read"):
        load_llamaindex(tmp_path / "absent.json")


def test_dataset_card_records_sources_and_detects_an_edited_file(tmp_path):
    data = codename_pairs(TRAIN_TEMPLATES)
    card = write_dataset(data, tmp_path / "set", "set", skipped={"cited nothing": 2})
    again, card2 = read_dataset(tmp_path / "set")
    assert card2 == card and len(again) == len(data) == card.pairs
    assert card.by_source == {"file": len(data)} and card.dropped == {"cited nothing": 2}
    assert len(card.train_question_keys) == len(data)
    with pytest.raises(DataError, match="no training pairs"):
        write_dataset(PairSet(), tmp_path / "none", "none")
    assert not (tmp_path / "none" / "card.json").exists()
    (tmp_path / "set" / "pairs.json").write_text((tmp_path / "set" / "pairs.json").read_text()[:-1])
    with pytest.raises(DataError, match="does not match its card"):
        read_dataset(tmp_path / "set")


def test_datasets_source_maps_question_and_passage_columns(tmp_path):
    from finetune.embedding.data import from_dataset

    path = tmp_path / "sciq.csv"
    path.write_text(
        "question,support\nWhat gas do plants absorb?,Plants absorb carbon dioxide.\n"
        ",A row without a question is skipped.\n"
    )
    data = from_dataset(str(path))
    assert list(data.queries.values()) == ["What gas do plants absorb?"]
    assert data.sources == {"dataset:0": "dataset"}
    with pytest.raises(DataError, match="no column 'answer'"):
        from_dataset(str(path), text_field="answer")
    with pytest.raises(DataError, match="no such file"):
        from_dataset(str(tmp_path / "absent.csv"))


# -- pairs from the index and the chat log -------------------------------------------------------

DOCS = {
    "pumps.md": "# Reservoir pumps\n\n## Night pumping schedule\n\nThe pumps lift water into "
    "the hill district at night. Power is cheaper after midnight. The tanks are full by six "
    "in the morning.\n\n## Pump maintenance log\n\nSeals are replaced every spring. The "
    "engineers record vibration levels each week. A spare motor is kept on site.\n",
    "ferry.md": "# Ferry timetable\n\n## Winter crossing times\n\nThe ferry runs hourly in "
    "winter. When the river freezes, the crossing stops entirely. Buses replace the ferry "
    "during that time.\n",
}


@pytest.fixture
def indexed(embedded_settings, embed_model, embed_id, tmp_path):
    from core.index.store import chroma_client, open_collection
    from ingest import ingest_paths

    root = tmp_path / "docs"
    root.mkdir()
    for name, text in DOCS.items():
        (root / name).write_text(text)
    settings = embedded_settings
    collection = open_collection(chroma_client(settings), settings.chroma.collection, embed_id)
    ingest_paths(settings, collection, embed_model, paths=[root], progress=False)
    return settings, collection


def test_headings_and_inverse_cloze_pairs_from_the_index(indexed):
    _, collection = indexed
    headings = from_headings(collection)
    queries = set(headings.queries.values())
    # Short sections of one page are packed into one chunk under the heading they share.
    assert queries == {"Reservoir pumps", "Ferry timetable", "Winter crossing times"}
    for qid, query in headings.queries.items():
        assert headings.sources[qid] == "headings"
        assert query in headings.corpus[headings.relevant_docs[qid][0]]  # its own section

    cloze = from_inverse_cloze(collection, seed=3)
    assert len(cloze) >= 2
    for qid, sentence in cloze.queries.items():
        positive = cloze.corpus[cloze.relevant_docs[qid][0]]
        assert sentence not in positive and len(sentence.split()) >= 6


def test_chatlog_pairs_are_rated_up_turns_with_the_chunks_they_cited(indexed, sql_url):
    from core.chatlog import ChatLog
    from core.records import SourceRef
    from finetune.embedding.data import from_chatlog
    from rag.synthesis import NOT_COVERED

    _, collection = indexed
    got = collection.get(include=["documents"])
    cid, doc = got["ids"][0], got["documents"][0]
    log = ChatLog(open_database(sql_url))

    def turn(
        question: str, quotes: list[str], chunk: str, rating: str | None, answer: str = "answer"
    ) -> None:
        tid = log.start_turn("s", question)
        ref = SourceRef(chunk_id=chunk, source="x", score=0.9, text=doc, quotes=quotes)
        log.finish_turn(
            tid, answer=answer, condensed_question=None, contexts=[ref], model_id="m",
            provider="extractive", prompt_version="1", latency_ms=1.0,
        )  # fmt: skip
        if rating:
            log.set_feedback(tid, rating)

    turn("When do the pumps run?", ["q"], cid, "up")
    # Two passages quoted, the second retrieved cited first: that one is the first positive.
    tid = log.start_turn("s", "Which pump runs first?")
    refs = [
        SourceRef(chunk_id=c, source="x", score=0.9, text=d, quotes=["q"])
        for c, d in zip(got["ids"][:2], got["documents"][:2], strict=True)
    ]
    log.finish_turn(
        tid, answer="> q [2]\n\n> q [1]", condensed_question=None, contexts=refs, model_id="m",
        provider="extractive", prompt_version="1", latency_ms=1.0,
    )  # fmt: skip
    log.set_feedback(tid, "up")
    # Two passages shown, one quoted: the other may be what helped, so it is kept as "shown"
    # (never mined as the question's negative), not as a positive.
    tid = log.start_turn("s", "Where is the pump house?")
    refs = [
        SourceRef(chunk_id=c, source="x", score=0.9, text=d, quotes=["q"] if n == 1 else [])
        for n, (c, d) in enumerate(zip(got["ids"][:2], got["documents"][:2], strict=True))
    ]
    log.finish_turn(
        tid, answer="> q [2]", condensed_question=None, contexts=refs, model_id="m",
        provider="extractive", prompt_version="1", latency_ms=1.0,
    )  # fmt: skip
    log.set_feedback(tid, "up")
    turn("Rated down", ["q"], cid, "down")
    turn("Not rated", ["q"], cid, None)
    turn("Cited nothing", [], cid, "up")
    turn("Chunk since deleted", ["q"], "gone-0001", "up")
    # Rated up, but the answer says the documents do not cover it and shows the closest passage:
    # that passage is not the answer, so it is no positive.
    turn("How do I roll back?", ["q"], cid, "up", answer=f"{NOT_COVERED}\n\n> q [1]")
    data, skipped = from_chatlog(log, collection)
    assert list(data.queries.values()) == [
        "When do the pumps run?",
        "Which pump runs first?",
        "Where is the pump house?",
    ]
    first, second, third = data.queries
    assert data.relevant_docs[first] == [cid]
    assert data.relevant_docs[second] == [got["ids"][1], got["ids"][0]]
    assert data.relevant_docs[third] == [got["ids"][1]]
    assert data.shown == {third: [got["ids"][0]]}
    assert skipped == {
        "cited nothing": 1,
        "cited chunks no longer indexed": 1,
        "said not covered": 1,
    }
    log.db.dispose()


# -- hard negatives, training, the adapter --------------------------------------------------------


def test_mined_negatives_never_drop_a_query(base_model):
    data = codename_pairs(TRAIN_TEMPLATES)
    counts = mine_negatives(data, base_model, num_negatives=2)
    assert counts["mined"] + counts["fallback"] == len(data)
    for qid in data.queries:
        negs = data.negatives[qid]
        assert len(negs) == 2 and not set(negs) & set(data.relevant_docs[qid])


@pytest.mark.parametrize("lexical_weight", [0.0, 0.3])
def test_no_negative_is_another_positive_of_the_same_question(base_model, lexical_weight):
    from finetune.embedding.data import PairSet

    # An answer quoted two passages and was rated up: both are positives. Training reads the
    # first; the second, the closest text to the question after it, must not become its negative.
    data = PairSet()
    data.add(
        "chatlog:1",
        "When do the reservoir pumps run?",
        {
            "a": "The reservoir pumps run every night from midnight until five in the morning.",
            "b": "The reservoir pump schedule is posted at the pump house.",
        },
        "chatlog",
    )
    data.add(
        "chatlog:2", "When does the ferry leave?", {"c": "The ferry leaves at noon."}, "chatlog"
    )
    for n, text in enumerate(
        ["Lighthouse keepers log the weather.", "The bakery opens at seven.", "Trams run late."]
    ):
        data.corpus[f"x{n}"] = text
    counts = mine_negatives(
        data, base_model, num_negatives=1, relative_margin=0.0, lexical_weight=lexical_weight
    )
    assert counts["mined"] + counts["fallback"] == 2
    assert data.negatives["chatlog:1"] and not {"a", "b"} & set(data.negatives["chatlog:1"])


def test_no_negative_is_a_passage_shown_with_a_rated_up_answer(base_model):
    from finetune.embedding.data import PairSet

    # The answer quoted one passage; another was shown beside it (a source card), and it is the
    # text closest to the question after the positive. The rating endorsed the answer with its
    # sources, so that passage is passed over and the next candidate is mined instead.
    data = PairSet()
    data.add(
        "chatlog:1",
        "When do the reservoir pumps run?",
        {"a": "The reservoir pumps run every night from midnight until five in the morning."},
        "chatlog",
    )
    data.shown["chatlog:1"] = ["b", "not-in-the-corpus"]
    data.add(
        "chatlog:2",
        "Where is the reservoir pump schedule posted?",
        {"b": "The reservoir pump schedule is posted at the pump house."},
        "chatlog",
    )
    for n, text in enumerate(
        ["Lighthouse keepers log the weather.", "The bakery opens at seven.", "Trams run late."]
    ):
        data.corpus[f"x{n}"] = text
    unfiltered = data.model_copy(deep=True)
    unfiltered.shown.clear()
    mine_negatives(unfiltered, base_model, num_negatives=1, relative_margin=0.0)
    assert unfiltered.negatives["chatlog:1"] == ["b"]  # what the miner takes without the rule
    counts = mine_negatives(data, base_model, num_negatives=1, relative_margin=0.0)
    assert counts == {"mined": 2, "fallback": 0}
    assert len(data.negatives["chatlog:1"]) == 1
    assert not {"a", "b"} & set(data.negatives["chatlog:1"])
    assert data.negatives["chatlog:2"] != ["b"]  # its own positive, shown to the other


def test_negatives_are_mined_from_the_ranking_the_app_serves(base_model):
    """The app ranks by keywords and meaning together, so the passage it confuses with the right
    one may share a rare word with the question rather than its meaning: mined with the app's
    keyword share, that passage is the negative; by meaning alone, a paraphrase of the answer."""
    from finetune.embedding.data import PairSet

    def pairs() -> PairSet:
        data = PairSet()
        data.add(
            "chatlog:1",
            "When does the Velmora ferry leave?",
            {"a": "The Velmora ferry leaves the harbour at noon every day."},
            "chatlog",
        )
        data.add(
            "chatlog:2", "Who bakes the bread?", {"b": "Bread is baked by Orsolya."}, "chatlog"
        )
        for n, text in enumerate(
            [
                "Boats depart from the pier at midday.",
                "The Velmora town council meets on Mondays.",
                "Trams run late.",
                "Lighthouse keepers log the weather.",
            ]
        ):
            data.corpus[f"x{n}"] = text
        return data

    dense, hybrid = pairs(), pairs()
    mine_negatives(dense, base_model, num_negatives=1, relative_margin=0.0)
    counts = mine_negatives(
        hybrid, base_model, num_negatives=1, relative_margin=0.0, lexical_weight=0.3
    )
    assert counts == {"mined": 2, "fallback": 0}
    assert dense.negatives["chatlog:1"] == ["x0"]  # the paraphrase, by meaning alone
    assert hybrid.negatives["chatlog:1"] == ["x1"]  # the one the app ranks next: "Velmora"
    assert "b" not in hybrid.negatives["chatlog:2"]


@pytest.mark.slow
def test_training_improves_held_out_paraphrases_and_the_model_saves_and_loads(base_model, tmp_path):
    train = codename_pairs(TRAIN_TEMPLATES)  # 48 pairs
    held = codename_pairs(HELD_OUT_TEMPLATES)  # questions never trained on
    assert set(train.queries.values()).isdisjoint(held.queries.values())
    mine_negatives(train, base_model, num_negatives=1)
    before = evaluate_model(held, base_model)
    cfg = TrainConfig(
        epochs=1, batch_size=8, learning_rate=2e-4, max_seq_length=WINDOW, warmup_ratio=0.0,
        seed=0,
    )  # fmt: skip
    assert cfg.loss == "gist"  # the default: the base model, frozen, vets the negatives
    result = train_model(packaged_model_dir(), train, tmp_path / "model", cfg, progress=False)
    loaded = load_model(result.model_dir, WINDOW)  # from disk, as the app would
    after = evaluate_model(held, loaded)
    assert after["mrr_at_10"] > before["mrr_at_10"] + 0.2, (before, after)
    assert after["hit_at_5"] > before["hit_at_5"]
    curve = json.loads((result.model_dir / "loss_curve.json").read_text())["epoch_loss"]
    assert len(curve) == result.steps == 6 and (result.model_dir / "loss_curve.html").is_file()
    assert json.loads((result.model_dir / "train_config.json").read_text())["pairs"] == 48
    # The base model is untouched: it still scores as before.
    assert evaluate_model(held, load_model(packaged_model_dir(), WINDOW)) == before


def test_the_default_loss_is_guided_by_the_base_model_frozen():
    """GISTEmbed: the guide is a second copy of the base, read at the same window (so texts are
    not tokenised twice), at the temperature the other losses' scale sets; the trained model and
    its guide share no weights, so training moves only the candidate."""
    from sentence_transformers.sentence_transformer.losses import GISTEmbedLoss

    from finetune.embedding.train import build_loss

    model = load_model(packaged_model_dir(), 64)
    loss = build_loss(model, TrainConfig(max_seq_length=64), packaged_model_dir())
    assert isinstance(loss, GISTEmbedLoss) and not loss.must_retokenize
    assert loss.guide.max_seq_length == 64 and loss.temperature == pytest.approx(1 / 20)
    ours = {p.data_ptr() for p in model.parameters()}
    assert ours.isdisjoint(p.data_ptr() for p in loss.guide.parameters())
    assert not any(p.requires_grad for p in loss.guide.parameters())  # never in the optimiser


def test_cached_and_symmetric_losses_train(tmp_path):
    train = codename_pairs(TRAIN_TEMPLATES[:1])
    cfg = TrainConfig(
        loss="cached-symmetric", epochs=1, batch_size=24, mini_batch_size=8, max_seq_length=32
    )
    result = train_model(packaged_model_dir(), train, tmp_path / "m", cfg, progress=False)
    assert result.steps == 1 and (tmp_path / "m" / "model.safetensors").is_file()
    # The symmetric MNRL of earlier recipes (`--loss symmetric`) still trains.
    cfg = TrainConfig(loss="symmetric", epochs=1, batch_size=24, max_seq_length=32)
    result = train_model(packaged_model_dir(), train, tmp_path / "s", cfg, progress=False)
    assert result.steps == 1 and (tmp_path / "s" / "model.safetensors").is_file()
    with pytest.raises(Exception, match="unknown loss"):
        train_model(packaged_model_dir(), train, tmp_path / "x", TrainConfig(loss="nope"))


def test_query_adapter_improves_held_out_paraphrases_and_serves_through_the_app_model(
    base_model, embed_model, tmp_path
):
    from core.embedding.adapter import AdaptedEmbedding, load_adapter
    from finetune.embedding.adapter import AdapterConfig, save_adapter, train_adapter

    train, held = codename_pairs(TRAIN_TEMPLATES), codename_pairs(HELD_OUT_TEMPLATES)
    mine_negatives(train, base_model)
    adapter, curve = train_adapter(base_model, train, AdapterConfig(epochs=20), progress=False)
    assert curve[-1][1] < curve[0][1]
    before = evaluate_model(held, base_model)
    after = evaluate_model(held, base_model, adapter=adapter)
    assert after["mrr_at_10"] > before["mrr_at_10"] + 0.2, (before, after)

    save_adapter(adapter, curve, tmp_path / "adapter", "local:test")
    loaded = load_adapter(tmp_path / "adapter")
    vecs = base_model.encode(["What is project Zentrix about?"])
    assert np.allclose(loaded.apply(vecs), adapter.apply(vecs), atol=1e-6)

    served = AdaptedEmbedding(embed_model, loaded)
    q = "Which topic does the Zentrix initiative deal with?"
    assert np.allclose(served.get_text_embedding(q), embed_model.get_text_embedding(q))
    want = loaded.apply([embed_model.get_query_embedding(q)])[0]
    assert np.allclose(served.get_query_embedding(q), want, atol=1e-5)

    (tmp_path / "adapter" / "adapter.safetensors").write_bytes(b"garbage")
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot read the query adapter"):
        load_adapter(tmp_path / "adapter")


# -- the command line: build, train, a registered candidate --------------------------------------


def test_a_run_too_short_to_warm_up_learns_from_its_first_step():
    """Warm-up starts the learning rate at 0: in a one-step run (14 pairs, 32 a step) that step
    would change nothing and register a candidate equal to its base, so short runs skip it."""
    from finetune.embedding.train import TrainConfig, warmup

    cfg = TrainConfig(epochs=1, batch_size=32)
    assert warmup(0.1, 14, cfg, None) == 0  # one step
    assert warmup(0.1, 14, TrainConfig(epochs=1, batch_size=4), None) == 0  # four steps
    assert warmup(0.1, 551, TrainConfig(epochs=2, batch_size=32), None) == 0.1  # 36 steps
    assert warmup(0.1, 551, cfg, 5) == 0  # stopped after five


def test_training_reads_256_word_pieces_unless_asked_or_the_model_reads_fewer():
    """The measured recipe trains at 256 and reads at 512: training at the model's 512 would take
    about four times the attention memory (the tab's default batch then ran out of memory)."""
    from finetune.embedding.job import TrainRequest, training_window

    assert training_window(TrainRequest(dataset_id=1), 512) == 256
    assert training_window(TrainRequest(dataset_id=1), 128) == 128
    assert training_window(TrainRequest(dataset_id=1, max_seq_length=384), 512) == 384


def test_candidates_are_read_at_the_window_the_app_reads_the_active_model_at():
    """The packaged model is read at 512 by the app, though its folder says 256: a candidate
    trained from it is evaluated and registered at 512 too, unless a window is asked for."""
    from core.settings import Settings
    from finetune.embedding.service import read_window

    assert read_window(Settings()) == 512
    settings = Settings()
    settings.embedding.max_seq_length = 128
    assert read_window(settings) == 128


@pytest.mark.slow
def test_cli_builds_trains_and_registers_a_candidate(tmp_path, monkeypatch, capsys):
    from core.questions import question_key
    from core.registry import Registry
    from finetune.embedding.cli import main

    data_dir = tmp_path / "data"
    monkeypatch.setenv("RAG_DATA_DIR", str(data_dir))
    save_llamaindex(codename_pairs(TRAIN_TEMPLATES), tmp_path / "pairs.json")
    pairs = str(tmp_path / "pairs.json")
    assert main(["--no-progress", "build", "--file", pairs, "--name", "cn"]) == 0
    _, card = read_dataset(data_dir / "finetune" / "embedding" / "datasets" / "cn")
    assert card.negatives["mined"] + card.negatives["fallback"] == 48
    assert card.inputs["files"][0]["sha256"]

    args = ["--no-progress", "train", "cn", "--epochs", "1", "--batch-size", "8"]
    assert main([*args, "--max-seq-length", "64", "--holdout", "0.25"]) == 0
    db = open_database(f"sqlite:///{(data_dir / 'rag.db').resolve()}")
    reg = Registry(db)
    (cand,) = reg.versions("embedding", status="candidate")
    assert cand.spec["chroma"]["collection"].startswith("docs-ft-")
    # Trained at 64 word pieces, read at the active model's window as the active model is.
    assert cand.spec["embedding"]["max_seq_length"] == 512
    # Served on the active model's backend (int8 ONNX unless the CPU has AMX), so the gate
    # compares the fine-tuning alone.
    from core.embedding.providers import DEFAULT_BACKEND

    assert cand.spec["embedding"]["backend"] == DEFAULT_BACKEND
    model_dir = Path(cand.spec["embedding"]["model"])
    assert (model_dir / "model.safetensors").is_file() and (model_dir / "heldout.json").is_file()
    assert cand.provenance["dataset_card_sha256"] == card.card_hash()
    assert cand.provenance["recipe"] == ["file"]
    held = list(load_llamaindex(model_dir / "heldout.json").queries.values())
    trained = set(cand.provenance["train_question_keys"])
    assert len(trained) == 36 and len(held) == 12
    assert not trained & {question_key(q) for q in held}
    # It trained as a job in the job store, with a loss per step and its candidate.
    (job,) = JobStore(db).jobs()
    assert job.method == "embedding" and job.status == "succeeded"
    assert job.candidate_version_id == cand.id and JobStore(db).metrics(job.id)
    out = capsys.readouterr().out
    assert "diagnostic on 12 held-out pairs" in out and "not evidence" in out

    # Held-out figures of champion vs candidate: shown as a diagnostic, not as evidence.
    assert main(["evaluate", str(cand.id)]) == 0
    assert "training diagnostic, not evidence" in capsys.readouterr().out

    # The held-out pairs may not decide its promotion: the gate refuses them, saying why.
    from eval.__main__ import main as eval_main

    heldout_set = tmp_path / "heldout.jsonl"
    heldout_set.write_text(
        "".join(json.dumps({"user_input": q}) + "\n" for q in held), encoding="utf-8"
    )
    assert eval_main(["compare", "--candidate", str(cand.id), "--set", str(heldout_set)]) == 2
    assert "training diagnostic, not evidence" in capsys.readouterr().err
    assert reg.get(cand.id).status == "candidate"

    # The adapter variant: registered over the active model, on the active collection.
    assert main(["--no-progress", "adapter", "cn", "--epochs", "5", "--holdout", "0.25"]) == 0
    adapter = reg.versions("embedding", status="candidate")[-1]
    assert "chroma" not in adapter.spec and adapter.spec["embedding"]["query_adapter"]
    assert adapter.provenance["dataset_card_sha256"] == card.card_hash()

    assert main(["build", "--file", str(tmp_path / "absent.json")]) == 2  # a clear error, exit 2
    assert main(["train", "no-such-dataset"]) == 2
    assert "no dataset named 'no-such-dataset'" in capsys.readouterr().err
    assert len(JobStore(db).jobs()) == 1  # a refused launch leaves no job behind


@pytest.mark.slow
def test_an_embedding_job_killed_mid_training_resumes_from_its_checkpoint_and_cancels(
    tmp_path, monkeypatch
):
    """A training job whose process stops mid-training is resumed (as the app does after a
    restart) from its last checkpoint, not from the start; a cancel asked before it trains (or
    while it does) stops it after the first step, with no candidate registered."""
    import finetune.embedding.train as training
    from core.registry import Registry
    from core.settings import Settings
    from finetune.context import FineTuneContext
    from finetune.embedding.job import TrainRequest, launch_training
    from finetune.embedding.service import PairsRequest, build_pairs
    from finetune.jobs import resume

    monkeypatch.setattr(training, "CHECKPOINT_STEPS", 2)
    settings = Settings(data_dir=tmp_path / "data")
    settings.app.docs_dir = tmp_path / "no-docs"
    db = open_database(f"sqlite:///{(tmp_path / 'rag.db').resolve()}")
    reg = Registry(db)
    reg.seed(settings)
    store = JobStore(db)
    ctx = FineTuneContext(settings, store, reg)
    save_llamaindex(codename_pairs(TRAIN_TEMPLATES), tmp_path / "pairs.json")
    build_pairs(ctx, PairsRequest(name="cn", files=[tmp_path / "pairs.json"], negatives=0))
    request = TrainRequest(
        dataset_id="cn", epochs=2, batch_size=8, mini_batch_size=8, max_seq_length=64, holdout=0
    )

    def die_at_step_3(step: int, total: int) -> None:
        if step == 3:
            raise KeyboardInterrupt  # the process is stopped mid-training

    with pytest.raises(KeyboardInterrupt):
        launch_training(ctx, request, progress=die_at_step_3)
    [job] = store.jobs()
    assert job.status == "running" and job.candidate_version_id is None  # nobody finished it
    # The jobs table says where it stopped: the first event gave the total before step 1.
    from finetune.report import job_row

    assert store.events(job.id)[0].message == "training 12 steps"
    assert job_row(job, store.events(job.id))[3] == "running: step 2 of 12"
    [job] = resume(ctx)
    assert job.status == "succeeded" and job.candidate_version_id is not None
    assert "resuming from the last checkpoint" in [e.message for e in store.events(job.id)]
    assert "training 12 steps, from step 2" in [e.message for e in store.events(job.id)]
    steps = [e.step for e in store.metrics(job.id) if "train_loss" in e.metrics]
    # Steps 1-2 logged before the stop at step 3; training went on from the checkpoint at step
    # 2 (from the start, step 1 would be logged again): 48 pairs, 6 steps an epoch, 2 epochs.
    assert steps == list(range(1, 13))

    cancelled = launch_training(ctx, request, wait=False)
    store.request_cancel(cancelled.id)
    [done] = resume(ctx)
    assert done.status == "cancelled" and done.error == "cancelled by an admin"
    # Seen after the first step, not after the whole run.
    assert [e.step for e in store.metrics(done.id) if "train_loss" in e.metrics] == [1]
    assert not any(e.message.startswith("trained ") for e in store.events(done.id))
    assert done.candidate_version_id is None and len(reg.versions("embedding", "candidate")) == 1
    db.dispose()


# -- LLM sources, through the real openai SDK against HTTP-level fakes ---------------------------


def _openai():
    import openai

    return openai.OpenAI(api_key="sk-test", max_retries=0)


def test_llm_questions_per_chunk_a_malformed_reply_loses_only_its_chunk(indexed):
    import httpx
    import respx

    from finetune.embedding.data import generate_pairs
    from tests.support import fakes

    _, collection = indexed

    def reply(request: httpx.Request) -> httpx.Response:
        prompt = json.loads(request.content)["messages"][0]["content"]
        if "ferry" in prompt:
            return fakes.completion("Here are two questions: ...")  # not JSON
        return fakes.completion(json.dumps({"questions": ["When do pumps run?", "Why night?"]}))

    with respx.mock(assert_all_mocked=True) as mock:
        mock.post(fakes.OPENAI_CHAT_URL).mock(side_effect=reply)
        data, skipped = generate_pairs(
            collection, ModelClient(_openai(), "gpt-4o-mini", LLMSettings()), min_words=10
        )
    assert set(data.queries.values()) == {"When do pumps run?", "Why night?"}
    assert set(data.sources.values()) == {"generated"}
    assert len(skipped) == 1 and "malformed reply" in skipped[0]

    with respx.mock(assert_all_mocked=True) as mock:
        mock.post(fakes.OPENAI_CHAT_URL).mock(return_value=fakes.error(500, "upstream down"))
        with pytest.raises(
            DataError, match=r"writing questions: the chat model server failed \(500\)"
        ):
            generate_pairs(
                collection, ModelClient(_openai(), "gpt-4o-mini", LLMSettings()), min_words=10
            )


def test_teacher_grades_unrated_turns_and_errors_stop_with_a_reason(indexed, tmp_path):
    import httpx
    import respx

    from core.chatlog import ChatLog
    from core.records import SourceRef
    from finetune.embedding.data import from_chatlog, openai_teacher
    from tests.support import fakes

    _, collection = indexed
    got = collection.get(include=["documents"])
    log = ChatLog(open_database(f"sqlite:///{tmp_path / 'rag.db'}"))
    for question in ("good question", "poor question", "garbled question"):
        tid = log.start_turn("s", question)
        ref = SourceRef(chunk_id=got["ids"][0], source="x", score=0.9, text="t", quotes=["q"])
        log.finish_turn(
            tid, answer="a", condensed_question=None, contexts=[ref], model_id="m",
            provider="extractive", prompt_version="1", latency_ms=1.0,
        )  # fmt: skip

    def grade(request: httpx.Request) -> httpx.Response:
        prompt = json.loads(request.content)["messages"][0]["content"]
        if "garbled" in prompt:
            return fakes.completion("five stars!")
        return fakes.completion(json.dumps({"score": 5 if "good" in prompt else 2}))

    with respx.mock(assert_all_mocked=True) as mock:
        mock.post(fakes.OPENAI_CHAT_URL).mock(side_effect=grade)
        data, skipped = from_chatlog(
            log, collection, teacher=openai_teacher(ModelClient(_openai(), "m", LLMSettings()))
        )
    assert list(data.queries.values()) == ["good question"]
    assert data.sources == {"teacher:1": "teacher"}
    assert skipped == {"teacher graded low": 1, "teacher reply malformed": 1}

    for status in (401, 429):
        with respx.mock(assert_all_mocked=True) as mock:
            mock.post(fakes.OPENAI_CHAT_URL).mock(return_value=fakes.error(status, "no"))
            with pytest.raises(DataError, match="the teacher LLM failed"):
                from_chatlog(
                    log,
                    collection,
                    teacher=openai_teacher(ModelClient(_openai(), "m", LLMSettings())),
                )
    log.db.dispose()


def _bare_context(tmp_path):
    """A fine-tuning context on a fresh SQLite database with the seeded registry, no index."""
    from core.registry import Registry
    from core.settings import Settings
    from finetune.context import FineTuneContext

    settings = Settings(data_dir=tmp_path / "data")
    db = open_database(f"sqlite:///{(tmp_path / 'rag.db').resolve()}")
    reg = Registry(db)
    reg.seed(settings)
    return FineTuneContext(settings, JobStore(db), reg)


def test_too_few_passages_for_hard_negatives_says_what_to_do(tmp_path):
    """Two rated answers citing two passages cannot give each question a hard negative: the
    refusal says what would (more ratings, a corpus source, no negatives), and nothing is kept."""
    from core.errors import RagError
    from finetune.embedding.service import PairsRequest, build_pairs

    ctx = _bare_context(tmp_path)
    store = ctx.store
    two = PairSet()
    two.add("q1", "Who keeps the lighthouse?", {"d1": "Orsolya keeps it."}, "file")
    two.add("q2", "When is the festival?", {"d2": "It is in October."}, "file")
    save_llamaindex(two, tmp_path / "two.json")
    with pytest.raises(RagError, match=r"only 2 distinct passage.*0 hard negatives"):
        build_pairs(ctx, PairsRequest(name="two", files=[tmp_path / "two.json"], negatives=1))
    assert store.datasets() == []
    built = build_pairs(ctx, PairsRequest(name="two", files=[tmp_path / "two.json"], negatives=0))
    assert built.card.pairs == 2
    assert built.card.settings["mined_lexical_weight"] is None  # nothing mined
    two.add("q3", "Who bakes the bread?", {"d3": "Bread is baked by Orsolya."}, "file")
    two.add("q4", "When does the ferry leave?", {"d4": "The ferry leaves at noon."}, "file")
    save_llamaindex(two, tmp_path / "four.json")
    built = build_pairs(ctx, PairsRequest(name="four", files=[tmp_path / "four.json"], negatives=1))
    # Mined from the ranking the app serves: keywords and meaning, at its keyword share.
    assert built.card.settings["mined_lexical_weight"] == ctx.settings.retrieval.lexical_weight


def test_training_on_one_pair_is_refused_before_a_job_exists(tmp_path):
    """One pair teaches nothing (each question learns against the others' passages): pressing
    Train on it is refused in plain words, and no job is left behind to fail later."""
    from core.errors import RagError
    from finetune.embedding.job import TrainRequest, launch_training
    from finetune.embedding.service import PairsRequest, build_pairs

    ctx = _bare_context(tmp_path)
    store = ctx.store
    one = PairSet()
    one.add("q1", "Who keeps the lighthouse?", {"d1": "Orsolya keeps it."}, "file")
    save_llamaindex(one, tmp_path / "one.json")
    built = build_pairs(ctx, PairsRequest(name="one", files=[tmp_path / "one.json"], negatives=0))
    with pytest.raises(RagError, match=r"has 1 training pair\(s\).*at least 2") as refused:
        launch_training(ctx, TrainRequest(dataset_id=built.record.id, max_steps=2))
    assert "MNRL" not in str(refused.value)
    assert store.jobs() == []


def test_held_out_chat_turns_are_evidence_held_out_recipe_pairs_are_not():
    """Held-out pairs a recipe wrote from the corpus (a heading, a passage's sentence, a file of
    generated pairs) are a training diagnostic; held-out rated chat turns are people's questions
    the candidate never trained on, so a chat-log sample holding them may judge it."""
    from datetime import UTC, datetime

    from core.evalstore import EvalSample
    from core.questions import question_key
    from core.records import DatasetCard
    from core.registry import ModelVersion
    from eval.evidence import evidence_refusal
    from finetune.embedding.data import PairSet
    from finetune.embedding.service import provenance_of

    train, held = PairSet(), PairSet()
    train.add("chatlog:1", "Who keeps the lighthouse?", {"a": "Orsolya keeps it."}, "chatlog")
    held.add("chatlog:2", "When is the lantern festival?", {"b": "In October."}, "chatlog")
    held.add("headings:1", "Velmora > Harbour", {"c": "The harbour is small."}, "headings")
    held.add("file:1", "What is the tower made of?", {"d": "Of granite."}, "file")
    card = DatasetCard(kind="embedding", name="mixed", by_source={"chatlog": 2, "headings": 1})
    prov = provenance_of(card, train, "base", {}, held)
    assert prov["heldout_question_keys"] == sorted(
        question_key(q) for q in ("Velmora > Harbour", "What is the tower made of?")
    )
    cand = ModelVersion(
        id=4, kind="embedding", name="c", status="candidate", provenance=prov,
        created_at=datetime.now(UTC),
    )  # fmt: skip
    chat_sample = [EvalSample(user_input="When is the lantern festival?")]
    assert evidence_refusal(cand, chat_sample, {"kind": "chatlog"}) is None
    recipe_sample = [EvalSample(user_input="Velmora > Harbour")]
    assert "not evidence" in evidence_refusal(cand, recipe_sample, {"kind": "file"})
