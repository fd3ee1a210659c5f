"""What every fine-tuning operation needs, built once per entry point: the settings, the job store,
the registry, the OpenAI client (made on first use), who this process is when it watches a job,
and the compute gate of a process that also answers questions."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.errors import RagError

if TYPE_CHECKING:
    from core.compute import ComputeGate
    from core.jobstore import JobStore
    from core.registry import Registry
    from core.settings import Settings


def holder_id() -> str:
    """Who watches a job: this host and process, unique per start."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class FineTuneContext:
    """What every job operation needs; built once per entry point."""

    settings: Settings
    store: JobStore
    registry: Registry
    openai_client: Any = None  # built from settings on first use unless given (tests pass one)
    holder: str = field(default_factory=holder_id)
    # The process's compute gate, when it serves chat too (the app): local training takes it
    # one step at a time, so questions queue for at most a step instead of the whole job.
    gate: ComputeGate | None = None

    @classmethod
    def open(cls, settings: Settings) -> FineTuneContext:
        """For a command line: the settings' database, its job store and registry."""
        from core.db.database import open_database
        from core.jobstore import JobStore
        from core.registry import Registry

        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = open_database(settings.database_url)
        return cls(settings, JobStore(db), Registry(db))

    def client(self) -> Any:
        if self.openai_client is None:
            from finetune.openai_jobs import openai_client

            self.openai_client = openai_client(self.settings.llm)
        return self.openai_client

    def backend(self, name: str) -> Any:
        if name == "openai":
            from finetune.openai_jobs import OpenAIBackend

            return OpenAIBackend(self.client(), self.store)
        if name == "local":
            from finetune.local_jobs import LocalBackend

            return LocalBackend(self.store, self.settings.finetune_dir, self.holder, gate=self.gate)
        raise RagError(f"unknown fine-tuning backend {name!r}; known: local, openai")
