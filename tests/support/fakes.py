"""HTTP-level fakes of the OpenAI chat completions API (official response shapes), for respx,
and a tiny randomly initialised causal LM made on the spot. Test doubles live here only."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

OPENAI_CHAT_URL = "https://api.openai.com/v1/chat/completions"


def completion(content: str, model: str = "gpt-4o-mini") -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "id": "chatcmpl-fake1",
            "object": "chat.completion",
            "created": 1700000000,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28},
        },
    )


def stream(pieces: list[str], model: str = "gpt-4o-mini", usage: bool = True) -> httpx.Response:
    """A streamed completion as server-sent events, ending with a usage chunk and [DONE]."""
    events = []
    for i, piece in enumerate(pieces):
        delta = {"content": piece} if i else {"role": "assistant", "content": piece}
        events.append(
            {
                "id": "chatcmpl-fake2",
                "object": "chat.completion.chunk",
                "created": 1700000000,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
            }
        )
    events.append(
        {
            "id": "chatcmpl-fake2",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": model,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        }
    )
    if usage:
        events.append(
            {
                "id": "chatcmpl-fake2",
                "object": "chat.completion.chunk",
                "created": 1700000000,
                "model": model,
                "choices": [],
                "usage": {"prompt_tokens": 111, "completion_tokens": 7, "total_tokens": 118},
            }
        )
    body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body.encode())


def error(status: int, message: str, code: str | None = None) -> httpx.Response:
    kinds = {400: "invalid_request_error", 401: "invalid_request_error", 429: "rate_limit_error"}
    return httpx.Response(
        status,
        headers={"retry-after-ms": "10", "x-request-id": "req_fake"},
        json={
            "error": {
                "message": message,
                "type": kinds.get(status, "server_error"),
                "param": None,
                "code": code,
            }
        },
    )


def make_tiny_lm(root: Path, with_adapter: bool = False) -> tuple[Path, Path | None]:
    """A randomly initialised 1-layer GPT-2 with a word-level tokenizer and a chat template, saved
    as a Hugging Face directory; optionally a LoRA adapter with non-zero weights beside it."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    torch.manual_seed(0)
    words = [
        "the",
        "a",
        "of",
        "to",
        "and",
        "is",
        "in",
        "lighthouse",
        "keeper",
        "velmora",
        "festival",
        "october",
        "answer",
        "question",
        "context",
        "passages",
        "system",
        "user",
        "assistant",
        "orsolya",
        "brandt",
        "years",
        "served",
        "[1]",
        "[2]",
        ".",
        ",",
        "?",
    ]
    vocab = {"<unk>": 0, "<eos>": 1, "<pad>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>", pad_token="<pad>"
    )
    fast.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
    )
    model_dir = root / "tiny-lm"
    fast.save_pretrained(model_dir)
    config = GPT2Config(
        vocab_size=len(vocab),
        n_positions=512,
        n_embd=32,
        n_layer=1,
        n_head=2,
        eos_token_id=1,
        bos_token_id=1,
        pad_token_id=2,
    )
    model = GPT2LMHeadModel(config)
    model.save_pretrained(model_dir)
    adapter_dir = None
    if with_adapter:
        from peft import LoraConfig, get_peft_model

        peft_model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn"]))
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, 0.5)  # a fresh adapter is a no-op; make it change outputs
        adapter_dir = root / "tiny-lora"
        peft_model.save_pretrained(adapter_dir)
    return model_dir, adapter_dir
