"""The Fine-tune admin tab's actions, as the buttons call them: build from the log with filters
(fake teacher over HTTP), the preview with grades and reasons, validation with the cost estimate,
launching an OpenAI job (HTTP-level fake), the jobs table with the retirement date, events and the
loss plot, cancel; and the tab lays out inside the app's Blocks."""

from __future__ import annotations

from datetime import date

import gradio as gr
import openai
import pytest
import respx

from app.finetune_tab import FineTuneTab
from core.chatlog import ChatLog
from core.db.database import open_database
from core.jobstore import JobStore
from core.registry import Registry
from core.settings import Settings
from tests.support.finetunefake import FakeFineTuning
from tests.support.ftlog import log_turn
from tests.support.teacherfake import TeacherServer


@pytest.fixture
def tab(tmp_path, monkeypatch):
    import finetune.openai_jobs as oj

    monkeypatch.setattr(oj, "LAST_JOB_DAY", date(2099, 1, 1))  # whatever today is
    with TeacherServer() as server:
        settings = Settings(data_dir=tmp_path / "data")
        settings.finetune.teacher.model = "teacher-model"
        settings.finetune.teacher.base_url = server.base_url
        settings.llm.model = "gpt-4.1-mini-2025-04-14"
        store = JobStore(open_database(settings.database_url))
        log = ChatLog(open_database(settings.database_url))
        for i in range(12):
            log_turn(log, f"Question {i} about the Velmora lighthouse?", rating="up")
        log_turn(log, "A poor one [low]")
        log_turn(log, "Unrated and wrong? [low]", rating="down", comment="wrong")
        client = openai.OpenAI(api_key="sk-test", max_retries=0)
        yield FineTuneTab(settings, store, Registry(store.db), "pw", openai_client=client)
        log.db.dispose()
        store.db.dispose()


def refused(message: str):
    """A refusal as the tab shows it: one warning toast (outside a request, a Python warning)."""
    return pytest.warns(UserWarning, match=message)


def test_build_preview_validate_launch_follow_and_cancel(tab):
    with refused("wrong admin password"):
        assert tab.jobs("nope") == gr.skip()  # nothing shown changes
    summary, preview, dataset_id = tab.build_dataset(
        "tab", "grade", "all", "", "", None, 20, 4.0, False, "pw"
    )
    assert dataset_id == 1 and "kept **12** of 14" in summary
    assert "grade_below_threshold: 1" in summary and "rated_down: 1" in summary
    dropped = {r[2]: r for r in preview if r[1] == "dropped"}
    assert set(dropped) == {"grade_below_threshold", "rated_down"}
    assert dropped["grade_below_threshold"][5] == 2  # the teacher's grade is shown
    assert all(r[5] == 5 for r in preview if r[1] == "kept")  # the teacher's grades are shown
    checked = tab.validate(dataset_id, "openai", "supervised", "", "pw")
    card = tab.ctx.store.dataset(dataset_id).card
    assert card.train_examples + card.validation_examples == 12
    assert f"valid: {card.train_examples} examples" in checked and "about $" in checked
    assert "gpt-4.1-mini-2025-04-14" in checked
    fake = FakeFineTuning(statuses=["running", "running"], model="gpt-4.1-mini-2025-04-14")
    with respx.mock(assert_all_called=False) as router:
        fake.mount(router)
        note, jobs = tab.launch(dataset_id, "openai", "supervised", "", "pw")
        assert note.startswith("Job 1 started on `openai`")
        assert jobs[0][3] == "validating_files" and jobs[0][8] == "2027-01-14"
        events, figure, jobs = tab.show(1, "pw")
        assert "Step 1/20" not in events and jobs[0][3] == "running"
        tab.show(1, "pw")
        events, figure, jobs = tab.show(1, "pw")
        assert "Step 1/20: training loss=1.90" in events
        assert [t.name for t in figure.data] == ["train loss", "validation loss"]  # checkpoints
        note, jobs = tab.cancel(1, "pw")
    assert note == "Job 1: cancelled." and jobs[0][3] == "cancelled"
    assert jobs[0][9] == "cancelled by an admin"
    with refused("no fine-tuning job 7"):
        tab.show(7, "pw")
    with refused("type a job id from the table first"):
        tab.show(0, "pw")  # the box left empty: Gradio sends 0


def test_quoted_answers_alone_say_what_can_train_instead_of_asking_for_ratings(tmp_path):
    """With no language model every answer is quoted, and no quote is a chat model's target:
    rating more answers up cannot help, so the refusal names what can."""
    from rag.synthesis import EXTRACTIVE_LABEL

    settings = Settings(data_dir=tmp_path / "data")
    store = JobStore(open_database(settings.database_url))
    log = ChatLog(open_database(settings.database_url))
    quotes = f"{EXTRACTIVE_LABEL}:\n\n> Orsolya Brandt kept the lighthouse. [1]\n"
    for q in ("Who kept the lighthouse?", "Where is the lighthouse?"):
        log_turn(log, q, answer=quotes, provider="extractive", rating="up")
    tab = FineTuneTab(settings, store, Registry(store.db), "pw")
    advice = r"extractive answer 2\): answers quoted .* distill or relabel.* the embedding model"
    with refused(advice):
        tab.build_dataset("x", "none", "all", "", "", None, 20, 4.0, False, "pw")
    assert store.datasets() == []  # nothing left behind
    log.db.dispose()
    store.db.dispose()


def test_errors_reach_the_admin_as_messages(tab):
    tab.settings.finetune.teacher.model = None
    with refused("teacher mode 'grade' needs a teacher model"):
        outputs = tab.build_dataset("x", "grade", "all", "", "", None, 20, 4.0, False, "pw")
    assert outputs == (gr.skip(), gr.skip(), gr.skip())
    with refused("not an ISO date"):
        tab.build_dataset("x", "none", "all", "yesterday", "", None, 20, 4.0, False, "pw")
    with refused("'/nowhere' is not a folder here"):
        tab.validate(1, "local", "supervised", "/nowhere", "pw")
    with refused("no base model is chosen"):
        emptied = tab.validate(1, "local", "supervised", "", "pw")
    assert emptied == gr.update(value=None)  # no stale report left
    # Only the rated-down turn matches: nothing to train on, so no dataset is recorded.
    with refused(r"the 1 turn read was not kept \(dropped: rated down 1\)"):
        tab.build_dataset("x", "none", "down", "", "", None, 20, 4.0, False, "pw")
    assert tab.ctx.store.datasets() == [] and tab.ctx.store.jobs() == []  # nothing left behind
    assert not list((tab.settings.finetune_dir / "datasets").glob("x*"))
    # An embedding model's pairs are no chat dataset, and the refusal says so.
    from core.records import DatasetCard

    pairs = tab.ctx.store.save_dataset(DatasetCard(kind="embedding", name="pairs"), "/nowhere")
    with refused("holds embedding training pairs, not chat examples"):
        tab.validate(pairs.id, "openai", "supervised", "", "pw")


def test_the_tab_lays_out_inside_the_app(tab):
    with gr.Blocks() as demo:
        tab.build()
    labels = {getattr(b, "label", None) for b in demo.blocks.values()}
    assert {
        "Teacher mode",
        "Kept and dropped turns (first 500)",
        "Loss",
        "Jobs (newest first)",
    } <= labels


def test_validate_says_what_launch_would_refuse(tab, monkeypatch):
    """A valid file for the openai backend with no key: Validate says Launch will be refused."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    _, _, dataset_id = tab.build_dataset("v", "none", "up", "", "", None, 20, 4.0, False, "pw")
    tab.ctx.openai_client = None
    tab.settings.llm.api_key = None
    checked = tab.validate(dataset_id, "openai", "supervised", "", "pw")
    assert "valid:" in checked and "Launch will be refused" in checked
    assert "OPENAI_API_KEY" in checked  # the key, not only the wind-down date
    assert tab.ctx.store.jobs() == []
