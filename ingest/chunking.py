"""Chunks the embedding model sees whole: lengths are measured in the model's own tokenizer and fit
its window together with the heading prefix each chunk is embedded with."""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.index.chunks import Meta, embed_text
from core.markdown import FENCE, fence_kinds, open_fence

if TYPE_CHECKING:
    from llama_index.core.base.embeddings.base import BaseEmbedding

    from core.settings import ChunkingSettings
    from ingest.loaders import Section

log = logging.getLogger(__name__)

PREFIX_SHARE = 4  # a heading prefix may take at most a quarter of the window
MIN_CHUNK = 16


@dataclass
class ChunkPlan:
    """How long chunks are, in the tokens of the model that embeds them."""

    encode: Callable[[str], list[int]]
    window: int  # tokens the model reads per text, special tokens excluded
    size: int  # chunk budget before the prefix is taken off
    overlap: int
    warning: str | None = None
    _splitters: dict[int, Any] = field(default_factory=dict, repr=False)

    @property
    def key(self) -> str:
        """What shapes the chunks; part of every source's ingest key."""
        return f"w{self.window}|s{self.size}|o{self.overlap}"

    def count(self, text: str) -> int:
        return len(self.encode(text))

    def _splitter(self, budget: int):
        from llama_index.core.node_parser import SentenceSplitter

        if budget not in self._splitters:
            self._splitters[budget] = SentenceSplitter(
                chunk_size=budget,
                chunk_overlap=min(self.overlap, budget // 4),
                tokenizer=self.encode,
            )
        return self._splitters[budget]

    def prefix_for(self, heading_path: str | None) -> str:
        """The heading path as embedded before a chunk, shortened to keep room for the text."""
        if not heading_path:
            return ""
        parts = heading_path.split(" > ")
        candidates = [heading_path]
        if len(parts) > 2:
            candidates.append(f"{parts[0]} > {parts[-1]}")
        candidates.append(parts[-1])
        for prefix in candidates:
            if self.count(prefix) <= self.window // PREFIX_SHARE:
                return prefix
        return ""

    def split(self, text: str, prefix: str) -> list[str]:
        """Pieces of `text` that, each with `prefix` before it, fit the window."""
        room = self.window - (self.count(prefix) + 1 if prefix else 0)
        budget = max(MIN_CHUNK, min(self.size, room))
        pieces = [p for p in self._splitter(budget).split_text(text) if p.strip()]
        fitted: list[str] = []
        for piece in pieces:
            # The splitter adds token counts of sentences; joined text can count a little more.
            while self.count(embed_text(prefix, piece)) > self.window and budget > MIN_CHUNK:
                budget = max(MIN_CHUNK, int(budget * 0.85))
                sub = [p for p in self._splitter(budget).split_text(piece) if p.strip()]
                if len(sub) <= 1:
                    break
                fitted.extend(sub[:-1])
                piece = sub[-1]
            fitted.append(piece)
        return fitted


def code_cuts(text: str, pieces: list[str]) -> list[tuple[str, str, bool]]:
    """For each piece of `text` (in order, as `ChunkPlan.split` cut it): the fence of the code
    block it starts inside and of the one it ends inside ("" where it starts or ends outside
    any), read as `core.markdown` reads fences (``` or ~~~, a longer fence closed only by one as
    long), and whether it starts inside a block in the middle of a line that the piece before
    holds to its end (the splitter's overlap can begin at a dot inside a word: "db.sql"). A
    piece not found in `text` as it is (the splitter changed its spacing) is taken to start
    outside any block."""
    lines = text.split("\n")
    if not any(FENCE.match(line) for line in lines):
        return [("", "", False)] * len(pieces)
    # Where each line starts, and the block open before it (a piece starting on a block's
    # closing fence starts inside that block too).
    starts, before, opened = [], [], ""
    offset = 0
    for line, kind in zip(lines, fence_kinds(lines), strict=True):
        starts.append(offset)
        before.append(opened)
        offset += len(line) + 1
        if kind == "fence":
            opened = "" if opened else FENCE.match(line).group(1)  # type: ignore[union-attr]
    cuts: list[tuple[str, str, bool]] = []
    pos, reached = 0, 0  # where the piece before ended in `text`
    for piece in pieces:
        head = piece.lstrip()[:40]
        start = text.find(head, pos) if head else -1
        opened, partial = "", False
        if start >= 0:
            pos = start + 1
            line = bisect_right(starts, start) - 1
            opened = before[line]
            line_end = text.find("\n", start)
            # Part of a line whose start is in the piece before, which holds it to its end: the
            # reader may skip it. Where the piece before stopped short of it, it is kept.
            partial = (
                bool(opened)
                and bool(text[starts[line] : start].strip())
                and reached >= (line_end if line_end >= 0 else len(text))
            )
            reached = start + len(piece.lstrip())
        own = piece.split("\n")
        cuts.append((opened, open_fence([opened, *own] if opened else own), partial))
    return cuts


def plan_chunks(chunking: ChunkingSettings, embed_model: BaseEmbedding) -> ChunkPlan:
    """The chunk plan for this model: the configured size, or the model's window when unset; a
    size beyond the window is clamped with a warning (the rest would never be embedded)."""
    from core.embedding.providers import embedding_tokenizer

    encode, window = embedding_tokenizer(embed_model)
    size = chunking.size or window
    warning = None
    if size > window:
        warning = (
            f"chunk size {size} is larger than the {window} tokens the embedding model reads; "
            f"using {window} (set RAG_CHUNKING__SIZE to {window} or less to silence this)"
        )
        log.warning(warning)
        size = window
    overlap = chunking.overlap if chunking.overlap is not None else size // 8
    overlap = min(overlap, size // 2)
    return ChunkPlan(encode=encode, window=window, size=size, overlap=overlap, warning=warning)


@dataclass
class _Pack:
    metadata: dict[str, Any]
    parts: list[tuple[list[str], str]]  # (heading path as a list, text) of each merged section

    def common(self) -> list[str]:
        paths = [p for p, _ in self.parts]
        common: list[str] = []
        for level in zip(*paths, strict=False):
            if any(name != level[0] for name in level):
                break
            common.append(level[0])
        return common

    def render(self) -> tuple[str, str]:
        """(heading path shared by all parts, text with each part's own headings inline)."""
        common = self.common()
        blocks = []
        for path, text in self.parts:
            own = path[len(common) :]
            # A heading on a paragraph of its own: never glued to the first line under it.
            blocks.append((" > ".join(own) + "\n\n" if own else "") + text)
        return " > ".join(common), "\n\n".join(blocks)


def _place(metadata: dict[str, Any]) -> tuple:
    return tuple(sorted((k, str(v)) for k, v in metadata.items() if k not in _PATH_KEYS))


_PATH_KEYS = (Meta.HEADING_PATH, Meta.SECTION)


def pack_sections(sections: list[Section], plan: ChunkPlan) -> list[Section]:
    """Neighbouring sections of one place (one page of a PDF, one web page) merged while they fit
    the window together: a page of many short sections is embedded as a few chunks that carry its
    context rather than as many fragments (a heading with one line under it) that match anything.
    The merged chunk's heading path is what its parts share; their own headings stay in the text."""
    from ingest.loaders import Section

    packs: list[_Pack] = []
    for section in sections:
        path = [p for p in (section.metadata.get(Meta.HEADING_PATH) or "").split(" > ") if p]
        if packs and _place(packs[-1].metadata) == _place(section.metadata):
            trial = _Pack(packs[-1].metadata, [*packs[-1].parts, (path, section.text)])
            common, text = trial.render()
            if plan.count(embed_text(plan.prefix_for(common), text)) <= min(plan.window, plan.size):
                packs[-1] = trial
                continue
        packs.append(_Pack(section.metadata, [(path, section.text)]))
    packed = []
    for pack in packs:
        common, text = pack.render()
        meta = {k: v for k, v in pack.metadata.items() if k not in _PATH_KEYS}
        if common:
            meta[Meta.HEADING_PATH] = common
            if len(common.split(" > ")) > 1:
                meta[Meta.SECTION] = common.split(" > ")[-1]
        paths = list(dict.fromkeys(" > ".join(p) for p, _ in pack.parts if p))
        if len(paths) > 1:  # the sections merged into this chunk, for the documents' outline
            meta[Meta.SECTIONS] = "\n".join(paths)
        packed.append(Section(text, meta))
    return packed
