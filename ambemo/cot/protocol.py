"""What the curator asks, the JSON schemas it asks for, and the local checks of every answer.

Two calls per attempt (docs/method.md, "Structured chain of thought"):

1. *Rationale*: audio (or measured acoustic descriptors), transcript and the listeners' vote
   distribution in; the four parts of ``ambemo.model.prompts.CoT`` out, as JSON.
2. *Verification*: only the formatted rationale in (no audio, no votes); a distribution out.

Answers are validated here whatever the endpoint promises (a server may ignore
``response_format``): a rationale must be a JSON object with exactly the four non-empty string
parts, must survive ``format_cot`` -> ``parse_cot`` unchanged (so training sees a well-formed
reasoning), and by default its synthesis must not quote numbers of the distribution.

``CURATION_VERSION`` changes whenever the wording below changes; with the model's
``PROMPT_VERSION`` and the input mode it forms the store's prompt version, so a new wording
never reuses old rationales.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ambemo.model.prompts import ANSWER_SLOT, PROMPT_VERSION, CoT, format_cot, parse_cot

CURATION_VERSION = "curate-v1"
COT_FIELDS = ("keywords", "text_analysis", "audio_analysis", "synthesis")


def prompt_version(text_only: bool) -> str:
    """The store's prompt version: model format, curation wording, and what the model was given."""
    return f"{PROMPT_VERSION}/{CURATION_VERSION}/{'text' if text_only else 'audio'}"


class InvalidAnswer(ValueError):
    """The model answered, but not with something usable; the message says why (it is recorded)."""


GENERATE_SYSTEM = (
    "You are an expert in speech prosody and the psychology of emotion perception. You write short, "
    "precise analyses of why listeners perceive a recording the way they do."
)

VERIFY_SYSTEM = (
    "You predict how a group of listeners rated the emotion of a speech recording, using only a "
    "written analysis of the recording."
)

_PROTOCOL = """Write an analysis that explains this distribution, in four parts:
1. keywords: 4 to 8 salient lexical and acoustic cues, comma-separated.
2. text_analysis: what the words mean and their context only (no acoustics); say whether the words alone \
are ambiguous and between which emotions.
3. audio_analysis: the voice in professional terms (volume, speaking rate, pitch level and range, tone \
and voice quality). Name the cues that support the majority emotion AND the cues that support each \
minority emotion that listeners chose.
4. synthesis: weigh the text and the audio to resolve the ambiguity, so that a reader who never heard the \
recording and never saw the votes could predict the distribution: which emotion dominates, which are \
secondary and roughly how strongly (in words: "clearly", "a sizeable minority", "a few listeners"), and \
which are absent.
Rules: write as if you inferred everything from the recording; never mention votes, ratings or that you \
were given them; do not state percentages, probabilities or counts. Each part is 1 to 3 sentences of plain \
text without markup, brackets or tags.
Answer with a JSON object with the string fields keywords, text_analysis, audio_analysis, synthesis."""


def _distribution_json(classes: Sequence[str], probs: Sequence[float]) -> str:
    return json.dumps({c: round(float(p), 3) for c, p in zip(classes, probs, strict=True)})


def generation_text(
    classes: Sequence[str],
    target: Sequence[float],
    transcript: str | None,
    descriptors: str | None = None,
    previous: tuple[str, Sequence[float]] | None = None,
) -> str:
    """The text part of the rationale request (the audio, if any, is a separate content part).

    ``descriptors`` replaces the audio in text-only mode. ``previous`` is (rationale, distribution a
    reader predicted from it) of a rejected attempt, so the regenerated one can do better.
    """
    parts = [
        f"Listeners each chose one emotion out of: {', '.join(classes)}.",
        f"Their choices for this recording, as a distribution: {_distribution_json(classes, target)}",
        f'Transcript: "{transcript}"' if transcript else "Transcript: (none)",
    ]
    if descriptors is not None:
        parts.append(f"You cannot hear the recording; acoustic measurements of it:\n{descriptors}")
    else:
        parts.append("The recording is attached.")
    parts.append(_PROTOCOL)
    if previous is not None:
        text, read = previous
        parts.append(
            "A previous analysis of this recording was given to a reader, who predicted "
            f"{_distribution_json(classes, read)} from it; that is too far from the listeners' choices. "
            f"Previous analysis:\n{text}\nWrite a new analysis whose synthesis conveys the distribution better."
        )
    return "\n\n".join(parts)


def rationale_for_reader(cot_text: str) -> str:
    """The formatted CoT without the trailing answer slot: what the verifier reads."""
    return cot_text.removesuffix(ANSWER_SLOT).rstrip()


def verification_text(classes: Sequence[str], cot_text: str) -> str:
    """The verification request: the rationale alone, then the question."""
    return (
        f"Analysis of a speech recording (you cannot hear it):\n{rationale_for_reader(cot_text)}\n\n"
        f"Listeners each chose one emotion out of: {', '.join(classes)}. From the analysis alone, predict the "
        "share of listeners who chose each emotion. Answer with a JSON object "
        '{"distribution": {emotion: probability}} with every emotion listed; the probabilities sum to 1.'
    )


def cot_schema() -> dict:
    """``response_format`` for a rationale (strict structured outputs)."""
    return {
        "type": "json_schema",
        "json_schema": {
            "name": "structured_cot",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {name: {"type": "string"} for name in COT_FIELDS},
                "required": list(COT_FIELDS),
                "additionalProperties": False,
            },
        },
    }


def distribution_schema(classes: Sequence[str]) -> dict:
    """``response_format`` for a verification answer."""
    inner = {
        "type": "object",
        "properties": {name: {"type": "number"} for name in classes},
        "required": list(classes),
        "additionalProperties": False,
    }
    return {
        "type": "json_schema",
        "json_schema": {
            "name": "emotion_distribution",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {"distribution": inner},
                "required": ["distribution"],
                "additionalProperties": False,
            },
        },
    }


_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)
#: Percentages, probabilities (0.x, .x) and "n of m" counts: how a synthesis would quote the votes.
_QUOTED_NUMBERS = re.compile(
    r"\d+(?:\.\d+)?\s*(?:%|percent)|(?<![\d.])0?\.\d+(?![\d.])|\b\d+\s*(?:/|out of|of the)\s*\d+\b", re.IGNORECASE
)


def _load_object(content: str | None) -> dict:
    if content is None or not content.strip():
        raise InvalidAnswer("empty answer")
    text = content.strip()
    fenced = _FENCE.match(text)  # servers without structured outputs like code fences
    if fenced:
        text = fenced.group(1)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise InvalidAnswer(f"not JSON ({err.msg} at column {err.colno}): {_clip(content)}") from None
    if not isinstance(value, dict):
        raise InvalidAnswer(f"expected a JSON object, got {type(value).__name__}")
    return value


def _clip(text: str, n: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n] + "..."


def parse_rationale(content: str | None, allow_numbers_in_synthesis: bool = False, max_chars: int = 2400) -> CoT:
    """Validate a rationale answer and return its parts; ``InvalidAnswer`` says what is wrong."""
    value = _load_object(content)
    missing = [k for k in COT_FIELDS if k not in value]
    extra = sorted(set(value) - set(COT_FIELDS))
    if missing or extra:
        raise InvalidAnswer(f"schema violation: missing {missing}, unexpected {extra}")
    for key in COT_FIELDS:
        if not isinstance(value[key], str) or not value[key].strip():
            raise InvalidAnswer(f"schema violation: {key!r} must be a non-empty string")
    cot = CoT(*(" ".join(value[k].split()) for k in COT_FIELDS))
    text = format_cot(cot)
    if parse_cot(text) != cot:
        raise InvalidAnswer("a part contains a format marker (<keywords>, [StepN: ...] or the answer slot)")
    if len(text) > max_chars:
        raise InvalidAnswer(f"rationale too long ({len(text)} > {max_chars} characters)")
    if not allow_numbers_in_synthesis:
        quoted = _QUOTED_NUMBERS.search(cot.synthesis)
        if quoted:
            raise InvalidAnswer(f"the synthesis quotes numbers ({quoted.group(0)!r}) instead of explaining")
    return cot


@dataclass(frozen=True)
class ReaderAnswer:
    """A verification answer: the distribution (classes order) and whether it had to be renormalised."""

    distribution: tuple[float, ...]
    renormalised: bool


def parse_distribution(content: str | None, classes: Sequence[str]) -> ReaderAnswer:
    """Validate a verification answer; rows summing to something else (e.g. 100) are renormalised."""
    value = _load_object(content)
    dist = value.get("distribution")
    if not isinstance(dist, dict) or set(value) != {"distribution"}:
        raise InvalidAnswer('schema violation: expected {"distribution": {emotion: probability}}')
    missing = [c for c in classes if c not in dist]
    extra = sorted(set(dist) - set(classes))
    if missing or extra:
        raise InvalidAnswer(f"schema violation: missing classes {missing}, unexpected {extra}")
    probs = []
    for name in classes:
        p = dist[name]
        if isinstance(p, bool) or not isinstance(p, int | float) or not math.isfinite(p) or p < 0:
            raise InvalidAnswer(f"schema violation: probability of {name!r} is {p!r}")
        probs.append(float(p))
    total = sum(probs)
    if total <= 0:
        raise InvalidAnswer("all probabilities are zero")
    return ReaderAnswer(tuple(p / total for p in probs), abs(total - 1.0) > 1e-3)
