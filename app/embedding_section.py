"""The Fine-tune tab's embedding-model section: training pairs from the chat log (and, when asked,
the corpus, a `datasets` file or a LlamaIndex JSON file), then a candidate trained as a job with
progress and a loss per step (cancel, resume after a restart), registered on the active model's
backend. The gate in the Evaluate tab then judges it on questions its recipe did not make, and
promotes it blue/green. Actions are finetune.embedding's service functions, as for the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import gradio as gr

from app.notices import handled
from core.errors import RagError

if TYPE_CHECKING:
    from finetune.context import FineTuneContext


class Tab(Protocol):
    """What the section uses of the Fine-tune tab it sits in."""

    ctx: FineTuneContext

    def check(self, password: str | None) -> None: ...
    def _jobs(self) -> list[list[Any]]: ...
    def train_in_background(self, job_id: int) -> None: ...


SOURCES = {
    "rated-up chat turns (the passages their answers cited)": "chatlog",
    "headings -> their section (corpus only)": "headings",
    "a sentence -> its passage (corpus only)": "cloze",
}
RECIPE_NOTE = (
    "Rated-up chat turns are what people asked: the pairs that help. Corpus-only pairs (headings, "
    "sentences) are made by the same recipe as their held-out split, so that split proves "
    "nothing; on real questions they measured worse than the base model. The gate judges every "
    "candidate on questions its recipe did not make."
)


class EmbeddingSection:
    """The section's actions over the tab's context; `build(password, jobs)` lays it out."""

    def __init__(self, tab: Tab):
        self.tab = tab
        self.ctx = tab.ctx

    @handled(2)
    def build_pairs(
        self,
        name: str,
        sources: list[str],
        dataset_file: Any,
        question_field: str,
        text_field: str,
        pairs_file: Any,
        negatives: float | None,
        password: str,
        progress: Any = None,
    ) -> tuple[str, int]:
        """Training pairs from the chosen sources; (summary, dataset id)."""
        self.tab.check(password)
        from finetune.embedding.service import PairsRequest, build_pairs

        chosen = {SOURCES[s] for s in sources or [] if s in SOURCES}
        dataset = _path(dataset_file)
        files = [Path(p) for p in [_path(pairs_file)] if p]
        if not chosen and not dataset and not files:
            raise RagError("choose where the training pairs come from")
        request = PairsRequest(
            name=name,
            chatlog="chatlog" in chosen,
            headings="headings" in chosen,
            cloze="cloze" in chosen,
            dataset=dataset,
            question_field=question_field or "question",
            text_field=text_field or "support",
            files=files,
            negatives=int(negatives if negatives is not None else 1),
        )
        if progress is not None:
            progress(0, desc="building training pairs")
        built = build_pairs(self.ctx, request)
        return f"**{built.summary()}**", built.record.id

    @handled(3)
    def train(
        self,
        dataset_id: float | None,
        epochs: float | None,
        batch_size: float | None,
        max_steps: float | None,
        password: str,
    ) -> tuple[str, list[list[Any]], int]:
        """A candidate trained in a background thread as a job; (note, jobs table, job id)."""
        self.tab.check(password)
        from finetune.embedding.job import TrainRequest, launch_training

        if not dataset_id:
            raise RagError("build training pairs first (or type a pairs dataset id)")
        request = TrainRequest(
            dataset_id=int(dataset_id),
            epochs=int(epochs or 2),
            batch_size=int(batch_size or 32),
            max_steps=int(max_steps) if max_steps else None,
        )
        job = launch_training(self.ctx, request, wait=False)
        self.tab.train_in_background(job.id)
        note = (
            f"Job {job.id} is training the embedding model: follow it in the jobs table (its "
            "events and loss under **Events and loss**). When it succeeds, its candidate is "
            "registered: judge it in the Evaluate tab."
        )
        return note, self.tab._jobs(), job.id

    def build(self, password: gr.Textbox) -> Any:
        """Lay the section out; returns `wire(jobs, job_id)`, to call once the tab's jobs table
        exists (training a candidate shows its job there)."""
        gr.Markdown("## Embedding model\n" + RECIPE_NOTE)
        gr.Markdown("### 1. Training pairs")
        with gr.Row():
            name = gr.Textbox(label="Name", placeholder="default: a time stamp")
            sources = gr.CheckboxGroup(
                list(SOURCES),
                value=[next(iter(SOURCES))],
                label="From",
                elem_id="emb-sources",
            )
            negatives = gr.Number(label="Hard negatives per question", value=1, precision=0)
        with gr.Accordion("Or from files", open=False), gr.Row():
            dataset_file = gr.File(
                label="`datasets` file", file_types=[".csv", ".jsonl", ".json", ".parquet"]
            )
            question_field = gr.Textbox(label="Question column", value="question")
            text_field = gr.Textbox(label="Passage column", value="support")
            pairs_file = gr.File(label="LlamaIndex JSON pairs", file_types=[".json"])
        build_btn = gr.Button("Build training pairs", variant="primary", elem_id="emb-build")
        built = gr.Markdown(elem_id="emb-built")
        gr.Markdown("### 2. Train a candidate")
        with gr.Row():
            # The newest pairs, filled in when the tab opens empty (see FineTuneTab).
            dataset = gr.Number(
                label="Pairs dataset id",
                info="the newest pairs; `python -m finetune list` lists them all",
                precision=0,
                elem_id="emb-dataset",
            )
            epochs = gr.Number(label="Epochs", value=2, precision=0)
            batch = gr.Number(label="Batch size", value=32, precision=0, elem_id="emb-batch")
            steps = gr.Number(label="At most steps (0: all)", precision=0, elem_id="emb-max-steps")
        self.dataset = dataset  # the pairs just built: the reranker section trains on them too
        train_btn = gr.Button("Train", variant="primary", elem_id="emb-train")
        trained = gr.Markdown(elem_id="emb-trained")

        def on_build(n, s, d, q, t, p, k, pw, progress=gr.Progress()):  # noqa: B008
            return self.build_pairs(n, s, d, q, t, p, k, pw, progress)

        build_btn.click(
            on_build,
            [
                name,
                sources,
                dataset_file,
                question_field,
                text_field,
                pairs_file,
                negatives,
                password,
            ],
            [built, dataset],
            api_visibility="private",
        )

        def wire(jobs: gr.Dataframe, job_id: gr.Number) -> None:
            train_btn.click(
                self.train,
                [dataset, epochs, batch, steps, password],
                [trained, jobs, job_id],
                api_visibility="private",
            )

        return wire


def latest_pairs(ctx: Any) -> int | None:
    """The id of the newest embedding pairs dataset, or None when there is none (what both the
    embedding and the reranker sections train on)."""
    newest = ctx.store.newest_dataset("embedding")
    return newest.id if newest is not None else None


def _path(upload: Any) -> str | None:
    if not upload:
        return None
    return str(upload if isinstance(upload, str) else upload.name)
