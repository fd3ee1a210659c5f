"""The Fine-tune tab's reranker section: a cross-encoder trained as a job on a pairs dataset (built
in the embedding section: rated chat turns, the corpus, files), with hard negatives from what the
app's retriever ranks for each question; progress and a loss per step in the jobs table (cancel,
resume after a restart); registered as a candidate reranker for the gate in the Evaluate tab.
The action is finetune.rerank's service function, as for the CLI."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gradio as gr

from app.notices import handled
from core.errors import RagError

if TYPE_CHECKING:
    from app.embedding_section import Tab

NOTE = (
    "A reranker reads each question together with the passages retrieval found and re-orders "
    "the best of them. It is trained here (from the packaged model's weights, or from a "
    "cross-encoder folder you name) on a pairs dataset built above, and answers nothing until "
    "the gate in the Evaluate tab finds that it ranks better on questions its training did not "
    "make."
)


class RerankerSection:
    def __init__(self, tab: Tab):
        self.tab = tab
        self.ctx = tab.ctx

    @handled(3)
    def train(
        self,
        dataset_id: float | None,
        base: str,
        epochs: float | None,
        negatives: float | None,
        limit: float | None,
        max_steps: float | None,
        password: str,
    ) -> tuple[str, list[list[Any]], int]:
        """A reranker trained in a background thread as a job; (note, jobs table, job id)."""
        self.tab.check(password)
        from finetune.rerank.job import RerankRequest, launch_reranker

        if not dataset_id:
            raise RagError("build training pairs first (or type a pairs dataset id)")
        request = RerankRequest(
            dataset_id=int(dataset_id),
            base_model=(base or "").strip() or None,
            epochs=int(epochs if epochs is not None else 4),
            negatives=int(negatives if negatives is not None else 3),
            limit=int(limit) if limit else None,
            max_steps=int(max_steps) if max_steps else None,
        )
        job = launch_reranker(self.ctx, request, wait=False)
        self.tab.train_in_background(job.id)
        note = (
            f"Job {job.id} is training a reranker: follow it in the jobs table. When it "
            "succeeds, its candidate is registered: judge it in the Evaluate tab."
        )
        return note, self.tab._jobs(), job.id

    def build(self, password: gr.Textbox, pairs: gr.Number | None = None) -> Any:
        """Lay the section out; returns `wire(jobs, job_id)` (see EmbeddingSection.build). The
        pairs dataset id follows `pairs` (the embedding section's, set when pairs are built)."""
        gr.Markdown("## Reranker\n" + NOTE)
        with gr.Row():
            dataset = gr.Number(label="Pairs dataset id", precision=0, elem_id="rr-dataset")
            base = gr.Textbox(
                label="Start from",
                placeholder="a cross-encoder folder; empty: the packaged model's weights",
                elem_id="rr-base",
            )
            epochs = gr.Number(label="Epochs", value=4, precision=0)
            negatives = gr.Number(label="Hard negatives per question", value=3, precision=0)
        with gr.Row():
            limit = gr.Number(label="At most questions (0: all)", precision=0, elem_id="rr-limit")
            steps = gr.Number(label="At most steps (0: all)", precision=0, elem_id="rr-max-steps")
        train_btn = gr.Button("Train a reranker", variant="primary", elem_id="rr-train")
        trained = gr.Markdown(elem_id="rr-trained")
        if pairs is not None:
            pairs.change(lambda built: built, pairs, dataset, api_visibility="private")

        def wire(jobs: gr.Dataframe, job_id: gr.Number) -> None:
            train_btn.click(
                self.train,
                [dataset, base, epochs, negatives, limit, steps, password],
                [trained, jobs, job_id],
                api_visibility="private",
            )

        return wire
