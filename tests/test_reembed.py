"""Blue/green swap of the embedding model: promotion re-embeds the active collection's chunks into
the candidate's own collection, then switches the registry; the app answers from the old collection
during the re-embed and from the new one right after, rolls back instantly, and a re-embed that
fails midway leaves the old collection active and intact, and a re-run completes it."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from llama_index.core.base.embeddings.base import BaseEmbedding
from pydantic import PrivateAttr

from core.chatlog import ChatLog
from core.db.database import open_database
from core.embedding.window import packaged_model_dir
from core.registry import Registry
from core.settings import Settings
from ingest.reembed import (
    ReembedError,
    collections_in_use,
    drop_collection,
    prepare_version,
    promote_version,
)
from rag.live import EmbeddingCache, LivePipeline
from rag.prompt import system_prompt
from tests.support.corpus import make_corpus

QUESTION = "Who is the lighthouse keeper of Velmora?"
GREEN = "docs-green"


class Interrupted(BaseEmbedding):
    """The real model, with a hook between batches: after `after` batches it either waits for the
    test to let it go on (`gate`) or fails as a crash midway would (`fail`)."""

    _inner: BaseEmbedding = PrivateAttr()
    _after: int = PrivateAttr()
    _fail: bool = PrivateAttr()
    _batches: int = PrivateAttr(default=0)
    _reached: threading.Event = PrivateAttr(default_factory=threading.Event)
    _gate: threading.Event = PrivateAttr(default_factory=threading.Event)

    def __init__(self, inner: BaseEmbedding, after: int, fail: bool = False):
        super().__init__(model_name="interrupted", embed_batch_size=inner.embed_batch_size)
        self._inner, self._after, self._fail = inner, after, fail

    @property
    def inner(self) -> BaseEmbedding:
        return self._inner

    @property
    def reached(self) -> threading.Event:
        return self._reached

    @property
    def gate(self) -> threading.Event:
        return self._gate

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        if self._batches == self._after:
            self.reached.set()
            if self._fail:
                raise RuntimeError("killed midway")
            assert self.gate.wait(60), "the test never let the re-embed go on"
        self._batches += 1
        return self._inner.get_text_embedding_batch(texts)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._get_text_embeddings([text])[0]

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._inner.get_query_embedding(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)


@pytest.fixture(scope="module")
def green_model(tmp_path_factory) -> Path:
    """A second sentence-transformers directory (the packaged files, linked): another model to
    the registry and to Chroma, as a fine-tuned one would be."""
    folder = tmp_path_factory.mktemp("models") / "green"
    folder.mkdir()
    src = packaged_model_dir()
    for item in src.rglob("*"):
        target = folder / item.relative_to(src)
        if item.is_dir():
            target.mkdir(exist_ok=True)
        else:
            target.symlink_to(item)
    return folder


@pytest.fixture(scope="module")
def green_embed(green_model):
    from core.embedding.providers import build_embedding
    from core.settings import EmbeddingSettings

    return build_embedding(EmbeddingSettings(model=str(green_model)))


@pytest.fixture
def world(tmp_path, sql_url, embed_model, embed_id, green_model):
    """Settings with the test corpus ingested into the active collection, the registry seeded,
    a candidate embedding version with its own collection, and the app's live pipeline."""
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
    seed = reg.seed(settings)["embedding"]
    cand = reg.register(
        "embedding",
        "green",
        {"embedding": {"model": str(green_model)}, "chroma": {"collection": GREEN}},
        parent_id=seed.id,
    )
    cache = EmbeddingCache()
    cache.put(settings, embed_model)
    live = LivePipeline(settings, reg, log, system_prompt(settings), cache)
    yield settings, reg, log, live, seed, cand, collection
    log.db.dispose()


def _collections(settings: Settings):
    from core.index.store import chroma_client

    return chroma_client(settings)


def _ask(live: LivePipeline) -> str:
    return list(live.ask("s", QUESTION))[-1].text


@pytest.mark.slow
def test_app_answers_during_the_re_embed_switches_on_promotion_and_rolls_back(world, green_embed):
    settings, reg, log, live, seed, cand, blue = world
    assert "Orsolya Brandt" in _ask(live) and live.collection.name == "docs"
    chunks = blue.count()
    paused = Interrupted(green_embed, after=1)
    outcome: dict = {}
    worker = threading.Thread(
        target=lambda: outcome.update(
            result=promote_version(
                settings, reg, cand.id, "test", progress=False, embed_model=paused, batch=4
            )
        )
    )
    worker.start()
    try:
        assert paused.reached.wait(60)
        # Mid re-embed: the green collection is half built, the app still answers from blue.
        assert 0 < _collections(settings).get_collection(GREEN).count() < chunks
        assert "Orsolya Brandt" in _ask(live) and live.collection.name == "docs"
        assert reg.active("embedding").id == seed.id
    finally:
        paused.gate.set()
    worker.join(60)
    event, report = outcome["result"]
    assert event.version_id == cand.id and report.embedded == report.total == chunks

    # The next question, no restart: the new model over the new collection.
    assert "Orsolya Brandt" in _ask(live) and live.collection.name == GREEN
    assert live.embed_model is not None and live.collection.count() == chunks
    # Rollback is instant: the old collection was kept, nothing is re-embedded.
    reg.rollback("embedding")
    assert "Orsolya Brandt" in _ask(live) and live.collection.name == "docs"
    versions = [t.embedding_version_id for t in log.turns()]
    assert versions == [seed.id, seed.id, cand.id, seed.id]

    # The admin drops what is no longer needed; the active collection is refused.
    with pytest.raises(ReembedError, match="active collection"):
        drop_collection(settings, reg, "docs")
    assert collections_in_use(settings, reg)[GREEN] == [f"embedding v{cand.id} (retired)"]
    users = drop_collection(settings, reg, GREEN)
    assert users == [f"embedding v{cand.id} (retired)"]
    assert GREEN not in [c.name for c in _collections(settings).list_collections()]
    assert not list((settings.data_dir / "lexical").glob(f"{GREEN}-*"))


@pytest.mark.slow
def test_a_re_embed_that_fails_midway_leaves_the_old_collection_and_a_re_run_completes(
    world, green_embed
):
    from core.index.lexical import current_stamp, lexical_dir, load_lexical

    settings, reg, _, live, seed, cand, blue = world
    before = sorted(blue.get(include=[])["ids"])
    broken = Interrupted(green_embed, after=2, fail=True)
    with pytest.raises(RuntimeError, match="killed midway"):
        promote_version(settings, reg, cand.id, progress=False, embed_model=broken, batch=3)
    assert reg.active("embedding").id == seed.id  # never switched
    assert sorted(blue.get(include=[])["ids"]) == before  # the old collection is intact
    assert "Orsolya Brandt" in _ask(live) and live.collection.name == "docs"
    green = _collections(settings).get_collection(GREEN)
    assert green.count() == 6  # two batches landed

    # A re-run resumes: only what is missing is embedded, then the switch.
    event, report = promote_version(settings, reg, cand.id, progress=False, embed_model=green_embed)
    assert report.kept == 6 and report.embedded == len(before) - 6
    assert sorted(green.get(include=[])["ids"]) == before
    lexical = load_lexical(lexical_dir(settings.data_dir, green))
    assert lexical is not None and lexical.stamp == current_stamp(blue)
    assert event.version_id == cand.id and live.collection.name == GREEN
    assert "Orsolya Brandt" in _ask(live)

    # Chunks removed from the source since are removed from the target on the next build.
    blue.delete(ids=before[:1])
    report = prepare_version(settings, reg, reg.get(seed.id), green_embed, progress=False)
    assert report is None  # the seed reads the settings' collection: nothing to build for it


def test_a_version_without_its_own_collection_needs_no_re_embed(world, tmp_path):
    settings, reg, *_ = world
    adapter_version = reg.register("embedding", "adapter", {"embedding": {"query_adapter": "x"}})
    assert prepare_version(settings, reg, adapter_version, progress=False) is None
    missing = Settings(data_dir=tmp_path / "other")
    missing.database.url = settings.database.url
    with pytest.raises(ReembedError, match="does not exist; ingest documents first"):
        prepare_version(missing, reg, reg.get(world[5].id), progress=False)


@pytest.mark.slow
def test_the_gate_judges_the_candidate_on_its_own_collection_and_promotion_re_embeds(world):
    from core.evalstore import EvalSample, EvalStore, GateDecision
    from eval.gate import GatePolicy
    from eval.runner import EvalContext, apply_decision, compare

    settings, reg, _, live, seed, cand, blue = world
    ctx = EvalContext(settings, reg, EvalStore(reg.db))
    samples = [
        EvalSample(user_input=QUESTION, reference="Orsolya Brandt",
                   reference_sources=["velmora.pdf"]),
        EvalSample(user_input="How many eggs does the lemon cake need?", reference="four eggs",
                   reference_sources=["page.html"]),
        EvalSample(user_input="Where do visitors park?", reference="level minus two",
                   reference_sources=["faq.jsonl"]),
    ]  # fmt: skip
    set_id = ctx.save_set("three", samples)
    policy = GatePolicy(primary_metric="mrr_at_10", min_samples=3, guard_metrics=[])
    decision, champ, challenger = compare(ctx, set_id, cand.id, True, False, policy)
    # The same weights under another name cannot win: rejected, and the champion stays.
    assert not decision.promote and reg.get(cand.id).status == "rejected"
    assert challenger.embedding_version_id == cand.id
    green = _collections(settings).get_collection(GREEN)
    assert green.count() == blue.count()  # built from the active collection to be judged
    assert reg.active("embedding").id == seed.id and live.collection.name == "docs"

    # A winning decision applied by the gate re-embeds first (here: from scratch), then switches.
    drop_collection(settings, reg, GREEN)
    won = ctx.store.save_decision(
        GateDecision(
            champion_run_id=champ.id, candidate_run_id=challenger.id,
            candidate_version_id=cand.id, promote=True, reasons=["a winner"],
        )
    )  # fmt: skip
    apply_decision(ctx, won)
    assert reg.active("embedding").id == cand.id
    assert _collections(settings).get_collection(GREEN).count() == blue.count()
    assert "Orsolya Brandt" in _ask(live) and live.collection.name == GREEN


def test_an_adapter_version_serves_through_the_app_on_the_same_collection(world, tmp_path):
    import numpy as np

    from core.embedding.adapter import AdaptedEmbedding, QueryAdapter

    settings, reg, log, live, *_ = world
    dim = len(live.embed_model.get_query_embedding("x"))
    rng = np.random.default_rng(0)
    adapter = QueryAdapter(rng.normal(0, 0.01, (dim, dim)).astype(np.float32),
                           np.zeros(dim, np.float32), {})  # fmt: skip
    adapter.save(tmp_path / "adapter")
    version = reg.register(
        "embedding", "adapter", {"embedding": {"query_adapter": str(tmp_path / "adapter")}}
    )
    _, report = promote_version(settings, reg, version.id, progress=False)
    assert report is None  # no re-embedding: passages keep the model's own vectors
    assert "Orsolya Brandt" in _ask(live)
    assert isinstance(live.embed_model, AdaptedEmbedding) and live.collection.name == "docs"
    q = live.embed_model.get_query_embedding(QUESTION)
    base = live.embed_model.inner.get_query_embedding(QUESTION)
    assert np.allclose(q, adapter.apply([base])[0], atol=1e-5) and not np.allclose(q, base)
    assert list(log.turns())[-1].embedding_version_id == version.id


def test_commands_build_list_promote_and_drop(world, monkeypatch, capsys):
    from eval.__main__ import main as eval_main
    from ingest.reembed import main

    settings, reg, _, _, seed, cand, blue = world
    monkeypatch.setenv("RAG_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("RAG_DATABASE__URL", settings.database.url)
    assert main(["--no-progress", "build", str(cand.id)]) == 0
    assert f"re-embedded 'docs' -> '{GREEN}': {blue.count()} chunks" in capsys.readouterr().out
    assert main(["list"]) == 0
    listing = capsys.readouterr().out
    assert f"docs: embedding v{seed.id} (active)" in listing
    assert f"{GREEN}: embedding v{cand.id} (candidate)" in listing

    # `eval promote` re-embeds first: here nothing is missing, so it only switches.
    assert eval_main(["promote", str(cand.id)]) == 0
    out = capsys.readouterr().out
    assert f"{blue.count()} already there" in out and f"embedding v{cand.id} is active" in out
    assert "promoted by hand: the gate has never compared it" in out  # said, not refused
    assert reg.active("embedding").id == cand.id

    assert main(["drop", GREEN]) == 2  # the active collection
    assert main(["drop", "docs"]) == 2  # a rollback needs it: refused without --yes
    assert "pass --yes" in capsys.readouterr().err
    assert main(["drop", "docs", "--yes"]) == 0
    assert "docs" not in [c.name for c in _collections(settings).list_collections()]


def test_the_gate_rejects_an_adapter_that_does_not_win(world, tmp_path):
    import numpy as np

    from core.embedding.adapter import QueryAdapter
    from core.evalstore import EvalSample, EvalStore
    from eval.gate import GatePolicy
    from eval.runner import EvalContext, compare

    settings, reg, _, live, seed, *_ = world
    dim = len(live.embed_model.get_query_embedding("x"))
    # An untrained adapter (W = 0, b = 0) is the identity: it ranks exactly as the champion.
    QueryAdapter(np.zeros((dim, dim), np.float32), np.zeros(dim, np.float32), {}).save(
        tmp_path / "identity"
    )
    version = reg.register(
        "embedding",
        "identity adapter",
        {"embedding": {"query_adapter": str(tmp_path / "identity")}},
    )
    ctx = EvalContext(settings, reg, EvalStore(reg.db))
    samples = [
        EvalSample(user_input=QUESTION, reference_sources=["velmora.pdf"]),
        EvalSample(user_input="How many eggs does the lemon cake need?",
                   reference_sources=["page.html"]),
    ]  # fmt: skip
    policy = GatePolicy(primary_metric="mrr_at_10", min_samples=2, guard_metrics=[])
    decision, _, run = compare(ctx, ctx.save_set("two", samples), version.id, True, False, policy)
    assert not decision.promote and run.embedding_version_id == version.id
    assert reg.get(version.id).status == "rejected" and reg.active("embedding").id == seed.id
