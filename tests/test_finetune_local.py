"""The `local` backend really trains: a tiny randomly initialised causal LM made here, LoRA through
TRL's SFTTrainer and DPOTrainer for a few steps; the loss goes down, the adapter loads in the
`local` chat provider, and a candidate is registered. End to end: logged turns with feedback ->
dataset (fake teacher over HTTP) -> local job -> candidate."""

from __future__ import annotations

import json

import openai
import pytest

from core.chatlog import ChatLog
from core.db.database import open_database
from core.jobstore import JobStore
from core.openai_api import ModelClient
from core.registry import Registry, apply_spec
from core.settings import Settings, TeacherSettings
from finetune.context import FineTuneContext
from finetune.dataset import BuildOptions, TurnFilter, build_dataset
from finetune.jobs import cancel, launch
from finetune.local_jobs import sft_rows
from finetune.teacher import Teacher
from finetune.turns import turns_from_log
from rag.prompt import system_prompt
from tests.support.fakes import make_tiny_lm
from tests.support.ftlog import log_turn
from tests.support.teacherfake import TeacherServer

pytestmark = pytest.mark.slow

QUESTIONS = [
    "who is the lighthouse keeper of velmora ?",
    "who served the lighthouse of velmora ?",
    "how many years is the keeper of the lighthouse ?",
    "when is the festival of velmora ?",
    "is the festival in october ?",
    "who is orsolya brandt ?",
    "what is the answer of the question ?",
    "what is the context of the festival ?",
    "who served in velmora ?",
    "what is the keeper ?",
    "is brandt the keeper ?",
    "when is the velmora festival ?",
    "is the keeper orsolya ?",
    "when is the festival ?",
    "what is the lighthouse ?",
    "who is the keeper of the festival ?",
]
PASSAGES = [
    "orsolya brandt served the lighthouse of velmora 31 years .",
    "the festival is in october .",
]


@pytest.fixture
def setup(tmp_path):
    model_dir, _ = make_tiny_lm(tmp_path)
    settings = Settings(data_dir=tmp_path / "data")
    settings.finetune.base_model = str(model_dir)
    settings.llm.max_tokens = 8  # the tiny model has 512 positions
    settings.finetune.max_steps = 12
    settings.finetune.batch_size = 4
    settings.finetune.learning_rate = 5e-3
    settings.finetune.max_length = 256
    settings.finetune.lora_r = 4
    settings.finetune.lora_alpha = 8
    settings.finetune.lora_dropout = 0.0
    store = JobStore(open_database(settings.database_url))
    ctx = FineTuneContext(settings, store, Registry(store.db))
    log = ChatLog(open_database(settings.database_url))
    yield ctx, log, model_dir
    log.db.dispose()
    store.db.dispose()


def build(ctx, log, mode, name, server) -> int:
    prompt = system_prompt(ctx.settings)
    client = openai.OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0)
    result = build_dataset(
        turns_from_log(log, TurnFilter(min_answer_chars=5)),
        ctx.settings.finetune_dir / "datasets",
        BuildOptions(name=name, mode=mode, dedup_similarity=None, validation_share=0.25),
        "the answer is in the context passages .",
        teacher=Teacher(ModelClient(client, "teacher-model", TeacherSettings()), prompt.text),
        prompt_version=prompt.version,
    )
    return ctx.store.save_dataset(result.card, str(result.path)).id


def losses(ctx, job_id: int, key: str) -> list[float]:
    return [e.metrics[key] for e in ctx.store.metrics(job_id) if key in e.metrics]


def test_sft_trains_a_lora_the_local_provider_serves(setup):
    ctx, log, model_dir = setup
    for q in QUESTIONS:
        log_turn(
            log,
            q,
            answer="orsolya brandt served the lighthouse 31 years [1] .",
            passages=PASSAGES,
            rating="up",
        )
    with TeacherServer() as server:
        dataset_id = build(ctx, log, "grade", "sft", server)
    job = launch(ctx, dataset_id, backend="local", method="supervised")
    assert job.status == "succeeded", job.error
    train = losses(ctx, job.id, "train_loss")
    assert len(train) >= 10 and sum(train[-3:]) / 3 < sum(train[:3]) / 3  # loss goes down
    assert losses(ctx, job.id, "valid_loss")  # validation loss recorded too
    version = ctx.registry.get(job.candidate_version_id)
    assert version.status == "candidate"
    assert version.spec["llm"] == {
        "provider": "local",
        "model": str(model_dir),
        "adapter_path": job.adapter_path,
    }
    prov = version.provenance
    assert prov["job_id"] == job.id and prov["teacher_model"] == "teacher-model"
    assert len(prov["train_question_keys"]) == len(QUESTIONS)  # train and validation
    # The candidate's spec builds the `local` provider with the adapter on top.
    from rag.providers import build_chat_model

    chat = build_chat_model(apply_spec(ctx.settings, version).llm)
    assert chat.provider == "local" and "+lora:" in chat.model_id
    from peft import PeftModel

    assert isinstance(chat.llm._model, PeftModel)
    reply = chat.llm.complete("user: who is the keeper ?\nassistant:")
    assert isinstance(reply.text, str)
    # The Evaluate tab lists it among the versions to compare and promote.
    from app.evaluate_tab import versions_markdown

    assert f"| chat | v{version.id} | candidate |" in versions_markdown(ctx.registry)


def test_dpo_trains_on_thumbs_down_pairs(setup):
    ctx, log, model_dir = setup
    ctx.settings.finetune.learning_rate = 2e-2
    for q in QUESTIONS:
        log_turn(
            log,
            q,
            answer="the festival is in october .",
            passages=PASSAGES,
            rating="down",
            comment="wrong",
        )
    with TeacherServer() as server:
        dataset_id = build(ctx, log, "relabel", "dpo", server)
    card = ctx.store.dataset(dataset_id).card
    assert card.preference_pairs == len(QUESTIONS)
    job = launch(ctx, dataset_id, backend="local", method="dpo")
    assert job.status == "succeeded", job.error
    train = losses(ctx, job.id, "train_loss")
    assert train[0] == pytest.approx(0.6931, abs=0.01)  # DPO starts at ln 2: no preference yet
    assert sum(train[-3:]) / 3 < train[0]
    from rag.local_llm import LocalLLM

    llm = LocalLLM(model_dir=str(model_dir), adapter_path=job.adapter_path, max_new_tokens=4)
    assert isinstance(llm.complete("user: who ?\nassistant:").text, str)
    assert ctx.registry.get(job.candidate_version_id).provenance["method"] == "dpo"


def test_a_local_job_whose_process_died_resumes_from_its_checkpoint(setup):
    ctx, log, _ = setup
    ctx.settings.finetune.checkpoint_steps = 4
    for q in QUESTIONS:
        log_turn(
            log,
            q,
            answer="orsolya brandt served the lighthouse 31 years [1] .",
            passages=PASSAGES,
            rating="up",
        )
    with TeacherServer() as server:
        dataset_id = build(ctx, log, "none", "resume", server)

    def die_at_step_6(step: int, total: int) -> None:
        if step == 6:
            raise KeyboardInterrupt  # the process is stopped mid-training

    with pytest.raises(KeyboardInterrupt):
        launch(ctx, dataset_id, backend="local", progress=die_at_step_6)
    [job] = ctx.store.jobs()
    assert job.status == "running"  # nobody finished it
    from core.compute import ComputeGate
    from finetune.jobs import resume

    class CountingGate(ComputeGate):
        holds = 0

        def hold(self):
            CountingGate.holds += 1
            return super().hold()

    # Resumed by the app: each step queues in the app's compute gate with the chat's work.
    ctx.gate = CountingGate(slots=1)
    [job] = resume(ctx)
    assert job.status == "succeeded" and job.candidate_version_id is not None
    assert CountingGate.holds == 12 - 4 and not ctx.gate._queue and ctx.gate._running == 0
    messages = [e.message for e in ctx.store.events(job.id)]
    assert "resuming from the last checkpoint" in messages
    steps = [e.step for e in ctx.store.metrics(job.id) if "train_loss" in e.metrics]
    # Steps 1-5 were logged before the stop at step 6; training went on from checkpoint 4.
    assert steps[:5] == [1, 2, 3, 4, 5] and steps[5:] == list(range(5, 13))


def test_weight_zero_messages_are_not_trained_and_cancel_needs_no_trainer(setup):
    ctx, _, model_dir = setup
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    line = json.dumps(
        {
            "messages": [
                {"role": "user", "content": "who ?"},
                {"role": "assistant", "content": "brandt .", "weight": 0},
                {"role": "user", "content": "when ?"},
                {"role": "assistant", "content": "october ."},
            ]
        }
    )
    [row] = sft_rows(tok, [line])
    assert row["completion"] == "october ." and "brandt ." in row["prompt"]
    job = ctx.store.create_job("local", "supervised", str(model_dir), _dataset(ctx), {}, {})
    assert cancel(ctx, job.id).status == "cancelled"


def _dataset(ctx) -> int:
    from core.records import DatasetCard

    return ctx.store.save_dataset(DatasetCard(name="x", source="chatlog", mode="none"), "/x").id


def test_cli_launch_status_and_list_a_local_job(tmp_path, monkeypatch, capsys):
    from finetune.__main__ import main

    model_dir, _ = make_tiny_lm(tmp_path)
    data = tmp_path / "data"
    for key, value in {
        "RAG_DATA_DIR": str(data),
        "RAG_FINETUNE__BASE_MODEL": str(model_dir),
        "RAG_FINETUNE__MAX_STEPS": "3",
        "RAG_FINETUNE__MAX_LENGTH": "256",
        "RAG_FINETUNE__VALIDATION_SHARE": "0",
    }.items():
        monkeypatch.setenv(key, value)
    log = ChatLog(open_database(f"sqlite:///{(data / 'rag.db').resolve()}"))
    for q in QUESTIONS:
        log_turn(log, q, answer="orsolya brandt served the lighthouse [1] .", passages=PASSAGES)
    log.db.dispose()
    assert main(["build", "--mode", "none", "--name", "cli", "--no-embedding-dedup"]) == 0
    assert main(["launch", "1"]) == 0
    out = capsys.readouterr().out
    assert "job 1 [local supervised] succeeded" in out and "-> candidate chat v" in out
    assert main(["status", "1"]) == 0
    out = capsys.readouterr().out
    assert "registered as candidate chat v" in out and "train_loss=" in out
    assert main(["list"]) == 0
    assert "1 datasets, 1 jobs" in capsys.readouterr().out
    assert main(["cancel", "1"]) == 2  # a finished job cannot be cancelled: a clear error
    assert "has already ended (succeeded)" in capsys.readouterr().err
