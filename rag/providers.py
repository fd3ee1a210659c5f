"""Chat model providers, chosen by name: `openai` (OpenAI, Azure OpenAI, or any OpenAI-compatible
server through a base URL), `local` (a Hugging Face model directory, optionally with a LoRA adapter)
and `extractive` (no LLM at all). Vendor imports stay inside each factory."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.errors import ConfigError

if TYPE_CHECKING:
    from llama_index.core.llms import LLM

    from core.settings import LLMSettings


@dataclass(frozen=True)
class ChatModel:
    provider: str
    model_id: str
    llm: LLM | None  # None: answers are extracted, not generated
    stream_usage: bool = False  # ask the server for token usage in the stream
    endpoint: LLMSettings | None = None  # an `openai` model's endpoint (for error advice)

    @property
    def badge(self) -> str:
        if self.llm is None:
            return "extractive · no LLM (quotes from your documents)"
        return f"{self.provider} · {self.model_id}"


def default_provider(cfg: LLMSettings) -> str:
    if cfg.provider:
        return cfg.provider
    return "openai" if cfg.configured else "extractive"


def _openai(cfg: LLMSettings) -> ChatModel:
    key = cfg.api_key.get_secret_value() if cfg.api_key else None
    common = {
        "temperature": cfg.temperature,
        "max_tokens": cfg.max_tokens,
        "timeout": cfg.timeout_s,
        "max_retries": cfg.max_retries,
    }
    if cfg.azure_endpoint:
        from llama_index.llms.azure_openai import AzureOpenAI

        if not key or not cfg.azure_deployment:
            raise ConfigError(
                "Azure OpenAI needs RAG_LLM__API_KEY (or OPENAI_API_KEY) and "
                "RAG_LLM__AZURE_DEPLOYMENT; or choose RAG_LLM__PROVIDER=extractive"
            )
        llm = AzureOpenAI(
            model=cfg.model,
            engine=cfg.azure_deployment,
            azure_endpoint=cfg.azure_endpoint,
            api_key=key,
            api_version=cfg.api_version,
            **common,
        )
        return ChatModel("openai", f"azure:{cfg.azure_deployment}", llm, True, cfg)
    if cfg.base_url:
        from llama_index.llms.openai_like import OpenAILike

        llm = OpenAILike(
            model=cfg.model,
            api_base=cfg.base_url,
            api_key=key or "unused",
            is_chat_model=True,
            context_window=32768,
            **common,
        )
        return ChatModel("openai", cfg.model, llm, False, cfg)
    if not key:
        raise ConfigError(
            "the openai provider needs OPENAI_API_KEY (or RAG_LLM__API_KEY), or RAG_LLM__BASE_URL "
            "for an OpenAI-compatible server; or choose RAG_LLM__PROVIDER=extractive"
        )
    from llama_index.llms.openai import OpenAI

    return ChatModel("openai", cfg.model, OpenAI(model=cfg.model, api_key=key, **common), True, cfg)


def _local(cfg: LLMSettings) -> ChatModel:
    from rag.local_llm import LocalLLM

    llm = LocalLLM(
        model_dir=cfg.model,
        adapter_path=str(cfg.adapter_path) if cfg.adapter_path else None,
        max_new_tokens=cfg.max_tokens,
        temperature=cfg.temperature,
    )
    model_id = cfg.model + (f"+lora:{cfg.adapter_path}" if cfg.adapter_path else "")
    return ChatModel("local", model_id, llm)


def _extractive(cfg: LLMSettings) -> ChatModel:
    return ChatModel("extractive", "extractive", None)


CHAT_PROVIDERS: dict[str, Callable[[LLMSettings], ChatModel]] = {
    "openai": _openai,
    "local": _local,
    "extractive": _extractive,
}


def build_chat_model(cfg: LLMSettings) -> ChatModel:
    """The chat model the settings name (see default_provider); unknown names list known ones."""
    name = default_provider(cfg)
    factory = CHAT_PROVIDERS.get(name)
    if factory is None:
        raise ConfigError(
            f"unknown chat provider {name!r}; known: {', '.join(sorted(CHAT_PROVIDERS))}"
        )
    return factory(cfg)
