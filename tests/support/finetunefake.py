"""An HTTP-level fake of OpenAI's files and fine-tuning jobs API for respx, in the official
response shapes: uploads, job creation, a scripted status life (validating_files -> queued ->
running -> succeeded / failed / cancelled), events, checkpoints with metrics, the result file,
cancel, and error statuses on any route. Test doubles live here only."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import respx

from tests.support.fakes import error

API = "https://api.openai.com/v1"
T0 = 1_790_000_000


class FakeFineTuning:
    """The fake API's state; `mount(router)` adds its routes to a respx router."""

    def __init__(
        self,
        statuses: list[str] | None = None,
        model: str = "gpt-4o-mini-2024-07-18",
        failure: dict[str, str] | None = None,
    ):
        self.statuses = list(statuses or ["validating_files", "queued", "running", "succeeded"])
        self.model = model
        self.failure = failure or {"code": "invalid_training_file", "message": "line 3 is bad"}
        self.uploads: list[dict[str, Any]] = []
        self.created: list[dict[str, Any]] = []
        self.retrieves = 0
        self.cancelled = False
        self.errors: dict[str, list[httpx.Response]] = {}  # route name -> responses to give first

    # -- the job object ------------------------------------------------------------------------

    @property
    def status(self) -> str:
        if self.cancelled:
            return "cancelled"
        return self.statuses[min(max(self.retrieves - 1, 0), len(self.statuses) - 1)]

    def job(self, status: str | None = None) -> dict[str, Any]:
        status = status or self.status
        done = status in ("succeeded", "failed", "cancelled")
        created = self.created[-1] if self.created else {}
        return {
            "object": "fine_tuning.job",
            "id": "ftjob-abc123",
            "model": self.model,
            "created_at": T0,
            "finished_at": T0 + 600 if done else None,
            "fine_tuned_model": f"ft:{self.model}:acme:docs:abc123"
            if status == "succeeded"
            else None,
            "organization_id": "org-fake",
            "result_files": ["file-result"] if status == "succeeded" else [],
            "status": status,
            "validation_file": created.get("validation_file"),
            "training_file": created.get("training_file", "file-train"),
            "hyperparameters": {"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 1.8},
            "trained_tokens": 12345 if status == "succeeded" else None,
            "error": self.failure if status == "failed" else None,
            "seed": created.get("seed", 0),
            "method": created.get("method"),
        }

    def events(self) -> dict[str, Any]:
        data = [
            {
                "object": "fine_tuning.job.event",
                "id": "ftevent-1",
                "created_at": T0,
                "level": "info",
                "message": "Validating training file",
                "type": "message",
            },
        ]
        if self.retrieves >= 3:
            data.append(
                {
                    "object": "fine_tuning.job.event",
                    "id": "ftevent-2",
                    "created_at": T0 + 60,
                    "level": "info",
                    "message": "Step 1/20: training loss=1.90",
                    "type": "metrics",
                    "data": {"step": 1, "train_loss": 1.9, "train_mean_token_accuracy": 0.5},
                },
            )
        if self.status == "succeeded":
            data.append(
                {
                    "object": "fine_tuning.job.event",
                    "id": "ftevent-3",
                    "created_at": T0 + 600,
                    "level": "info",
                    "message": "The job has successfully completed",
                    "type": "message",
                },
            )
        return {"object": "list", "data": list(reversed(data)), "has_more": False}

    def checkpoints(self) -> dict[str, Any]:
        data = []
        if self.retrieves >= 3:
            data.append(
                {
                    "object": "fine_tuning.job.checkpoint",
                    "id": "ftckpt-10",
                    "created_at": T0 + 300,
                    "fine_tuned_model_checkpoint": f"ft:{self.model}:acme:docs:abc123:ckpt-step-10",
                    "fine_tuning_job_id": "ftjob-abc123",
                    "step_number": 10,
                    "metrics": {
                        "step": 10,
                        "train_loss": 1.2,
                        "valid_loss": 1.4,
                        "train_mean_token_accuracy": 0.7,
                    },
                },
            )
        return {
            "object": "list",
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }

    # -- routes --------------------------------------------------------------------------------

    def _first_error(self, name: str) -> httpx.Response | None:
        queue = self.errors.get(name)
        return queue.pop(0) if queue else None

    def mount(
        self, router: respx.Router, host: str = "api.openai.com", prefix: str = "/v1"
    ) -> None:
        """Routes on OpenAI (default) or, with host and prefix `/openai`, on Azure OpenAI."""

        def upload(request: httpx.Request) -> httpx.Response:
            if (e := self._first_error("upload")) is not None:
                return e
            n = len(self.uploads) + 1
            name = "validation.jsonl" if b"validation" in request.content[:2000] else "train.jsonl"
            self.uploads.append({"id": f"file-{n}", "bytes": len(request.content)})
            return httpx.Response(
                200,
                json={
                    "object": "file",
                    "id": f"file-{n}",
                    "bytes": len(request.content),
                    "created_at": T0,
                    "filename": name,
                    "purpose": "fine-tune",
                    "status": "processed",
                },
            )

        def create(request: httpx.Request) -> httpx.Response:
            if (e := self._first_error("create")) is not None:
                return e
            self.created.append(json.loads(request.content))
            return httpx.Response(200, json=self.job("validating_files"))

        def retrieve(request: httpx.Request) -> httpx.Response:
            if (e := self._first_error("retrieve")) is not None:
                return e
            self.retrieves += 1
            return httpx.Response(200, json=self.job())

        def cancel(request: httpx.Request) -> httpx.Response:
            if (e := self._first_error("cancel")) is not None:
                return e
            self.cancelled = True
            return httpx.Response(200, json=self.job("cancelled"))

        def content(request: httpx.Request) -> httpx.Response:
            csv = "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy\n"
            csv += "".join(
                f"{s},{2.0 - s * 0.05:.2f},0.6,{2.1 - s * 0.04:.2f},0.55\n" for s in range(1, 21)
            )
            return httpx.Response(200, content=base64.b64encode(csv.encode()))

        def at(path: str) -> dict[str, str]:
            return {"host": host, "path": prefix + path}

        job = "/fine_tuning/jobs/ftjob-abc123"
        router.post(**at("/files")).mock(side_effect=upload)
        router.post(**at("/fine_tuning/jobs")).mock(side_effect=create)
        router.get(**at(job)).mock(side_effect=retrieve)
        router.get(**at(f"{job}/events")).mock(
            side_effect=lambda r: httpx.Response(200, json=self.events())
        )
        router.get(**at(f"{job}/checkpoints")).mock(
            side_effect=lambda r: httpx.Response(200, json=self.checkpoints())
        )
        router.post(**at(f"{job}/cancel")).mock(side_effect=cancel)
        router.get(**at("/files/file-result/content")).mock(side_effect=content)


__all__ = ["API", "FakeFineTuning", "error"]
