"""Abstention: does a parsed answer decline to answer ("unknown", "cannot determine", ...)?

Whole phrases of the normalised answer only. DeFacto's first release searched the whole completion for
"unknown|no|none", so reasoning that said "not" turned a right answer into an abstention; here "not", "know",
"no", "none of" and "piano" never fire, and an answer equal to the expected label ("Unknown Pleasures") is that
label, not an abstention.
"""

from __future__ import annotations

from collections.abc import Sequence

from mmrl.rewards.config import _default_phrases
from mmrl.rewards.parsing import normalize_answer

DEFAULT_PHRASES: tuple[str, ...] = tuple(_default_phrases())


def is_abstention(answer: str | None, phrases: Sequence[str] = DEFAULT_PHRASES, label: str | None = None) -> bool:
    """True when the answer contains one of `phrases` as whole words, unless it is exactly `label`.

    >>> is_abstention("Unknown."), is_abstention("It cannot be determined from the image")
    (True, True)
    >>> is_abstention("not a dog"), is_abstention("I know"), is_abstention("no"), is_abstention("piano")
    (False, False, False, False)
    >>> is_abstention("none of the above"), is_abstention("Unknown Pleasures", label="unknown pleasures")
    (False, False)
    """
    if not answer:
        return False
    norm = normalize_answer(answer)
    if label is not None and norm and norm == normalize_answer(label):
        return False
    padded = f" {norm} "  # padding makes `in` a whole-word test on the space-separated normal form
    return any(needle and f" {needle} " in padded for needle in map(normalize_answer, phrases))


def without_phrases(answer: str, phrases: Sequence[str] = DEFAULT_PHRASES) -> str:
    """The normalised answer with every whole-word abstention phrase cut out: what else it says.

    >>> without_phrases("red or unknown"), without_phrases("No answer."), without_phrases("piano")
    ('red or', '', 'piano')
    """
    padded = f" {normalize_answer(answer)} "
    for needle in sorted(map(normalize_answer, phrases), key=len, reverse=True):  # longest first: "no answer"
        while needle and f" {needle} " in padded:
            padded = padded.replace(f" {needle} ", " ")
    return padded.strip()
