"""The one typed settings object. Built once per entry point from env vars (prefix ``RAG_``, nested
sections joined by ``__``, e.g. ``RAG_CHROMA__URL``) and an optional ``.env``, then passed down."""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ChromaSettings(BaseModel):
    path: Path | None = Field(
        default=None,
        description="Directory of the embedded Chroma database; defaults to <data_dir>/chroma.",
    )
    url: str | None = Field(
        default=None,
        description="URL of a Chroma server (`chroma run`), e.g. http://127.0.0.1:8000. "
        "When set, the embedded database is not used.",
    )
    collection: str = Field(default="docs", description="Name of the Chroma collection.")


class EmbeddingSettings(BaseModel):
    provider: str = Field(
        default="local",
        description="Embedding provider: `local` (sentence-transformers) or `openai` "
        "(any OpenAI-compatible embeddings endpoint).",
    )
    model: str | None = Field(
        default=None,
        description="Model: a sentence-transformers directory for `local` (default: the packaged "
        "all-MiniLM-L6-v2), or a model name for `openai` (default: text-embedding-3-small).",
    )
    api_key: SecretStr | None = Field(
        default=None, description="API key for the `openai` provider (else OPENAI_API_KEY)."
    )
    base_url: str | None = Field(
        default=None, description="Base URL of an OpenAI-compatible embeddings server."
    )
    backend: Literal["torch", "torch-bf16", "onnx", "onnx-int8"] | None = Field(
        default=None,
        description="How the `local` model runs: `torch`, `torch-bf16` (torch under bfloat16 "
        "autocast), `onnx` (ONNX Runtime) or `onnx-int8` (ONNX Runtime, weights quantized to "
        "int8). Default: the backend that built the collection, else `torch-bf16` on a CPU "
        "with Intel AMX and `onnx-int8` elsewhere (AVX512-BF16 alone measured faster in "
        "int8). Part of the collection's embedding id: vectors of two backends never mix in "
        "one collection.",
    )
    cache_dir: Path | None = Field(
        default=None,
        description="Where ONNX exports of local models are kept (made once, then reused); "
        "default: <data_dir>/models.",
    )
    batch_size: int | None = Field(
        default=None,
        ge=1,
        description="Texts embedded per batch; default: 4 for `onnx-int8` and 16 for `torch-bf16` "
        "(the fastest measured there: short batches keep attention scores in cache), 64 "
        "otherwise.",
    )
    max_seq_length: int | None = Field(
        default=None,
        ge=16,
        description="Word pieces the `local` model reads per text (its window); default: the "
        "window that built the collection, else 512 for the packaged all-MiniLM-L6-v2 (its "
        "position table holds 512; it ranks pages better reading 512 than its own 256) and the "
        "model's own for other models. A change re-embeds, since it is part of the "
        "collection's embedding id.",
    )
    device: str = Field(default="cpu", description="Torch device for the `local` provider.")
    query_adapter: Path | None = Field(
        default=None,
        description="Directory of a linear query adapter (`python -m finetune.embedding "
        "adapter`) applied to question embeddings only; passages keep the model's own "
        "embeddings, so the collection is not re-embedded.",
    )


class ChunkingSettings(BaseModel):
    size: int | None = Field(
        default=None,
        ge=32,
        description="Chunk size in the embedding model's own tokens; default: the model's window "
        "less the heading prefix, so every chunk is embedded whole. A larger size is clamped to "
        "the window with a warning.",
    )
    overlap: int | None = Field(
        default=None,
        ge=0,
        description="Overlap between chunks in tokens; default: an eighth of the chunk size.",
    )

    @model_validator(mode="after")
    def _overlap_below_size(self) -> ChunkingSettings:
        if self.size is not None and self.overlap is not None and self.overlap >= self.size:
            raise ValueError(f"chunk overlap ({self.overlap}) must be below size ({self.size})")
        return self


class DatabaseSettings(BaseModel):
    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the chat log database; defaults to SQLite at "
        "<data_dir>/rag.db. PostgreSQL: postgresql+psycopg://user@host/db.",
    )


class OpenAIEndpoint(BaseModel):
    """An OpenAI-compatible model endpoint: OpenAI itself, Azure OpenAI (an endpoint and a
    deployment), or any OpenAI-compatible server through a base URL (vLLM, Ollama, llama.cpp).
    The chat model, the teacher and the judge are each one; core.openai_api builds the client
    and translates its errors."""

    # Who this endpoint is in messages, and the prefix of its variables (set per section).
    ROLE: ClassVar[str] = "the model server"
    ENV: ClassVar[str] = "RAG_LLM__"

    model: str | None = Field(default=None, description="Model name (Azure: the model behind it).")
    api_key: SecretStr | None = Field(
        default=None, description="API key; falls back to OPENAI_API_KEY."
    )
    base_url: str | None = Field(
        default=None,
        description="Base URL of an OpenAI-compatible server (vLLM, Ollama, llama.cpp).",
    )
    azure_endpoint: str | None = Field(
        default=None, description="Azure OpenAI endpoint; selects Azure when set."
    )
    azure_deployment: str | None = Field(default=None, description="Azure OpenAI deployment.")
    api_version: str = Field(default="2024-10-21", description="Azure OpenAI API version.")
    timeout_s: float = Field(default=60.0, gt=0, description="Request timeout in seconds.")
    max_retries: int = Field(
        default=3, ge=0, description="Retries on 429/5xx, done by the OpenAI SDK."
    )

    @property
    def configured(self) -> bool:
        """Whether there is a way to reach it: a key, a base URL or an Azure endpoint."""
        return self.api_key is not None or bool(self.base_url) or bool(self.azure_endpoint)

    @property
    def ready(self) -> bool:
        """Named (a model, or an Azure deployment) and reachable: what calling it needs."""
        return bool(self.model or self.azure_deployment) and self.configured


class LLMSettings(OpenAIEndpoint):
    ROLE: ClassVar[str] = "the chat model server"
    ENV: ClassVar[str] = "RAG_LLM__"

    provider: str | None = Field(
        default=None,
        description="Chat model provider: `openai`, `local` or `extractive`. Default: `openai` "
        "when an API key or base URL is configured, else `extractive`.",
    )
    model: str = Field(  # type: ignore[assignment]
        default="gpt-4o-mini",
        description="Model name (`openai`), or a Hugging Face model directory (`local`).",
    )
    adapter_path: Path | None = Field(
        default=None, description="LoRA adapter directory applied on top of a `local` model."
    )
    temperature: float = Field(default=0.1, ge=0, le=2, description="Sampling temperature.")
    max_tokens: int = Field(default=512, ge=1, description="Most tokens in one answer.")


class RetrievalSettings(BaseModel):
    top_k: int = Field(default=4, ge=1, description="Passages retrieved per question.")
    similarity_cutoff: float | None = Field(
        default=0.2,
        description="Passages scoring below this cosine similarity are dropped (unless they "
        "contain a rare word of the question, such as an exact name); None keeps all.",
    )
    hybrid: bool = Field(
        default=True,
        description="Fuse lexical (BM25) search with dense search; false: dense only.",
    )
    fusion: Literal["rrf", "weighted"] = Field(
        default="weighted",
        description="How dense and lexical rankings are fused: reciprocal rank fusion, or a "
        "weighted sum of normalised scores.",
    )
    rrf_k: int = Field(default=60, ge=1, description="The k of reciprocal rank fusion.")
    lexical_weight: float = Field(
        default=0.3, ge=0, le=1, description="Share of the lexical score in `weighted` fusion."
    )
    candidates: int = Field(
        default=30, ge=1, description="Candidates taken from each ranking before fusion."
    )
    source_pool: int = Field(
        default=2,
        ge=1,
        description="Sources are ranked by their best passage plus `source_bonus` times the "
        "scores of their next best ones, up to this many passages in all.",
    )
    source_bonus: float = Field(
        default=0.3,
        ge=0,
        le=1,
        description="Weight of a source's further matching passages in its rank: a document "
        "with several matching passages ranks above one lucky sentence; 0 ranks by the best "
        "passage alone. A run of consecutive matching passages of one section counts once "
        "(each continues the same text), so a document is not rewarded for its length or "
        "where it was cut.",
    )
    source_weight: float = Field(
        default=0.3,
        ge=0,
        le=1,
        description="Share of a passage's meaning-based score that comes from its whole source "
        "(the cosine to the mean of all the source's passage vectors), so a page about the "
        "question's topic ranks above a long page on other topics that mentions it once; 0 "
        "turns it off.",
    )
    max_per_source: int | None = Field(
        default=2,
        ge=1,
        description="Most passages from one source among those shown and given to the answerer, "
        "so one page's near-duplicates do not crowd out other sources; None: no cap.",
    )


class RerankerSettings(BaseModel):
    """A cross-encoder that re-scores the best fused candidates, reading question and passage
    together. Off until a reranker version that won at the gate names its model."""

    model_dir: Path | None = Field(
        default=None,
        description="Directory of a sentence-transformers cross-encoder (one trained here with "
        "`python -m finetune.rerank train`, or one downloaded elsewhere and copied in); None: "
        "no reranking.",
    )
    top_n: int = Field(
        default=10,
        ge=2,
        description="The best fused candidates the reranker re-scores; the rest keep their order "
        "below them.",
    )
    weight: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Share of the reranker's score in a candidate's new score; the rest is its "
        "fused retrieval score (both scaled to 0..1 over the candidates re-scored).",
    )
    backend: Literal["torch", "onnx", "onnx-int8"] = Field(
        default="onnx-int8",
        description="How the cross-encoder runs: torch, ONNX Runtime, or ONNX Runtime with its "
        "weights quantized to int8 (exported once from the model's own directory, cached).",
    )
    max_length: int = Field(
        default=256,
        ge=16,
        description="Word pieces of question and passage read together (a longer passage is "
        "read where it shares most words with the question); a reranker trained here is read "
        "at the window it was trained at (its version says so).",
    )
    focus: bool = Field(
        default=True,
        description="Read a passage longer than the window where it holds the most of the "
        "question's words (as a reranker trained here learned to); false: its head. A version "
        "trained here says which it learned.",
    )


class AppSettings(BaseModel):
    host: str = Field(default="127.0.0.1", description="Address the web app binds to.")
    port: int = Field(default=7860, description="Port of the web app.")
    admin_password: SecretStr | None = Field(
        default=None,
        description="Password for admin functions; required to bind a non-loopback address.",
    )
    prompt_path: Path | None = Field(
        default=None,
        description="Versioned system prompt file (front matter `version:`); default: the one "
        "bundled with the app (rag/prompts/system.md).",
    )
    docs_dir: Path = Field(
        default=Path(__file__).resolve().parent.parent / "docs",
        description="Documents ingested on first run when the collection is empty.",
    )


class JudgeSettings(OpenAIEndpoint):
    ROLE: ClassVar[str] = "the judge server"
    ENV: ClassVar[str] = "RAG_EVAL__JUDGE__"

    concurrency: int = Field(default=4, ge=1, description="Judge calls in flight at most.")


class EvalSettings(BaseModel):
    primary_metric: str = Field(
        default="semantic_similarity",
        description="Metric a candidate must improve to be promoted.",
    )
    retrieval_primary_metric: str = Field(
        default="mrr_at_10",
        description="Metric an embedding or reranker candidate must improve (they change which "
        "passages are retrieved; the answers follow from those).",
    )
    margin: float = Field(
        default=0.01, ge=0, description="Least mean improvement of the primary metric."
    )
    guard_metrics: list[str] = Field(
        default_factory=lambda: ["hit_at_5", "context_recall", "faithfulness"],
        description="Metrics that must not regress beyond the tolerance (skipped where a set "
        "cannot measure them).",
    )
    guard_tolerance: float = Field(
        default=0.02, ge=0, description="Largest mean regression allowed on a guard metric."
    )
    max_nan_share: float = Field(
        default=0.1, ge=0, le=1, description="Largest share of unmeasured samples (NaN) allowed."
    )
    min_samples: int = Field(default=20, ge=1, description="Fewest measured samples to decide.")
    bootstrap_resamples: int = Field(
        default=2000, ge=100, description="Bootstrap resamples for the 95% intervals."
    )
    seed: int = Field(default=0, description="Seed of the bootstrap and of logged-turn sampling.")
    golden_set: Path | None = Field(
        default=None, description="Default JSONL golden set for `eval run` and `eval schedule`."
    )
    judge: JudgeSettings = Field(
        default_factory=JudgeSettings,
        description="The judge LLM of the LLM metrics (faithfulness, relevancy, ...), which also "
        "writes generated test sets and references; with no model set, only the offline "
        "metrics are scored.",
    )
    schedule_cron: str = Field(
        default="0 3 * * *", description="When `eval schedule` evaluates (crontab syntax)."
    )
    auto_promote: bool = Field(
        default=False, description="Scheduled evaluations promote winners and reject losers."
    )


class TeacherSettings(OpenAIEndpoint):
    ROLE: ClassVar[str] = "the teacher server"
    ENV: ClassVar[str] = "RAG_FINETUNE__TEACHER__"

    model: str | None = Field(
        default=None,
        description="Teacher chat model (OpenAI, the model behind an Azure deployment, or a model "
        "of an OpenAI-compatible server) that grades, answers or rewrites logged turns; none: "
        "datasets are built without a teacher (static sources, or teacher mode `none`).",
    )
    concurrency: int = Field(default=4, ge=1, description="Teacher calls in flight at most.")
    grade_threshold: float = Field(
        default=4.0,
        ge=1,
        le=5,
        description="`grade` mode keeps a turn whose lowest rubric score (faithfulness, "
        "correctness, helpfulness; 1-5) is at least this; `relabel` rewrites turns below it.",
    )


class FineTuneSettings(BaseModel):
    backend: Literal["local", "openai"] = Field(
        default="local",
        description="Where jobs train: `local` (TRL + PEFT LoRA on a Hugging Face model "
        "directory, CPU or GPU) or `openai` (OpenAI or Azure OpenAI fine-tuning jobs; the chat "
        "model's credentials in RAG_LLM__* are used).",
    )
    base_model: str | None = Field(
        default=None,
        description="Model to fine-tune: a Hugging Face causal LM directory (`local`) or an "
        "OpenAI model name such as gpt-4.1-mini-2025-04-14 (`openai`). Default: RAG_LLM__MODEL.",
    )
    method: Literal["supervised", "dpo"] = Field(
        default="supervised",
        description="`supervised` (SFT on chat examples) or `dpo` (preference pairs).",
    )
    epochs: int = Field(default=3, ge=1, description="Passes over the training file.")
    max_steps: int | None = Field(
        default=None, ge=1, description="`local`: stop after this many optimizer steps."
    )
    batch_size: int = Field(default=4, ge=1, description="Examples per optimizer step.")
    learning_rate: float = Field(
        default=2e-4, gt=0, description="`local`: learning rate of the LoRA weights."
    )
    learning_rate_multiplier: float | None = Field(
        default=None, gt=0, description="`openai`: learning rate multiplier (default: OpenAI's)."
    )
    checkpoint_steps: int = Field(
        default=50,
        ge=1,
        description="`local`: save a checkpoint every this many steps (a job whose process died "
        "resumes from the last one).",
    )
    lora_r: int = Field(default=8, ge=1, description="`local`: LoRA rank.")
    lora_alpha: int = Field(default=16, ge=1, description="`local`: LoRA alpha (scaling).")
    lora_dropout: float = Field(default=0.05, ge=0, le=1, description="`local`: LoRA dropout.")
    dpo_beta: float = Field(
        default=0.1, gt=0, description="DPO beta: how far the model may move from the reference."
    )
    max_length: int = Field(
        default=1024, ge=16, description="`local`: longest training example in tokens."
    )
    validation_share: float = Field(
        default=0.1,
        ge=0,
        lt=1,
        description="Share of examples in the validation file (split by question hash, so the "
        "same question always lands on the same side).",
    )
    min_answer_chars: int = Field(
        default=20, ge=0, description="Logged answers shorter than this are not used."
    )
    dedup_similarity: float = Field(
        default=0.95,
        gt=0,
        le=1,
        description="Questions whose embedding cosine similarity to a kept one is at least this "
        "are dropped as near-duplicates (after exact matches of the normalised text).",
    )
    dedup_backend: Literal["torch", "torch-bf16", "onnx", "onnx-int8"] = Field(
        default="onnx-int8",
        description="How the `local` embedding model runs for near-duplicate detection. Its "
        "vectors are only compared with each other, never with the collection's, so the fastest "
        "backend is the default (cosine within about 0.01 of `torch`).",
    )
    seed: int = Field(default=0, description="Seed of training and of OpenAI jobs.")
    suffix: str | None = Field(
        default=None, description="`openai`: suffix in the fine-tuned model's name."
    )
    output_dir: Path | None = Field(
        default=None,
        description="Where datasets and local adapters are written; default <data_dir>/finetune.",
    )
    poll_interval_s: float = Field(
        default=30.0, gt=0, description="How often an `openai` job's status is polled."
    )
    price_per_million_tokens: dict[str, float] = Field(
        default_factory=lambda: {
            "gpt-4o-mini": 3.0,
            "gpt-4o": 25.0,
            "gpt-4.1": 25.0,
            "gpt-4.1-mini": 5.0,
            "gpt-4.1-nano": 1.5,
        },
        description="Training price in USD per million billed tokens, by base model: a name "
        "matches its longest listed prefix, so `gpt-4o-mini` and `gpt-4o-mini-2024-07-18` both "
        "match `gpt-4o-mini`; the cost estimate is epochs x billed tokens x price.",
    )
    token_limits: dict[str, int] = Field(
        default_factory=lambda: {"gpt-4o-mini": 65536, "gpt-4o": 65536, "gpt-4.1": 65536},
        description="Most tokens of one training example, by base model prefix; longer ones are "
        "truncated in training (`local` models use max_length).",
    )
    teacher: TeacherSettings = Field(
        default_factory=TeacherSettings, description="The teacher model of dataset building."
    )


class Settings(BaseSettings):
    """Everything configurable, with a description on every field."""

    model_config = SettingsConfigDict(
        env_prefix="RAG_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
    )

    data_dir: Path = Field(default=Path("data"), description="Where local state is kept.")
    chroma: ChromaSettings = Field(default_factory=ChromaSettings, description="Vector store.")
    embedding: EmbeddingSettings = Field(
        default_factory=EmbeddingSettings, description="Embedding model."
    )
    chunking: ChunkingSettings = Field(
        default_factory=ChunkingSettings, description="How documents are split."
    )
    database: DatabaseSettings = Field(
        default_factory=DatabaseSettings, description="Chat log database."
    )
    llm: LLMSettings = Field(default_factory=LLMSettings, description="Chat model.")
    retrieval: RetrievalSettings = Field(
        default_factory=RetrievalSettings, description="Retrieval."
    )
    reranker: RerankerSettings = Field(
        default_factory=RerankerSettings, description="Re-ranking of retrieved candidates."
    )
    app: AppSettings = Field(default_factory=AppSettings, description="Web app.")
    eval: EvalSettings = Field(
        default_factory=EvalSettings, description="Evaluation and the promotion gate."
    )
    finetune: FineTuneSettings = Field(
        default_factory=FineTuneSettings, description="Fine-tuning datasets and jobs."
    )

    @model_validator(mode="after")
    def _standard_openai_env(self) -> Settings:
        # The OpenAI SDK's own variables are what users already have set; honour them explicitly.
        key = os.environ.get("OPENAI_API_KEY")
        if key and self.llm.api_key is None:
            self.llm.api_key = SecretStr(key)
        if key and self.embedding.api_key is None:
            self.embedding.api_key = SecretStr(key)
        if key and self.eval.judge.api_key is None:
            self.eval.judge.api_key = SecretStr(key)
        if key and self.finetune.teacher.api_key is None:
            self.finetune.teacher.api_key = SecretStr(key)
        admin = os.environ.get("RAG_ADMIN_PASSWORD")
        if admin and self.app.admin_password is None:
            self.app.admin_password = SecretStr(admin)
        base = os.environ.get("OPENAI_BASE_URL")
        if base and self.llm.base_url is None:
            self.llm.base_url = base
        return self

    @property
    def chroma_path(self) -> Path:
        return self.chroma.path or self.data_dir / "chroma"

    @property
    def finetune_dir(self) -> Path:
        return self.finetune.output_dir or self.data_dir / "finetune"

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{(self.data_dir / 'rag.db').resolve()}"
