"""The `local` backend: LoRA fine-tuning of a Hugging Face causal LM directory with TRL and PEFT,
supervised (`SFTTrainer`, loss on the answers only) or preference pairs (`DPOTrainer`, the frozen
base as reference). CPU for small models, GPU when present. Train and validation loss of every
step go to the job's events; checkpoints let a restarted process resume; the adapter is what the
`local` chat provider serves (RAG_LLM__PROVIDER=local, RAG_LLM__ADAPTER_PATH)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import ConfigError
from core.jobstore import FineTuneJob, JobStore
from finetune.watch import LEASE_S, Cancelled, claim_kept, job_callback
from rag.local_llm import load_causal_lm

if TYPE_CHECKING:
    from core.compute import ComputeGate
    from core.jobstore import DatasetRecord

log = logging.getLogger(__name__)


def _messages_to_prompt(tokenizer: Any, messages: list[dict[str, Any]]) -> str:
    """The prompt text as the `local` provider builds it: the tokenizer's chat template with the
    generation prompt, or LlamaIndex's generic format for a model without one."""
    plain = [{"role": m["role"], "content": m.get("content") or ""} for m in messages]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(plain, tokenize=False, add_generation_prompt=True)
    from llama_index.core.base.llms.generic_utils import messages_to_prompt
    from llama_index.core.base.llms.types import ChatMessage

    return messages_to_prompt([ChatMessage(role=m["role"], content=m["content"]) for m in plain])


def sft_rows(tokenizer: Any, lines: Any) -> list[dict[str, str]]:
    """Prompt/completion rows from chat-format JSONL: one per assistant message whose `weight`
    is not 0, with every message before it as the prompt (weight honoured)."""
    rows = []
    for line in lines:
        if not line.strip():
            continue
        messages = json.loads(line)["messages"]
        for i, message in enumerate(messages):
            if message.get("role") != "assistant" or message.get("weight", 1) == 0:
                continue
            rows.append(
                {
                    "prompt": _messages_to_prompt(tokenizer, messages[:i]),
                    "completion": message.get("content") or "",
                }
            )
    return rows


def dpo_rows(tokenizer: Any, lines: Any) -> list[dict[str, str]]:
    """Prompt/chosen/rejected rows from TRL-format preference JSONL."""
    rows = []
    for line in lines:
        if not line.strip():
            continue
        pair = json.loads(line)
        rows.append(
            {
                "prompt": _messages_to_prompt(tokenizer, pair["prompt"]),
                "chosen": pair["chosen"][-1]["content"],
                "rejected": pair["rejected"][-1]["content"],
            }
        )
    return rows


class LocalBackend:
    """Trains one job in this process (the CLI's `launch`, or the admin tab's worker thread)."""

    name = "local"

    def __init__(
        self,
        store: JobStore,
        root: Path,
        holder: str,
        lease_s: float = LEASE_S,
        gate: ComputeGate | None = None,
    ):
        self.store = store
        self.root = root
        self.holder = holder
        self.lease_s = lease_s
        self.gate = gate  # the app's compute gate: each training step queues with the chat

    def job_dir(self, job: FineTuneJob) -> Path:
        return self.root / "jobs" / str(job.id)

    def run(self, job: FineTuneJob, dataset: DatasetRecord, progress: Any = None) -> FineTuneJob:
        """Train (resuming from the job's last checkpoint when there is one), save the adapter,
        and return the job succeeded, failed (with the reason) or cancelled."""
        try:
            return self._run(job, dataset, progress)
        except Cancelled:
            return self.store.update(job.id, status="cancelled", error="cancelled by an admin")
        except ConfigError as exc:
            return self.store.update(job.id, status="failed", error=str(exc))
        except Exception as exc:  # training failed: the job keeps the reason, the CLI shows it
            log.exception("local fine-tuning job %s failed", job.id)
            return self.store.update(
                job.id, status="failed", error=f"{type(exc).__name__}: {str(exc)[:500]}"
            )
        finally:
            self.store.release(job.id, self.holder)

    def _run(self, job: FineTuneJob, dataset: DatasetRecord, progress: Any) -> FineTuneJob:
        import torch
        from datasets import Dataset
        from peft import LoraConfig

        hp = job.hyperparameters
        folder = Path(dataset.path)
        files = dataset.card.files
        tokenizer, model = load_causal_lm(job.base_model, "RAG_FINETUNE__BASE_MODEL")
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        dpo = job.method == "dpo"
        train_role, valid_role = (
            ("dpo_train_trl", "dpo_validation_trl") if dpo else ("train", "validation")
        )
        if train_role not in files:
            raise ConfigError(
                f"dataset {dataset.id} has no {train_role} file for a {job.method} job"
            )
        to_rows = dpo_rows if dpo else sft_rows
        with (folder / files[train_role]).open(encoding="utf-8") as f:
            train = Dataset.from_list(to_rows(tokenizer, f))
        evaluation = None
        if valid_role in files:
            with (folder / files[valid_role]).open(encoding="utf-8") as f:
                evaluation = Dataset.from_list(to_rows(tokenizer, f)) or None
        job_dir = self.job_dir(job)
        trainer_dir = job_dir / "trainer"
        watch = job_callback(self.store, job.id, self.gate, progress)
        common: dict[str, Any] = {
            "output_dir": str(trainer_dir),
            "num_train_epochs": hp.get("n_epochs", 1),
            "max_steps": hp.get("max_steps") or -1,
            "per_device_train_batch_size": hp.get("batch_size", 4),
            "per_device_eval_batch_size": hp.get("batch_size", 4),
            "learning_rate": hp.get("learning_rate", 2e-4),
            "logging_steps": 1,
            "eval_strategy": "steps" if evaluation is not None else "no",
            "eval_steps": hp.get("eval_steps", 5),
            "save_strategy": "steps",
            "save_steps": hp.get("save_steps", 50),
            "save_total_limit": 1,
            "report_to": "none",
            "seed": hp.get("seed", 0),
            "bf16": False,
            "fp16": False,
            "gradient_checkpointing": False,
            "use_cpu": not torch.cuda.is_available(),
            "disable_tqdm": True,
            "dataloader_num_workers": 0,
            "max_length": hp.get("max_length", 1024),
        }
        peft_config = LoraConfig(
            r=hp.get("lora_r", 8),
            lora_alpha=hp.get("lora_alpha", 16),
            lora_dropout=hp.get("lora_dropout", 0.05),
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )
        self.store.update(job.id, status="running")
        if dpo:
            from trl import DPOConfig, DPOTrainer

            trainer = DPOTrainer(
                model=model,
                args=DPOConfig(**common, beta=hp.get("beta", 0.1)),
                train_dataset=train,
                eval_dataset=evaluation,
                processing_class=tokenizer,
                peft_config=peft_config,
                callbacks=[watch],
            )
        else:
            from trl import SFTConfig, SFTTrainer

            trainer = SFTTrainer(
                model=model,
                args=SFTConfig(**common, completion_only_loss=True),
                train_dataset=train,
                eval_dataset=evaluation,
                processing_class=tokenizer,
                peft_config=peft_config,
                callbacks=[watch],
            )
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # losses go to the job's events, not stdout
        resume = trainer_dir.is_dir() and any(trainer_dir.glob("checkpoint-*"))
        if resume:
            self.store.add_event(job.id, "resuming from the last checkpoint")
        try:
            with claim_kept(self.store, job.id, self.holder, self.lease_s):
                trainer.train(resume_from_checkpoint=True if resume else None)
        finally:
            watch.release()
        if evaluation is not None and not self.store.job(job.id).cancel_requested:
            final = trainer.evaluate()
            if "eval_loss" in final:
                self.store.add_event(
                    job.id,
                    "final validation",
                    step=trainer.state.global_step,
                    metrics={"valid_loss": float(final["eval_loss"])},
                )
        if self.store.job(job.id).cancel_requested:
            raise Cancelled()
        adapter = job_dir / "adapter"
        trainer.model.save_pretrained(str(adapter))
        self.store.add_event(job.id, f"adapter saved to {adapter}")
        return self.store.update(job.id, status="succeeded", adapter_path=str(adapter))

    def candidate(self, job: FineTuneJob) -> tuple[dict[str, Any], dict[str, Any]]:
        """(registry spec, extra provenance) of a succeeded job's adapter."""
        spec = {
            "llm": {"provider": "local", "model": job.base_model, "adapter_path": job.adapter_path}
        }
        return spec, {"adapter_path": job.adapter_path}
