"""Fine-tuning jobs: the jobs store on SQLite and PostgreSQL, and the `openai` backend through the
real SDK against an HTTP-level fake of the files and fine-tuning API: a whole job life, failure,
cancel, API errors (400/401/429/500), refusal naming the `local` backend, the retirement date on
the registered candidate, and resuming after a restart."""

from __future__ import annotations

import json
from datetime import date

import openai
import pytest
import respx

from core.db.database import open_database
from core.errors import ProviderError
from core.jobstore import JobError, JobStore
from core.records import DatasetCard
from core.registry import Registry
from core.settings import Settings
from finetune.context import FineTuneContext
from finetune.jobs import cancel, launch, monitor, poll_once, resume
from finetune.openai_jobs import JobRefused, creation_refusal, retirement_date
from tests.support.fakes import error
from tests.support.finetunefake import FakeFineTuning

TODAY = date(2026, 11, 21)


def no_sleep(_: float) -> None:
    pass


def write_dataset(store: JobStore, folder, n: int = 12, pairs: int = 12) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    examples = [
        {
            "messages": [
                {"role": "system", "content": "Answer from the passages."},
                {"role": "user", "content": f"Context passages:\n\n[1] p\n\nQuestion: q{i}"},
                {"role": "assistant", "content": f"answer {i} [1]"},
            ]
        }
        for i in range(n)
    ]
    (folder / "train.jsonl").write_text("".join(json.dumps(e) + "\n" for e in examples))
    (folder / "validation.jsonl").write_text(json.dumps(examples[0]) + "\n")
    files.update(train="train.jsonl", validation="validation.jsonl")
    if pairs:
        pair = {
            "input": {"messages": examples[0]["messages"][:2]},
            "preferred_output": [{"role": "assistant", "content": "good [1]"}],
            "non_preferred_output": [{"role": "assistant", "content": "bad"}],
        }
        (folder / "dpo_train.jsonl").write_text((json.dumps(pair) + "\n") * pairs)
        files["dpo_train"] = "dpo_train.jsonl"
    card = DatasetCard(
        name=folder.name,
        source="chatlog",
        mode="grade",
        kept=n,
        train_examples=n,
        validation_examples=1,
        source_turn_ids=list(range(1, n + 1)),
        train_question_keys=[f"key{i}" for i in range(n)],
        files=files,
        content_hash="abc123",
    )
    return store.save_dataset(card, str(folder)).id


@pytest.fixture
def ctx(sql_url, tmp_path):
    settings = Settings(data_dir=tmp_path / "data")
    settings.database.url = sql_url
    settings.llm.model = "gpt-4o-mini-2024-07-18"
    settings.finetune.suffix = "docs"
    store = JobStore(open_database(sql_url))
    client = openai.OpenAI(api_key="sk-test", max_retries=1)
    context = FineTuneContext(settings, store, Registry(store.db), openai_client=client)
    context.dataset_id = write_dataset(store, tmp_path / "ds1")
    yield context
    store.db.dispose()


def test_store_keeps_jobs_events_and_leases(ctx):
    store = ctx.store
    job = store.create_job(
        "openai", "supervised", "gpt-4o-mini", ctx.dataset_id, {"n_epochs": 3}, {}
    )
    assert job.status == "created" and store.unfinished()[0].id == job.id
    with pytest.raises(JobError, match="no dataset"):
        store.create_job("openai", "supervised", "m", 999, {}, {})
    # The newest dataset of a kind: the chat one here; no embedding pairs yet.
    assert store.newest_dataset("chat").id == ctx.dataset_id
    assert store.newest_dataset("embedding") is None
    newer = write_dataset(store, ctx.settings.data_dir / "ds2")
    assert store.newest_dataset("chat").id == newer != ctx.dataset_id
    assert store.add_event(job.id, "hello", external_id="ev1") is True
    assert store.add_event(job.id, "hello again", external_id="ev1") is False  # stored once
    store.add_event(job.id, "step 1", step=1, metrics={"train_loss": 2.0})
    assert [e.message for e in store.events(job.id)] == ["hello", "step 1"]
    assert store.metrics(job.id)[0].metrics == {"train_loss": 2.0}
    assert store.claim(job.id, "a", 60) and not store.claim(job.id, "b", 60)
    assert store.claim(job.id, "a", 60)  # renewing one's own lease
    store.release(job.id, "a")
    assert store.claim(job.id, "b", 0.0) and store.claim(job.id, "c", 60)  # b's lease ran out
    done = store.update(job.id, status="failed", error="boom")
    assert done.done and done.finished_at is not None and store.unfinished() == []
    assert store.update(job.id, status="running").status == "failed"  # final stays final
    with pytest.raises(JobError, match=r"has already ended \(failed\)"):
        store.request_cancel(job.id)


def test_openai_job_from_upload_to_registered_candidate(ctx):
    fake = FakeFineTuning()
    with respx.mock(assert_all_called=False) as router:
        fake.mount(router)
        job = launch(ctx, ctx.dataset_id, backend="openai", today=TODAY)
        assert job.status == "validating_files" and job.external_id == "ftjob-abc123"
        [created] = fake.created
        assert created["model"] == "gpt-4o-mini-2024-07-18"
        assert created["training_file"] == "file-1" and created["validation_file"] == "file-2"
        assert created["suffix"] == "docs" and created["seed"] == 0
        assert created["method"] == {
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 3, "batch_size": 4}},
        }
        seen = []
        job = monitor(ctx, job.id, sleep=no_sleep, on_poll=lambda j: seen.append(j.status))
        assert seen == ["validating_files", "queued", "running", "succeeded"]
        assert job.status == "succeeded" and job.trained_tokens == 12345
        assert job.fine_tuned_model == "ft:gpt-4o-mini-2024-07-18:acme:docs:abc123"
        poll_once(ctx, job.id)  # a late look adds nothing twice
    messages = [e.message for e in ctx.store.events(job.id)]
    assert messages.count("Validating training file") == 1
    assert "Step 1/20: training loss=1.90" in messages
    assert any(m.startswith("checkpoint ft:") and "step 10" in m for m in messages)
    [checkpoint] = [e for e in ctx.store.events(job.id) if e.message.startswith("checkpoint")]
    assert checkpoint.step == 10 and checkpoint.metrics["valid_loss"] == 1.4
    steps = {e.step: e.metrics for e in ctx.store.metrics(job.id)}  # the result file's series
    assert len(steps) == 20 and steps[20]["train_loss"] == pytest.approx(1.0)
    version = ctx.registry.get(job.candidate_version_id)
    assert version.status == "candidate" and version.kind == "chat"
    assert version.spec == {"llm": {"provider": "openai", "model": job.fine_tuned_model}}
    prov = version.provenance
    assert prov["retires_on"] == "2027-01-14" and prov["job_id"] == job.id
    assert prov["dataset_hash"] == "abc123" and prov["train_question_keys"][0] == "key0"
    assert prov["source_turn_ids"] == {"first": 1, "last": 12, "count": 12}
    assert prov["training_metrics"]["valid_loss"] > 0


def test_dpo_jobs_send_preference_pairs_with_beta(ctx):
    fake = FakeFineTuning(statuses=["queued"])
    with respx.mock(assert_all_called=False) as router:
        fake.mount(router)
        launch(ctx, ctx.dataset_id, backend="openai", method="dpo", today=TODAY)
    [created] = fake.created
    assert created["method"]["type"] == "dpo"
    assert created["method"]["dpo"]["hyperparameters"]["beta"] == 0.1
    assert "validation_file" not in created or created["validation_file"] is None


def test_a_failed_job_keeps_its_reason(ctx):
    fake = FakeFineTuning(statuses=["running", "failed"])
    with respx.mock(assert_all_called=False) as router:
        fake.mount(router)
        job = launch(ctx, ctx.dataset_id, backend="openai", today=TODAY)
        job = monitor(ctx, job.id, sleep=no_sleep)
    assert job.status == "failed" and job.error == "invalid_training_file: line 3 is bad"
    assert job.candidate_version_id is None and ctx.registry.versions(status="candidate") == []


def test_cancel_stops_the_job_at_openai(ctx):
    fake = FakeFineTuning(statuses=["running"])
    with respx.mock(assert_all_called=False) as router:
        fake.mount(router)
        job = launch(ctx, ctx.dataset_id, backend="openai", today=TODAY)
        job = cancel(ctx, job.id)
    assert fake.cancelled and job.status == "cancelled" and job.error == "cancelled by an admin"


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, "OpenAI refused the request (400): hyperparameter n_epochs is out of range"),
        (401, "OpenAI rejected the API key (401)"),
        (429, "OpenAI kept rate limiting (429)"),
        (500, "OpenAI failed (500)"),
    ],
)
def test_api_errors_on_creation_fail_the_job_with_a_clear_reason(ctx, status, expected):
    fake = FakeFineTuning()
    message = "hyperparameter n_epochs is out of range" if status == 400 else "nope"
    fake.errors["create"] = [error(status, message), error(status, message)]
    with respx.mock(assert_all_called=False) as router:
        fake.mount(router)
        with pytest.raises(ProviderError, match=r"\(" + str(status) + r"\)"):
            launch(ctx, ctx.dataset_id, backend="openai", today=TODAY)
    [job] = ctx.store.jobs()
    assert job.status == "failed" and job.error.startswith(expected)


def test_refused_creation_names_the_local_backend(ctx):
    fake = FakeFineTuning()
    fake.errors["create"] = [
        error(
            403, "Fine-tuning is not available for new organizations.", "fine_tuning_not_available"
        )
    ]
    with respx.mock(assert_all_called=False) as router:
        fake.mount(router)
        with pytest.raises(JobRefused, match="`local` backend") as refused:
            launch(ctx, ctx.dataset_id, backend="openai", today=TODAY)
    assert "not available for new organizations" in str(refused.value)
    assert ctx.store.jobs()[0].status == "failed"
    # After the last day no request is even made, and no job is created.
    with respx.mock(assert_all_called=False) as router:
        fake.mount(router)
        with pytest.raises(JobRefused, match="no new OpenAI fine-tuning jobs after 2027-01-06"):
            launch(ctx, ctx.dataset_id, backend="openai", today=date(2027, 1, 7))
        assert not router.calls
    assert len(ctx.store.jobs()) == 1


def test_retirement_dates():
    assert retirement_date("gpt-4o-mini-2024-07-18") == date(2027, 1, 14)
    assert retirement_date("ft:gpt-4.1-nano-2025-04-14:acme::x1") == date(2027, 1, 14)
    assert retirement_date("gpt-4o-2024-08-06") is None
    assert creation_refusal("gpt-4.1-mini-2025-04-14", date(2027, 1, 6)) is None
    assert "local" in creation_refusal("gpt-4.1-mini-2025-04-14", date(2027, 1, 7))


def test_poll_failures_are_transient_but_a_bad_key_stops(ctx):
    fake = FakeFineTuning(statuses=["running", "succeeded"])
    with respx.mock(assert_all_called=False) as router:
        fake.mount(router)
        job = launch(ctx, ctx.dataset_id, backend="openai", today=TODAY)
        fake.errors["retrieve"] = [error(500, "oops"), error(500, "oops")]
        job = poll_once(ctx, job.id)
        assert job.status == "validating_files"
        assert (
            "poll failed, will retry: OpenAI failed (500)" in ctx.store.events(job.id)[-1].message
        )
        fake.errors["retrieve"] = [error(401, "bad key")]
        with pytest.raises(ProviderError, match="401"):
            poll_once(ctx, job.id)
        job = monitor(ctx, job.id, sleep=no_sleep)
    assert job.status == "succeeded" and job.candidate_version_id is not None


def test_a_restarted_process_resumes_monitoring(ctx):
    fake = FakeFineTuning()
    with respx.mock(assert_all_called=False) as router:
        fake.mount(router)
        job = launch(ctx, ctx.dataset_id, backend="openai", today=TODAY)
        monitor(ctx, job.id, sleep=no_sleep, max_polls=2)
        ctx.store.claim(job.id, "a process that died", 0.0)  # its lease has run out
        # A new process: its own store, registry and client on the same database.
        store = JobStore(open_database(ctx.settings.database.url))
        again = FineTuneContext(
            ctx.settings,
            store,
            Registry(store.db),
            openai_client=openai.OpenAI(api_key="sk-test", max_retries=0),
        )
        [resumed] = resume(again, sleep=no_sleep)
        assert resumed.status == "succeeded" and resumed.candidate_version_id is not None
        assert resume(again, sleep=no_sleep) == []  # nothing left to resume
        store.db.dispose()
    ids = [e.message for e in ctx.store.events(job.id)]
    assert ids.count("Validating training file") == 1
    assert len(ctx.registry.versions(status="candidate")) == 1


def test_the_app_resumes_unfinished_jobs_in_the_background(ctx):
    from finetune.jobs import resume_in_background

    assert resume_in_background(ctx, sleep=no_sleep) is None  # nothing unfinished: no thread
    fake = FakeFineTuning()
    with respx.mock(assert_all_called=False) as router:
        fake.mount(router)
        job = launch(ctx, ctx.dataset_id, backend="openai", today=TODAY)
        ctx.store.claim(job.id, "an app that was restarted", 0.0)
        store = JobStore(open_database(ctx.settings.database.url))
        again = FineTuneContext(
            ctx.settings,
            store,
            Registry(store.db),
            openai_client=openai.OpenAI(api_key="sk-test", max_retries=0),
        )
        thread = resume_in_background(again, sleep=no_sleep)
        assert thread is not None and thread.daemon
        thread.join(30)
        store.db.dispose()
    assert ctx.store.job(job.id).status == "succeeded"


def test_azure_openai_runs_the_same_job_life(ctx):
    ctx.openai_client = openai.AzureOpenAI(
        azure_endpoint="https://acme.openai.azure.com",
        api_key="k",
        api_version="2024-10-21",
        max_retries=0,
    )
    fake = FakeFineTuning(statuses=["running", "succeeded"])
    with respx.mock(assert_all_called=False) as router:
        fake.mount(router, host="acme.openai.azure.com", prefix="/openai")
        job = launch(ctx, ctx.dataset_id, backend="openai", today=TODAY)
        job = monitor(ctx, job.id, sleep=no_sleep)
    assert job.status == "succeeded"
    version = ctx.registry.get(job.candidate_version_id)
    assert "deploy" in version.provenance["note"]
    assert version.provenance["retires_on"] == "2027-01-14"


def test_the_app_warns_before_a_model_retires():
    from core.dates import retirement_warning

    assert retirement_warning(None, TODAY) is None
    assert retirement_warning("2027-01-14", date(2026, 10, 1)) is None  # far off
    soon = retirement_warning("2027-01-14", TODAY)
    assert "retires on 2027-01-14 (in 54 days)" in soon and "local backend" in soon
    assert "retired on 2027-01-14" in retirement_warning("2027-01-14", date(2027, 1, 20))


def test_a_dataset_whose_files_are_gone_or_broken_is_refused_before_any_upload(ctx, tmp_path):
    (tmp_path / "ds1" / "train.jsonl").write_text('{"messages": [}\n' * 12)
    with respx.mock(assert_all_called=False) as router, pytest.raises(JobError) as broken:
        launch(ctx, ctx.dataset_id, backend="openai", today=TODAY)
    assert "line 1: invalid_json" in str(broken.value) and not router.calls
    (tmp_path / "ds1" / "train.jsonl").unlink()
    with pytest.raises(JobError, match="missing; build the dataset again"):
        launch(ctx, ctx.dataset_id, backend="openai", today=TODAY)
    assert ctx.store.jobs() == []  # no job was created for either


def test_every_fine_tuning_setting_is_described_and_read_from_the_environment(monkeypatch):
    from core.settings import FineTuneSettings, TeacherSettings

    for model in (FineTuneSettings, TeacherSettings):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
    monkeypatch.setenv("RAG_FINETUNE__BACKEND", "openai")
    monkeypatch.setenv("RAG_FINETUNE__TEACHER__MODEL", "gpt-4.1")
    monkeypatch.setenv("RAG_FINETUNE__PRICE_PER_MILLION_TOKENS", '{"my-model": 2.5}')
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    settings = Settings(_env_file=None)
    assert settings.finetune.backend == "openai"
    assert settings.finetune.teacher.model == "gpt-4.1"
    assert settings.finetune.teacher.api_key.get_secret_value() == "sk-env"
    assert settings.finetune.price_per_million_tokens == {"my-model": 2.5}


def test_a_refused_launch_leaves_nothing_and_a_job_that_never_reached_openai_needs_no_key(
    ctx, caplog
):
    """With no key, an openai launch is refused before any job exists. A job created earlier
    that never reached OpenAI (its process died before the upload) is cancelled without a key;
    one that cannot be resumed is marked failed once, with its reason, and not tried again."""
    from core.errors import ConfigError

    ctx.openai_client = None  # no client given: built from settings, which hold no key
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        launch(ctx, ctx.dataset_id, backend="openai", today=TODAY)
    assert ctx.store.jobs() == []
    stranded = ctx.store.create_job("openai", "supervised", "gpt-4o-mini", ctx.dataset_id, {}, {})
    assert cancel(ctx, stranded.id).status == "cancelled"
    unresumable = ctx.store.create_job(
        "openai", "supervised", "gpt-4o-mini", ctx.dataset_id, {}, {}
    )
    ctx.store.update(unresumable.id, external_id="ftjob-gone", status="running")
    with caplog.at_level("WARNING"):
        [job] = resume(ctx, sleep=lambda s: None, max_polls=1)
    assert job.status == "failed" and "not resumed" in job.error and "OPENAI_API_KEY" in job.error
    assert "Traceback" not in caplog.text and not [r for r in caplog.records if r.exc_info]
    assert resume(ctx, sleep=lambda s: None, max_polls=1) == []  # not tried again
    # A job whose launcher died before OpenAI had it: failed with its reason, no key asked.
    orphan = ctx.store.create_job("openai", "supervised", "gpt-4o-mini", ctx.dataset_id, {}, {})
    [job] = resume(ctx, sleep=lambda s: None, max_polls=1)
    assert job.id == orphan.id and job.status == "failed" and "reached OpenAI" in job.error
