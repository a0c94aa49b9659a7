"""Every pattern the project matches text with: answer/think blocks, boxes, numbers, choice letters, normalisation.

Tolerant of what models emit, strict about what is rewarded (DESIGN.md, "Completions"):

- The answer is the content of exactly one `<answer>...</answer>` block. Several answer blocks (or an unclosed or
  nested one) are a format failure and `parse_answer` returns None: no block counts, so accuracy sees "no answer"
  (the unparseable penalty). Taking the first or last block instead would let a model hedge across blocks.
- An empty answer block is no answer (None): an empty string must never match anything.
- Boxes are read from `<box>`/`<bbox>` tags (a JSON list `[x1,y1,x2,y2]`, a list of them, or Qwen's point pairs
  `(x1,y1),(x2,y2)`), Qwen's `<|box_start|>(x1,y1),(x2,y2)<|box_end|>` and Qwen2.5-VL's JSON `"bbox_2d": [...]`.
  A bare list of numbers outside these markers is not a box (an answer such as "[1, 2, 3, 4]" stays an answer).

Tags are found by scanning tokens left to right, never with `.*?` between an opener and a closer: that keeps
every parse linear in the completion's length even for 100k characters of unclosed tags.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Sequence
from itertools import islice

from mmrl.types import Box

_ANSWER_TAG = re.compile(r"<(/?)answer>", re.IGNORECASE)
_THINK_TAG = re.compile(r"<(/?)think>", re.IGNORECASE)
_STRUCTURE_TAG = re.compile(r"<(/?)(think|answer)>", re.IGNORECASE)
_BOX_TAG = re.compile(r"<(/?)(box|bbox)>|<\|(box_start|box_end)\|>", re.IGNORECASE)
_BBOX_2D = re.compile(r"\"bbox_2d\"\s*:\s*\[([^\[\]]{0,200})\]", re.IGNORECASE)
# anything that looks like a markup tag or a Qwen special token: a direct answer must contain none
_ANY_TAG = re.compile(r"</?[A-Za-z_][\w-]{0,30}\s*/?>|<\|[\w-]{1,40}\|>")
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_INNER_GROUP = re.compile(r"\[([^\[\]]*)\]|\(([^()]*)\)")
_WORD = re.compile(r"\S+")

# normalisation (exact match, abstention phrases, class names)
_THOUSANDS_COMMA = re.compile(r"(?<=\d),(?=\d{3}\b)")
_APOSTROPHE = re.compile(r"['\u2019`]")
# a period between digits is a decimal point and stays; every other non-word character becomes a space
_PUNCT = re.compile(r"(?!(?<=\d)\.(?=\d))[^\w\s]|_")
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_SPACES = re.compile(r"\s+")
_UNITS = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen"
_TEENS_AND_TENS = "seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety"
_NUMBER_VALUES = [*map(str, range(21)), "30", "40", "50", "60", "70", "80", "90"]
_NUMBER_WORDS = dict(zip(f"{_UNITS} {_TEENS_AND_TENS}".split(), _NUMBER_VALUES, strict=True))
_NUMBER_WORD = re.compile(r"\b(?:" + "|".join(_NUMBER_WORDS) + r")\b")

# multiple choice, the forms models write: "B", "(B)", "[B]", "B.", "B,", "B) dog", "B: dog", "B dog" (an upper-case
# letter only: "a dog" is an article), "Option B", "Final answer: B", "The correct answer is (B)", "B is correct"
_CHOICE_LEAD = (
    r"(?i:(?:so\s*,?\s*)?(?:the\s+)?(?:final\s+|correct\s+|best\s+|right\s+)?"
    r"(?:answer|option|choice)(?:\s+is)?\s*[:\-]?\s*)?"
)
_CHOICE_VERDICT = (
    r"(?i:\s+is\s+(?:the\s+)?(?:correct|right|best)(?:\s+(?:answer|option|choice))?|\s+is\s+the\s+answer)\s*[.!]?"
)
_CHOICE = re.compile(
    rf"^{_CHOICE_LEAD}(?:[(\[]([A-Za-z])[)\]][.:,]?\s*(.*)"  # (B), [B], (B) dog
    rf"|([A-Za-z])(?:[.):,]\s*(.*)|{_CHOICE_VERDICT}|\s*)"  # B, B. dog, B, B is correct
    r"|([A-Z])\s+(\S.*))$",  # B dog
    re.S,
)
_ANSWER_LEAD = re.compile(r"^(?:so\s*,?\s*)?(?:the\s+)?(?:final\s+|correct\s+)?answer\b", re.IGNORECASE)
# another option letter standing alone in the rest of the answer: a hedge ("A or B", "B, C")
_OTHER_LETTER = re.compile(r"(?<![\w'\u2019])([A-Z])(?![\w'\u2019])|\(([A-Za-z])\)")
# a relaxed number: optional currency, one number, optional percent; nothing else
_LONE_NUMBER = re.compile(r"^\s*[$\u20ac\u00a3]?\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*%?\s*$")


def _single_block(text: str, tag_re: re.Pattern[str]) -> str | None:
    """The stripped content of the only open/close pair of `tag_re` in `text`; None for zero, several, unbalanced."""
    tags = list(islice(tag_re.finditer(text), 3))  # a third tag already fails: stop scanning there
    if len(tags) != 2 or tags[0].group(1) != "" or tags[1].group(1) != "/":
        return None
    content = text[tags[0].end() : tags[1].start()].strip()
    return content or None


def parse_answer(text: str) -> str | None:
    """The content of the one `<answer>` block; None when absent, empty, unclosed, nested or repeated.

    >>> parse_answer("<think>a red car</think><answer> red </answer>")
    'red'
    >>> parse_answer("<answer>red</answer><answer>blue</answer>") is None  # several blocks: none counts
    True
    >>> parse_answer("<answer></answer>") is None
    True
    """
    return _single_block(text, _ANSWER_TAG)


def parse_direct(text: str) -> str | None:
    """The No-Thinking answer: the whole stripped completion, when it holds no tag at all; else None.

    >>> parse_direct("  golden retriever\\n")
    'golden retriever'
    >>> parse_direct("<answer>cat</answer>") is None
    True
    """
    content = text.strip()
    if not content or _ANY_TAG.search(content):
        return None
    return content


def extract_answer(text: str, template: str = "think") -> str | None:
    """The answer a template defines: the `<answer>` block ("think") or the whole completion ("direct").

    >>> extract_answer("cat", "direct"), extract_answer("cat", "think")
    ('cat', None)
    """
    return parse_direct(text) if template == "direct" else parse_answer(text)


def is_think_answer(text: str) -> bool:
    """Exactly `<think>..</think>` then `<answer>..</answer>`, both non-empty, nothing but spaces around them.

    >>> is_think_answer("<think>red pixels</think>\\n<answer>red</answer>")
    True
    >>> is_think_answer("<answer>red</answer>"), is_think_answer("<think>x</think><answer>red</answer> more")
    (False, False)
    """
    tags = list(islice(_STRUCTURE_TAG.finditer(text), 5))
    expected = [("", "think"), ("/", "think"), ("", "answer"), ("/", "answer")]
    if [(t.group(1), t.group(2).lower()) for t in tags] != expected:
        return False
    outside = text[: tags[0].start()] + text[tags[1].end() : tags[2].start()] + text[tags[3].end() :]
    inside = (text[tags[0].end() : tags[1].start()], text[tags[2].end() : tags[3].start()])
    return not outside.strip() and all(part.strip() for part in inside)


def _numbers(text: str) -> list[float]:
    return [float(m) for m in _NUMBER.findall(text)]


def _candidates_in(content: str) -> list[list[float]]:
    """Number groups of one box tag: `[..]` or `(..)` groups (innermost); point pairs join into one box."""
    groups = [_numbers(m.group(1) if m.group(1) is not None else m.group(2)) for m in _INNER_GROUP.finditer(content)]
    groups = [g for g in groups if g]
    if not groups:
        nums = _numbers(content)
        return [nums] if nums else [[]]
    if all(len(g) == 2 for g in groups):
        # (x1,y1),(x2,y2) pairs; an odd point left over is an incomplete box
        return [groups[i] + groups[i + 1] if i + 1 < len(groups) else groups[i] for i in range(0, len(groups), 2)]
    return groups


def parse_box_candidates(text: str) -> list[list[float]]:
    """Every number group a completion offers as a box, in the model's frame, valid or not (any length, any value).

    Box format rewards judge these; `parse_boxes` keeps the well-formed ones.

    >>> parse_box_candidates("<box>[[1, 2, 3, 4], [5, 6, 7]]</box> and <|box_start|>(10,20),(30,40)<|box_end|>")
    [[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0], [10.0, 20.0, 30.0, 40.0]]
    >>> parse_box_candidates('[{"bbox_2d": [8, 9, 50, 60], "label": "cat"}]')
    [[8.0, 9.0, 50.0, 60.0]]
    """
    found: list[list[float]] = []
    open_at: tuple[str, int] | None = None
    for tag in _BOX_TAG.finditer(text):
        closing = tag.group(1) == "/" or (tag.group(3) or "").lower() == "box_end"
        kind = "qwen" if tag.group(3) else tag.group(2).lower()  # </bbox> closes <bbox> only
        if not closing:
            open_at = (kind, tag.end())  # a second opener restarts the box: nested openers read the innermost
        elif open_at is not None and open_at[0] == kind:
            found.extend(_candidates_in(text[open_at[1] : tag.start()]))
            open_at = None
    found.extend(_numbers(m.group(1)) for m in _BBOX_2D.finditer(text))
    return found


def box_from_candidate(values: Sequence[float]) -> Box | None:
    """A `Box` from four finite numbers with x1 < x2 and y1 < y2; None otherwise.

    >>> box_from_candidate([1, 2, 3, 4]), box_from_candidate([3, 2, 1, 4]), box_from_candidate([1, 2, 3])
    (Box(x1=1.0, y1=2.0, x2=3.0, y2=4.0), None, None)
    """
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        return None
    x1, y1, x2, y2 = (float(v) for v in values)
    if not (x1 < x2 and y1 < y2):
        return None
    return Box(x1, y1, x2, y2)


def parse_boxes(text: str) -> list[Box]:
    """The well-formed boxes of a completion, in the model's frame (convert with `FrameSpec.to_pixels`).

    >>> parse_boxes("<think>the dog <bbox>[10, 20, 110, 220]</bbox></think>")
    [Box(x1=10.0, y1=20.0, x2=110.0, y2=220.0)]
    >>> parse_boxes("<box>[[5, 5, 1, 1]]</box> [1, 2, 3, 4]")  # reversed corners; a bare list is no box
    []
    """
    boxes = (box_from_candidate(c) for c in parse_box_candidates(text))
    return [b for b in boxes if b is not None]


def _coordinate(value: float, decimals: int) -> str:
    return str(round(value)) if decimals == 0 else f"{value:.{decimals}f}"


def format_boxes(boxes: Iterable[Box | Sequence[float]], decimals: int = 0) -> str:
    """Boxes as the completion template writes them: `<box>[[x1,y1,x2,y2],...]</box>`, rounded to `decimals`.

    >>> format_boxes([Box(10.4, 20, 110, 220.6), [1, 2, 3, 4]])
    '<box>[[10,20,110,221],[1,2,3,4]]</box>'
    >>> parse_boxes(format_boxes([[1.25, 2, 3, 4]], decimals=2))
    [Box(x1=1.25, y1=2.0, x2=3.0, y2=4.0)]
    """
    rows = []
    for box in boxes:
        values = box.to_list() if isinstance(box, Box) else list(box)
        rows.append("[" + ",".join(_coordinate(float(v), decimals) for v in values) + "]")
    return "<box>[" + ",".join(rows) + "]</box>"


def normalize_answer(text: str) -> str:
    """Case, unicode forms, underscores, punctuation, articles, number words and spaces normalised away.

    Articles are kept when dropping them would leave nothing (the answer "A" or "The").

    >>> normalize_answer("  The Golden_Retriever!! ")
    'golden retriever'
    >>> normalize_answer("Two cats"), normalize_answer("1,000.5 kg"), normalize_answer("A")
    ('2 cats', '1000.5 kg', 'a')
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _APOSTROPHE.sub("", _THOUSANDS_COMMA.sub("", text))
    text = _SPACES.sub(" ", _PUNCT.sub(" ", text)).strip()
    text = _NUMBER_WORD.sub(lambda m: _NUMBER_WORDS[m.group(0)], text)
    without_articles = _SPACES.sub(" ", _ARTICLES.sub(" ", text)).strip()
    return without_articles or text


def contains_phrase(text: str, phrase: str) -> bool:
    """Whether normalised `phrase` occurs in normalised `text` as whole words (never inside a word).

    >>> contains_phrase("it is Unknown.", "unknown"), contains_phrase("a piano", "no"), contains_phrase("", "")
    (True, False, False)
    """
    needle = normalize_answer(phrase)
    return bool(needle) and f" {needle} " in f" {normalize_answer(text)} "


def words(text: str) -> list[str]:
    """Whitespace-separated words (the unit of the repetition penalty).

    >>> words(" a  b\\nc ")
    ['a', 'b', 'c']
    """
    return _WORD.findall(text)


def _choice_line(line: str, num_choices: int) -> tuple[int, str] | None:
    match = _CHOICE.match(line)
    if match is None:
        return None
    letter = next(g for g in (match.group(1), match.group(3), match.group(5)) if g is not None)
    rest = next((g for g in (match.group(2), match.group(4), match.group(6)) if g is not None), "").strip()
    index = ord(letter.upper()) - ord("A")
    if not 0 <= index < num_choices:
        return None
    for other in _OTHER_LETTER.finditer(rest):
        other_index = ord((other.group(1) or other.group(2)).upper()) - ord("A")
        if other_index != index and 0 <= other_index < num_choices:
            return None
    return index, rest


def parse_choice(answer: str, num_choices: int) -> tuple[int, str] | None:
    """(index, trailing text) for an answer naming an option letter, else None.

    Markdown emphasis is ignored ("**B**"). A first line naming a letter may be followed by an explanation, unless
    another line names a letter on its own ("A\\nB" is ambiguous); reasoning may come first when the last line
    states the answer ("... Final answer: B"). Hedges naming two letters are refused.

    >>> parse_choice("(B) dog", 4), parse_choice("b", 4), parse_choice("E", 4), parse_choice("A or B", 4)
    ((1, 'dog'), (1, ''), None, None)
    >>> parse_choice("**C**", 4), parse_choice("The correct answer is [B].", 4), parse_choice("D is correct", 4)
    ((2, ''), (1, ''), (3, ''))
    >>> parse_choice("B\\nThe dog is brown.", 4), parse_choice("A\\nB", 4), parse_choice("a dog", 4)
    ((1, ''), None, None)
    """
    lines = [line.strip() for line in answer.replace("*", "").splitlines() if line.strip()]
    if not lines:
        return None
    first = _choice_line(lines[0], num_choices)
    if first is None:
        if len(lines) > 1 and _ANSWER_LEAD.match(lines[-1]):
            return _choice_line(lines[-1], num_choices)
        return None
    lone = [c for c in (_choice_line(line, num_choices) for line in lines[1:]) if c is not None and not c[1]]
    return None if any(index != first[0] for index, _ in lone) else first


def parse_number(text: str) -> float | None:
    """The one finite number a short answer states ("12", "$3.5", "40%", "1,200", "twelve"), else None.

    >>> parse_number("$1,200"), parse_number(" 40% "), parse_number("three"), parse_number("3 or 4")
    (1200.0, 40.0, 3.0, None)
    >>> parse_number("1e999") is None, parse_number("nan") is None
    (True, True)
    """
    text = _THOUSANDS_COMMA.sub("", unicodedata.normalize("NFKC", text).strip())
    word = _NUMBER_WORDS.get(text.casefold().rstrip("."))
    match = _LONE_NUMBER.match(word or text)
    if match is None:
        return None
    value = float(match.group(1))
    return value if math.isfinite(value) else None
