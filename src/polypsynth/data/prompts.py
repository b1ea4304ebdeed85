"""Prompt templates: class prompts for study stage 2, quality-specific prompts for stage 1.

The wording gives the text encoder two handles the study relies on: the pathology (adenomatous
vs non-adenomatous) and the image quality (high quality / blurry / overexposed).
"""

from __future__ import annotations

from collections.abc import Mapping

from polypsynth.data.records import AD, NON_AD, NON_POLYP, POLYP, Record

QUALITY_WORDS = {
    "sharp": "a high quality",
    "blurred": "a blurry",
    "overexposed": "an overexposed",
    "unknown": "a",
}

CLASS_PROMPTS = {
    AD: "a high quality colonoscopy image of an adenomatous polyp",
    NON_AD: "a high quality colonoscopy image of a non-adenomatous polyp",
}

UNCONDITIONAL_PROMPT = ""


def stage1_prompt(has_polyp: bool, quality: str) -> str:
    words = QUALITY_WORDS.get(quality, QUALITY_WORDS["unknown"])
    return f"{words} colonoscopy image {'with a polyp' if has_polyp else 'without a polyp'}"


def class_prompt(label: str, overrides: Mapping[str, str] | None = None) -> str:
    prompts = {**CLASS_PROMPTS, **(overrides or {})}
    if label not in prompts:
        raise KeyError(f"no prompt for class {label!r}; classes with prompts: {', '.join(prompts)}")
    return prompts[label]


def prompt_for(record: Record, overrides: Mapping[str, str] | None = None) -> str:
    """The training prompt of a record: its class for AD / NON_AD, its quality otherwise."""
    if record.label in (AD, NON_AD):
        return class_prompt(record.label, overrides)
    if record.label in (POLYP, NON_POLYP):
        return stage1_prompt(record.label == POLYP, record.quality)
    raise KeyError(f"no prompt for label {record.label!r}")
