"""Which evaluation sets may judge a candidate: evidence its training recipe did not make. A model
trained on pairs drawn from the corpus scores well on more pairs drawn the same way (the embedded
text of a chunk holds its heading path, so heading -> chunk is all but given), and that says
nothing about people's questions. So an embedding or reranker candidate is never judged on the
held-out split of its own training pairs, nor on questions written by the generator that wrote its
training questions; golden sets, datasets and rated chat turns it did not train on are evidence.
Pure functions of the candidate's provenance, the set's questions and where they came from."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from core.questions import question_key

if TYPE_CHECKING:
    from core.evalstore import EvalSample
    from core.registry import ModelVersion

RETRIEVAL_KINDS = ("embedding", "reranker")
NOT_EVIDENCE = (
    "judge it on questions its training recipe did not make: a golden set, a dataset with gold "
    "passages, or rated chat turns it did not train on"
)


def evidence_refusal(
    candidate: ModelVersion, samples: list[EvalSample], origin: dict[str, Any] | None
) -> str | None:
    """Why this set cannot decide the candidate's promotion, or None when it can."""
    if candidate.kind not in RETRIEVAL_KINDS:
        return None
    prov = candidate.provenance
    held = set(prov.get("heldout_question_keys") or ())
    if held and any(question_key(s.user_input) in held for s in samples):
        return (
            f"this set holds the held-out split of {candidate.label}'s own training pairs, made "
            f"by the recipe that trained it: a training diagnostic, not evidence; {NOT_EVIDENCE}"
        )
    origin = origin or {}
    generator = prov.get("generator")
    if (
        origin.get("kind") == "generated"
        and generator
        and origin.get("generator") == generator
        and "generated" in (prov.get("recipe") or ())
    ):
        return (
            f"these questions were written by {generator}, which also wrote {candidate.label}'s "
            f"training questions: not evidence; {NOT_EVIDENCE}"
        )
    return None


def check_evidence(
    candidate: ModelVersion, samples: list[EvalSample], origin: dict[str, Any] | None
) -> None:
    """EvalSetError (nothing is run, nothing promoted) when the set is not evidence."""
    from eval.sets import EvalSetError

    why = evidence_refusal(candidate, samples, origin)
    if why:
        raise EvalSetError(why)
