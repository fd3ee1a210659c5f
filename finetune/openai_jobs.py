"""The `openai` backend: fine-tuning jobs on OpenAI or Azure OpenAI through the official SDK:
upload, create (supervised or dpo, hyperparameters, suffix, seed, validation file), poll, events,
checkpoints with their metrics, the result file's per-step losses, cancel. OpenAI is winding down
self-serve fine-tuning; a refused creation says so and names the `local` backend."""

from __future__ import annotations

import csv
import io
import logging
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import ConfigError, ProviderError
from core.jobstore import FineTuneJob, JobStore
from core.openai_api import api_detail, api_reason
from core.openai_api import openai_client as core_openai_client

if TYPE_CHECKING:
    from core.jobstore import DatasetRecord
    from core.settings import LLMSettings

log = logging.getLogger(__name__)

# OpenAI's published wind-down: new organisations refused since 2026-05-07, no new jobs for anyone
# after 2027-01-06; these base models and every model fine-tuned from them retire on 2027-01-14.
LAST_JOB_DAY = date(2027, 1, 6)
RETIREMENTS: dict[str, date] = {
    "gpt-4o-mini": date(2027, 1, 14),
    "gpt-4.1": date(2027, 1, 14),  # gpt-4.1, gpt-4.1-mini, gpt-4.1-nano
}
WIND_DOWN = (
    "OpenAI is winding down self-serve fine-tuning (new organisations refused since 2026-05-07, "
    "no new jobs after 2027-01-06): train with the `local` backend instead (the default, "
    "RAG_FINETUNE__BACKEND=local), then serve the adapter with the `local` provider or from "
    "vLLM through RAG_LLM__BASE_URL"
)
STATUSES = {"validating_files", "queued", "running", "succeeded", "failed", "cancelled"}


class JobRefused(ProviderError):
    """The provider will not create the job; the message says what to do instead."""


def base_of(model: str) -> str:
    """The base model of a fine-tuned name (`ft:gpt-4o-mini-2024-07-18:org:suffix:id`)."""
    return model.split(":")[1] if model.startswith("ft:") and ":" in model[3:] else model


def retirement_date(model: str) -> date | None:
    """The day `model` (or the base it was fine-tuned from) stops serving, if announced."""
    base = base_of(model)
    best = max((k for k in RETIREMENTS if base.startswith(k)), key=len, default=None)
    return RETIREMENTS[best] if best else None


def creation_refusal(model: str, today: date) -> str | None:
    """Why a new job for `model` must not even be tried today; None when it may."""
    if today > LAST_JOB_DAY:
        return f"no new OpenAI fine-tuning jobs after {LAST_JOB_DAY.isoformat()}. " + WIND_DOWN
    retires = retirement_date(model)
    if retires is not None and today >= retires:
        return f"{model} retired on {retires.isoformat()}. " + WIND_DOWN
    return None


def openai_client(cfg: LLMSettings) -> Any:
    """The SDK client of the chat model's account (core.openai_api): Azure when an endpoint is
    set, else OpenAI (or a compatible server's base URL)."""
    try:
        return core_openai_client(cfg)
    except ConfigError as exc:
        raise ConfigError(
            f"the openai fine-tuning backend: {exc}; or use the local backend"
        ) from exc


def _api_message(exc: Exception, endpoint: LLMSettings | None = None) -> str:
    from core.settings import LLMSettings

    return api_reason(exc, endpoint or LLMSettings(), role="OpenAI")


def _refused(exc: Exception) -> bool:
    """Did the creation fail because fine-tuning itself is not available to this account?"""
    import openai

    if isinstance(exc, openai.PermissionDeniedError):
        return True
    if isinstance(exc, openai.BadRequestError | openai.NotFoundError):
        text = f"{api_detail(exc)} {getattr(exc, 'code', '') or ''}".lower()
        return (
            any(
                word in text
                for word in (
                    "not available",
                    "no longer",
                    "not allowed",
                    "not supported for",
                    "wind",
                )
            )
            or "fine_tuning_not" in text
        )
    return False


def method_payload(method: str, hyper: dict[str, Any]) -> dict[str, Any]:
    """The `method` object of a job creation request."""
    params = {k: v for k, v in hyper.items() if v is not None}
    if method == "dpo":
        return {"type": "dpo", "dpo": {"hyperparameters": params}}
    params.pop("beta", None)
    return {"type": "supervised", "supervised": {"hyperparameters": params}}


def parse_result_metrics(text: str) -> list[tuple[int, dict[str, float]]]:
    """Per-step metrics from a job's result file (CSV: step, train_loss, valid_loss, ...)."""
    out = []
    for row in csv.DictReader(io.StringIO(text)):
        try:
            step = int(float(row.get("step") or ""))
        except ValueError:
            continue
        metrics = {}
        for key, value in row.items():
            if key == "step" or value in (None, ""):
                continue
            try:
                metrics[key] = float(value)
            except ValueError:
                continue
        if metrics:
            out.append((step, metrics))
    return out


class OpenAIBackend:
    """Runs one job's life on OpenAI (or Azure OpenAI): start, then poll until final."""

    name = "openai"

    def __init__(self, client: Any, store: JobStore):
        self.client = client
        self.store = store

    def start(
        self, job: FineTuneJob, dataset: DatasetRecord, today: date | None = None
    ) -> FineTuneJob:
        """Upload the files and create the provider's job. A refusal (the wind-down, or the
        provider saying no) fails the job with a message naming the `local` backend."""
        import openai

        today = today or datetime.now(UTC).date()
        refusal = creation_refusal(job.base_model, today)
        if refusal:
            self.store.update(job.id, status="failed", error=refusal)
            raise JobRefused(refusal)
        folder = Path(dataset.path)
        files = dataset.card.files
        train_role, valid_role = (
            ("dpo_train", "dpo_validation") if job.method == "dpo" else ("train", "validation")
        )
        if train_role not in files:
            error = f"dataset {dataset.id} has no {train_role} file for a {job.method} job"
            self.store.update(job.id, status="failed", error=error)
            raise JobRefused(error)
        try:
            self.store.update(job.id, status="validating_files")
            train_id = self._upload(job, folder / files[train_role])
            valid_id = (
                self._upload(job, folder / files[valid_role]) if valid_role in files else None
            )
            hyper = dict(job.hyperparameters)
            created = self.client.fine_tuning.jobs.create(
                model=job.base_model,
                training_file=train_id,
                validation_file=valid_id,
                suffix=hyper.pop("suffix", None) or openai.NOT_GIVEN,
                seed=hyper.pop("seed", None) if hyper.get("seed") is not None else openai.NOT_GIVEN,
                method=method_payload(job.method, hyper),
            )
        except openai.APIError as exc:
            if _refused(exc):
                message = f"OpenAI refused to create the job: {api_detail(exc)} "
                message += WIND_DOWN
                self.store.update(job.id, status="failed", error=message)
                raise JobRefused(message) from exc
            message = _api_message(exc)
            self.store.update(job.id, status="failed", error=message)
            raise ProviderError(message) from exc
        self.store.add_event(job.id, f"created OpenAI job {created.id}", external_id=None)
        return self.store.update(job.id, external_id=created.id, status=created.status)

    def _upload(self, job: FineTuneJob, path: Path) -> str:
        with path.open("rb") as f:
            uploaded = self.client.files.create(file=f, purpose="fine-tune")
        self.store.add_event(job.id, f"uploaded {path.name} as {uploaded.id}")
        return uploaded.id

    def poll(self, job: FineTuneJob) -> FineTuneJob:
        """Read the provider's job, its new events and checkpoints, and store them. A transient
        failure (429, 5xx, network, after the SDK's retries) is logged as an event and the job
        is left as it was, for the next poll; a bad key raises."""
        import openai

        if job.external_id is None:
            return job
        try:
            remote = self.client.fine_tuning.jobs.retrieve(job.external_id)
            self._events(job)
            self._checkpoints(job)
        except openai.AuthenticationError as exc:
            raise ProviderError(_api_message(exc)) from exc
        except openai.APIError as exc:
            self.store.add_event(job.id, f"poll failed, will retry: {_api_message(exc)}", "warning")
            return self.store.job(job.id)
        fields: dict[str, Any] = {}
        if remote.status in STATUSES:
            fields["status"] = remote.status
        if remote.fine_tuned_model:
            fields["fine_tuned_model"] = remote.fine_tuned_model
        if remote.trained_tokens is not None:
            fields["trained_tokens"] = remote.trained_tokens
        if remote.status == "failed":
            err = remote.error
            fields["error"] = (
                f"{err.code}: {err.message}" if err is not None and err.message else "failed"
            )
        if remote.status == "cancelled":
            fields["error"] = "cancelled" + (" by an admin" if job.cancel_requested else "")
        if remote.status == "succeeded":
            self._result_metrics(job, remote.result_files or [])
        return self.store.update(job.id, **fields)

    def _events(self, job: FineTuneJob) -> None:
        page = self.client.fine_tuning.jobs.list_events(job.external_id, limit=100)
        # Newest first from the API; stored oldest first, each once (keyed by the event id).
        for event in reversed(list(page.data)):
            data = event.data if isinstance(event.data, dict) else {}
            step = data.get("step")
            metrics = {
                k: float(v)
                for k, v in data.items()
                if k != "step" and isinstance(v, int | float) and not isinstance(v, bool)
            }
            self.store.add_event(
                job.id,
                event.message,
                level=event.level,
                step=int(step) if isinstance(step, int | float) and metrics else None,
                metrics=metrics if isinstance(step, int | float) else None,
                external_id=event.id,
                created_at=datetime.fromtimestamp(event.created_at, UTC),
            )

    def _checkpoints(self, job: FineTuneJob) -> None:
        page = self.client.fine_tuning.jobs.checkpoints.list(job.external_id)
        for cp in reversed(list(page.data)):
            m = cp.metrics
            metrics = {
                k: float(v)
                for k, v in (m.model_dump() if m is not None else {}).items()
                if isinstance(v, int | float) and k != "step"
            }
            self.store.add_event(
                job.id,
                f"checkpoint {cp.fine_tuned_model_checkpoint} at step {cp.step_number}",
                step=cp.step_number,
                metrics=metrics,
                external_id=cp.id,
            )

    def _result_metrics(self, job: FineTuneJob, result_files: list[str]) -> None:
        for file_id in result_files[:1]:
            text = self.client.files.content(file_id).text
            if text.lstrip().startswith(("c3RlcC", "c3Rlc")):  # the API serves it base64-encoded
                import base64

                text = base64.b64decode(text).decode("utf-8", "replace")
            for step, metrics in parse_result_metrics(text):
                self.store.add_event(
                    job.id,
                    f"step {step}",
                    step=step,
                    metrics=metrics,
                    external_id=f"{file_id}:{step}",
                )

    def cancel(self, job: FineTuneJob) -> FineTuneJob:
        """Cancel at the provider; the job keeps `cancelled by an admin` as its reason."""
        import openai

        if job.external_id is None:
            return self.store.update(job.id, status="cancelled", error="cancelled by an admin")
        try:
            remote = self.client.fine_tuning.jobs.cancel(job.external_id)
        except openai.APIError as exc:
            raise ProviderError(f"could not cancel: {_api_message(exc)}") from exc
        status = remote.status if remote.status in STATUSES else "cancelled"
        return self.store.update(job.id, status=status, error="cancelled by an admin")

    def candidate(self, job: FineTuneJob) -> tuple[dict[str, Any], dict[str, Any]]:
        """(registry spec, extra provenance) of a succeeded job's model."""
        model = job.fine_tuned_model or ""
        retires = retirement_date(model) or retirement_date(job.base_model)
        extra: dict[str, Any] = {"fine_tuned_model": model}
        if retires is not None:
            extra["retires_on"] = retires.isoformat()
        if "azure" in type(self.client).__name__.lower():
            extra["note"] = "deploy this model in Azure OpenAI, then use its deployment name"
        return {"llm": {"provider": "openai", "model": model}}, extra
