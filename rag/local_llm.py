"""A Hugging Face causal LM from a local directory, optionally with a LoRA adapter on top: how a
locally fine-tuned model is served. Runs on CPU by default; streams through a background thread."""

from __future__ import annotations

from collections.abc import Sequence
from threading import Thread
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.llms import CustomLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from pydantic import PrivateAttr

from core.errors import ConfigError


def load_causal_lm(model_dir: str, setting: str) -> tuple[Any, Any]:
    """(tokenizer, model) of a Hugging Face causal LM folder, never from the hub; ConfigError
    naming `setting` (the variable that points at the folder) when it cannot be loaded."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot load a causal LM from {model_dir}: {exc}; point {setting} at a Hugging Face "
            "model directory"
        ) from exc
    return tokenizer, model


class LocalLLM(CustomLLM):
    model_dir: str
    adapter_path: str | None = None
    max_new_tokens: int = 256
    temperature: float = 0.0
    device: str = "cpu"
    _model: Any = PrivateAttr()
    _tokenizer: Any = PrivateAttr()
    _context_window: int = PrivateAttr(default=2048)

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._tokenizer, model = load_causal_lm(self.model_dir, "RAG_LLM__MODEL")
        if self.adapter_path:
            from peft import PeftModel

            try:
                model = PeftModel.from_pretrained(model, self.adapter_path)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"cannot load LoRA adapter {self.adapter_path}: {exc}") from exc
        self._model = model.to(self.device).eval()
        self._context_window = int(getattr(model.config, "max_position_embeddings", 2048) or 2048)
        if self._tokenizer.pad_token_id is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token
        if getattr(self._tokenizer, "chat_template", None):
            self.messages_to_prompt = self._chat_template

    def _chat_template(self, messages: Sequence[ChatMessage]) -> str:
        return self._tokenizer.apply_chat_template(
            [{"role": m.role.value, "content": m.content or ""} for m in messages],
            tokenize=False,
            add_generation_prompt=True,
        )

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            context_window=self._context_window,
            num_output=self.max_new_tokens,
            model_name=self.model_dir,
            is_chat_model=False,
        )

    def _inputs(self, prompt: str) -> Any:
        budget = max(self._context_window - self.max_new_tokens, 16)
        enc = self._tokenizer(prompt, return_tensors="pt", truncation=True, max_length=budget)
        return {k: v.to(self.device) for k, v in enc.items()}

    def _generate_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "pad_token_id": self._tokenizer.pad_token_id,
        }
        if self.temperature > 0:
            kw.update(do_sample=True, temperature=self.temperature)
        else:
            kw.update(do_sample=False)
        return kw

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        import torch

        inputs = self._inputs(prompt)
        with torch.inference_mode():
            out = self._model.generate(**inputs, **self._generate_kwargs())
        new = out[0][inputs["input_ids"].shape[1] :]
        return CompletionResponse(
            text=self._tokenizer.decode(new, skip_special_tokens=True),
            additional_kwargs={
                "prompt_tokens": int(inputs["input_ids"].shape[1]),
                "completion_tokens": len(new),
            },
        )

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        import torch
        from transformers import TextIteratorStreamer

        inputs = self._inputs(prompt)
        streamer = TextIteratorStreamer(self._tokenizer, skip_prompt=True, skip_special_tokens=True)

        def run() -> None:
            with torch.inference_mode():
                self._model.generate(**inputs, **self._generate_kwargs(), streamer=streamer)

        thread = Thread(target=run, daemon=True)
        thread.start()
        prompt_tokens = int(inputs["input_ids"].shape[1])

        def gen() -> CompletionResponseGen:
            text = ""
            for delta in streamer:
                text += delta
                yield CompletionResponse(text=text, delta=delta)
            thread.join()
            completion = len(self._tokenizer(text, add_special_tokens=False)["input_ids"])
            yield CompletionResponse(
                text=text,
                delta="",
                additional_kwargs={"prompt_tokens": prompt_tokens, "completion_tokens": completion},
            )

        return gen()
