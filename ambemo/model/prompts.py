"""The prompt, the structured chain-of-thought format and the answer slot.

The model's distribution is never parsed from text: after the reasoning comes a fixed answer
slot (``ANSWER_SLOT``) and p_hat is the softmax over the LM-head logits of the class names at
the slot's last token (see ``ambemo.model.readout``). The reasoning format is the paper's
structured CoT (docs/method.md):

    <keywords> ... </keywords>
    [Step1: Text Analysis] ...
    [Step2: Audio Analysis] ...
    [Step3: Synthesis] ...
    Emotion:

``PROMPT_VERSION`` changes whenever the wording below changes, so curated CoT stores and
exported models can tell which prompt they were made with.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

PROMPT_VERSION = "ambemo-cot-v1"

KEYWORDS_OPEN, KEYWORDS_CLOSE = "<keywords>", "</keywords>"
STEP_TEXT = "[Step1: Text Analysis]"
STEP_AUDIO = "[Step2: Audio Analysis]"
STEP_SYNTHESIS = "[Step3: Synthesis]"
#: The answer slot. p_hat is read at its last token; the class name would come next.
ANSWER_SLOT = "Emotion:"
#: What precedes the slot in a structured reasoning: a slot forced after a cut-off reasoning gets
#: it too, so the read-out sees the context it was trained on.
SLOT_PREFIX = "\n"

SYSTEM_PROMPT = "You are a helpful assistant."


@dataclass(frozen=True)
class ChatStyle:
    """How a backbone family's chat template frames the system turn and the audio in the user turn.

    Only the framing differs between families; the instruction and the reasoning format are the
    same, so curated reasoning works with any backbone.
    """

    system: str
    """The system turn's text (what the family's chat template puts there by default)."""
    audio_prefix: str
    """Text before the audio segment ``<|audio_bos|><|AUDIO|><|audio_eos|>`` in the user turn."""
    audio_suffix: str
    """Text between the audio segment and the instruction."""


#: Qwen2-Audio's chat template: "Audio 1: <audio>" on its own line.
QWEN2_AUDIO_STYLE = ChatStyle(SYSTEM_PROMPT, "Audio 1: ", "\n")


@dataclass(frozen=True)
class CoT:
    """The four parts of a structured reasoning, without tags."""

    keywords: str
    text_analysis: str
    audio_analysis: str
    synthesis: str


def format_cot(cot: CoT) -> str:
    """Render a CoT in the structured format, ending with the answer slot."""
    return (
        f"{KEYWORDS_OPEN} {cot.keywords.strip()} {KEYWORDS_CLOSE}\n"
        f"{STEP_TEXT} {cot.text_analysis.strip()}\n"
        f"{STEP_AUDIO} {cot.audio_analysis.strip()}\n"
        f"{STEP_SYNTHESIS} {cot.synthesis.strip()}{SLOT_PREFIX}"
        f"{ANSWER_SLOT}"
    )


_COT_PATTERN = re.compile(
    re.escape(KEYWORDS_OPEN)
    + r"(?P<keywords>.*?)"
    + re.escape(KEYWORDS_CLOSE)
    + r"\s*"
    + re.escape(STEP_TEXT)
    + r"(?P<text>.*?)"
    + re.escape(STEP_AUDIO)
    + r"(?P<audio>.*?)"
    + re.escape(STEP_SYNTHESIS)
    + r"(?P<synthesis>.*?)"
    + re.escape(ANSWER_SLOT)
    + r"\s*$",
    re.DOTALL,
)
_MARKERS = (KEYWORDS_OPEN, KEYWORDS_CLOSE, STEP_TEXT, STEP_AUDIO, STEP_SYNTHESIS, ANSWER_SLOT)


def parse_cot(text: str) -> CoT | None:
    """Split a generated reasoning into its parts, or ``None`` if it is not well formed.

    Well formed means: every marker exactly once, in order, each part non-empty, and the text
    ends at the answer slot. Used for ``format_ok_rate``; a stricter, un-gameable format
    *reward* for GRPO builds on this.
    """
    if any(text.count(marker) != 1 for marker in _MARKERS):
        return None
    match = _COT_PATTERN.match(text.strip())
    if match is None:
        return None
    parts = [match.group(name).strip() for name in ("keywords", "text", "audio", "synthesis")]
    if not all(parts):
        return None
    return CoT(*parts)


def user_instruction(classes: Sequence[str], transcript: str | None, use_cot: bool) -> str:
    """The text part of the user turn (the audio comes before it)."""
    names = ", ".join(classes)
    said = f'Transcript: "{transcript}"\n' if transcript else ""
    if use_cot:
        return (
            f"{said}How would listeners perceive the speaker's emotion? Reason in the format "
            f"{KEYWORDS_OPEN} {KEYWORDS_CLOSE} {STEP_TEXT} {STEP_AUDIO} {STEP_SYNTHESIS}, "
            f"then {ANSWER_SLOT} one of {names}."
        )
    return f"{said}How would listeners perceive the speaker's emotion? {ANSWER_SLOT} one of {names}."


def chat_prompt(
    classes: Sequence[str],
    transcript: str | None,
    use_cot: bool,
    audio_token: str = "<|AUDIO|>",
    style: ChatStyle = QWEN2_AUDIO_STYLE,
) -> str:
    """The full prompt up to the assistant's turn, in Qwen's ChatML layout.

    This is exactly what the backbone's chat template (``style``; Qwen2-Audio's by default)
    renders for one audio and one text part; writing it out keeps the tiny offline tokenizer and
    the real one on the same string. With ``use_cot=False`` the answer slot is part of the
    prompt (the model answers directly).
    """
    prompt = (
        f"<|im_start|>system\n{style.system}<|im_end|>\n"
        f"<|im_start|>user\n{style.audio_prefix}<|audio_bos|>{audio_token}<|audio_eos|>{style.audio_suffix}"
        f"{user_instruction(classes, transcript, use_cot)}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    return prompt if use_cot else prompt + ANSWER_SLOT
