"""A corpus and golden set made for the champion/challenger tests: every answer sits in its own
file, and for some questions one or two decoy passages (which restate the question without
answering it) rank above it, so the answer is the first, second or third passage retrieved."""

from __future__ import annotations

import json
from pathlib import Path

# (question, answer file text, reference, decoys)
FACTS = [
    (
        "What is the Harlow ferry called?",
        "The Harlow ferry is called the Silver Heron.",
        "Silver Heron",
        [],
    ),
    (
        "Which river feeds the Ostrand mill?",
        "The Ostrand mill is fed by the river Calder.",
        "river Calder",
        [],
    ),
    (
        "What does the Penmoor beacon burn?",
        "The Penmoor beacon burns whale oil every night.",
        "whale oil",
        [],
    ),
    (
        "Who painted the Tressel chapel ceiling?",
        "The Tressel chapel ceiling was painted by Ilse Marwick.",
        "Ilse Marwick",
        [],
    ),
    (
        "How many arches has the Dunmore viaduct?",
        "The Dunmore viaduct has nineteen arches.",
        "nineteen arches",
        [],
    ),
]
RANK2 = [
    (
        "In which year was the Quenby clocktower bell cast?",
        "Records show the great bell of Quenby was poured in 1742 by travelling founders.",
        "1742",
    ),
    (
        "What colour is the door of the Velmora bakery?",
        "Its entrance, facing the square, is painted bright green.",
        "bright green",
    ),
    (
        "Which animal is carved above the Ashcombe gate?",
        "Above that gate stands a stone fox, weathered by centuries.",
        "stone fox",
    ),
    (
        "What is the keeper of the Morrow lock called?",
        "The man who tends the lock today is Tobias Grell.",
        "Tobias Grell",
    ),
    (
        "How deep is the Linfield well?",
        "Measured last spring, the Linfield shaft goes down forty metres.",
        "forty metres",
    ),
]


def _decoys(question: str, n: int) -> list[str]:
    topic = question.rstrip("?")
    templates = [
        f"{topic}? Visitors ask this question often, and the guides enjoy it.",
        f"{topic}? It is a question the town's quiz night has asked many times.",
    ]
    return templates[:n]


def make_eval_corpus(root: Path) -> tuple[Path, Path]:
    """Write the corpus under root/corpus and the golden set root/golden.jsonl; returns both."""
    corpus = root / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    rows = []
    items = [(q, t, r, 0) for q, t, r, _ in FACTS] + [(q, t, r, 1) for q, t, r in RANK2]
    items += [(q, t, r, 2) for q, t, r in RANK3]
    for i, (question, text, reference, decoys) in enumerate(items):
        (corpus / f"fact{i:02d}.md").write_text(text + "\n")
        for j, decoy in enumerate(_decoys(question, decoys)):
            (corpus / f"decoy{i:02d}{j}.md").write_text(decoy + "\n")
        rows.append(
            {
                "user_input": question,
                "reference": reference,
                "reference_sources": [f"fact{i:02d}.md"],
            }
        )
    golden = root / "golden.jsonl"
    golden.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return corpus, golden


RANK3 = [
    (
        "What is the name of the Carrow lighthouse cat?",
        "Everyone on the pier knows that the cat there answers to Pepper.",
        "Pepper",
    ),
    (
        "When does the Brisby market open?",
        "Stalls in Brisby unfold at half past six.",
        "half past six",
    ),
    (
        "What fish is served at the Kettleby inn?",
        "The inn's cook serves smoked mackerel.",
        "smoked mackerel",
    ),
    (
        "Who founded the Ravensholt library?",
        "The reading rooms were endowed by Agnes Pell.",
        "Agnes Pell",
    ),
    ("What wood is the Fenwick bridge made of?", "That crossing was built entirely of oak.", "oak"),
]
