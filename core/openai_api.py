"""One way to reach an OpenAI-compatible endpoint (core.settings.OpenAIEndpoint: the chat model,
the teacher, the judge): the SDK client built from its settings, the name to send as the model,
and one translation of the SDK's typed errors into the project's errors, with what to do.
Retries are the SDK's own (`max_retries`); nothing here loops."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.errors import ConfigError, ProviderError

if TYPE_CHECKING:
    from core.settings import OpenAIEndpoint


def openai_client(
    endpoint: OpenAIEndpoint, asynchronous: bool = False, http_client: Any = None
) -> Any:
    """The SDK client of `endpoint`: Azure OpenAI when an Azure endpoint is set, else OpenAI or
    the OpenAI-compatible server at its base URL. ConfigError, naming the variables to set, when
    there is no way to reach it."""
    import openai

    key = endpoint.api_key.get_secret_value() if endpoint.api_key else None
    env = endpoint.ENV
    common: dict[str, Any] = {"timeout": endpoint.timeout_s, "max_retries": endpoint.max_retries}
    if http_client is not None:
        common["http_client"] = http_client
    if endpoint.azure_endpoint:
        if not key:
            raise ConfigError(f"Azure OpenAI needs an API key: set {env}API_KEY or OPENAI_API_KEY")
        azure = openai.AsyncAzureOpenAI if asynchronous else openai.AzureOpenAI
        return azure(
            azure_endpoint=endpoint.azure_endpoint,
            api_key=key,
            api_version=endpoint.api_version,
            **common,
        )
    if key is None and not endpoint.base_url:
        raise ConfigError(
            f"{endpoint.ROLE} needs OPENAI_API_KEY (or {env}API_KEY), or {env}BASE_URL for an "
            "OpenAI-compatible server"
        )
    plain = openai.AsyncOpenAI if asynchronous else openai.OpenAI
    return plain(api_key=key or "unused", base_url=endpoint.base_url, **common)


def model_name(endpoint: OpenAIEndpoint) -> str:
    """What to send as `model`: the Azure deployment, else the model; ConfigError when unset."""
    if endpoint.azure_endpoint:
        if not endpoint.azure_deployment:
            raise ConfigError(
                f"Azure OpenAI needs a deployment: set {endpoint.ENV}AZURE_DEPLOYMENT"
            )
        return endpoint.azure_deployment
    if not endpoint.model:
        raise ConfigError(f"no model for {endpoint.ROLE}: set {endpoint.ENV}MODEL")
    return endpoint.model


def api_detail(exc: BaseException) -> str:
    """The server's own error message, without the SDK's wrapping."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error") if isinstance(body.get("error"), dict) else body
        if isinstance(inner.get("message"), str):
            return inner["message"]
    return str(getattr(exc, "message", exc))


def api_reason(exc: BaseException, endpoint: OpenAIEndpoint, role: str | None = None) -> str:
    """What went wrong with a call to `endpoint`, from the SDK's typed exceptions, and what to do
    (`role` names the server in the message when it is not the endpoint's own)."""
    import openai

    who, env = role or endpoint.ROLE, endpoint.ENV
    if isinstance(exc, openai.AuthenticationError):
        return f"{who} rejected the API key (401): check OPENAI_API_KEY / {env}API_KEY"
    if isinstance(exc, openai.PermissionDeniedError):
        return f"{who} refused access (403): {api_detail(exc)}; check the key's permissions"
    if isinstance(exc, openai.NotFoundError):
        return f"{who} does not know it (404): {api_detail(exc)}; check {env}MODEL"
    if isinstance(exc, openai.RateLimitError):
        return (
            f"{who} kept rate limiting (429) after retries: wait and try again, or raise "
            f"{env}MAX_RETRIES"
        )
    if isinstance(exc, openai.BadRequestError):
        return f"{who} refused the request (400): {api_detail(exc)}"
    if isinstance(exc, openai.APIStatusError):
        return f"{who} failed ({exc.status_code}) after retries: {api_detail(exc)}"
    if isinstance(exc, openai.APIConnectionError):
        return f"cannot reach {who}: check {env}BASE_URL and the network"
    return f"{who} failed: {type(exc).__name__}: {str(exc)[:300]}"


def api_error(
    exc: BaseException, endpoint: OpenAIEndpoint, role: str | None = None
) -> ProviderError:
    """`api_reason` as the project's error, to raise from the SDK's."""
    return ProviderError(api_reason(exc, endpoint, role))


@dataclass(frozen=True)
class ModelClient:
    """An endpoint's SDK client with the model name to send, and the endpoint itself (for the
    advice in error messages)."""

    client: Any
    model: str
    endpoint: OpenAIEndpoint

    def reason(self, exc: BaseException) -> str:
        return api_reason(exc, self.endpoint)

    def ask(self, prompt: str, temperature: float = 0.0, json_reply: bool = False) -> str:
        """The reply to one user message (a JSON object when `json_reply`); a failed call, after
        the SDK's retries, raises ProviderError saying what to do."""
        import openai

        extra: dict[str, Any] = {"response_format": {"type": "json_object"}} if json_reply else {}
        try:
            reply = self.client.chat.completions.create(
                model=self.model,
                messages=[{"role": "user", "content": prompt}],
                temperature=temperature,
                **extra,
            )
        except openai.APIError as exc:
            raise api_error(exc, self.endpoint) from exc
        return reply.choices[0].message.content or ""


def connect(
    endpoint: OpenAIEndpoint, asynchronous: bool = False, http_client: Any = None
) -> ModelClient:
    """The client and model name of `endpoint` (see openai_client and model_name)."""
    return ModelClient(
        openai_client(endpoint, asynchronous, http_client), model_name(endpoint), endpoint
    )
