"""VQA accuracy as the official VQA evaluation defines it (GT-Vision-Lab/VQA, `vqaEval.py`).

Normalisation, applied to the prediction and to every human answer:

1. newlines and tabs become spaces; the text is stripped;
2. punctuation (`processPunctuation`): each of ``; : / ' [ ] " ( ) = + \\ _ > < @ ` , ?`` is deleted when it touches
   a space anywhere in the text or the text holds a comma between digits ("1,000"), else it becomes a space; then
   every period not followed by a digit is deleted ("u.s.a." -> "usa", "3.5" stays);
3. words (`processDigitArticle`): lower case, "none" and the number words zero..ten become digits, the articles
   a / an / the are dropped, and contraction spellings without an apostrophe get one ("dont" -> "don’t").

Score: for each of the n human answers, leave it out and count the k' remaining answers equal to the prediction;
that subset scores min(1, k'/3); the accuracy is the mean over the n subsets. With ten answers of which k match,
this is 0, 0.3, 0.6, 0.9, 1.0 for k = 0, 1, 2, 3, >= 4.

One difference from the script: it applies step 2 to the human answers (only when they disagree) and never step 3,
because its annotation files hold answers already normalised; mmrl's answers come from any source, so both sides
get the same three steps (as lmms-eval's VQAv2 task does). The tables below are the official ones, ported as data.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_PUNCTUATION = (";", ":", "/", "'", "[", "]", '"', "(", ")", "=", "+", "\\", "_", ">", "<", "@", "`", ",", "?")
_COMMA_BETWEEN_DIGITS = re.compile(r"\d,\d")
# the official pattern is "(?!<=\d)(\.)(?!\d)": its first group is a lookahead for the text "<=" plus a digit, which
# never follows a period, so it removes every period not followed by a digit, at most re.UNICODE = 32 of them
# (the flag was passed as the `count` argument of `sub`)
_PERIOD = re.compile(r"\.(?!\d)")
_PERIOD_COUNT = 32
_MANUAL_MAP = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
_ARTICLES = frozenset({"a", "an", "the"})
_CONTRACTIONS = {
    "aint": "ain't",
    "arent": "aren't",
    "cant": "can't",
    "couldve": "could've",
    "couldnt": "couldn't",
    "couldn'tve": "couldn’t’ve",
    "couldnt’ve": "couldn’t’ve",
    "didnt": "didn’t",
    "doesnt": "doesn’t",
    "dont": "don’t",
    "hadnt": "hadn’t",
    "hadnt’ve": "hadn’t’ve",
    "hadn'tve": "hadn’t’ve",
    "hasnt": "hasn’t",
    "havent": "haven’t",
    "hed": "he’d",
    "hed’ve": "he’d’ve",
    "he’dve": "he’d’ve",
    "hes": "he’s",
    "howd": "how’d",
    "howll": "how’ll",
    "hows": "how’s",
    "Id’ve": "I’d’ve",
    "I’dve": "I’d’ve",
    "Im": "I’m",
    "Ive": "I’ve",
    "isnt": "isn’t",
    "itd": "it’d",
    "itd’ve": "it’d’ve",
    "it’dve": "it’d’ve",
    "itll": "it’ll",
    "let’s": "let’s",
    "maam": "ma’am",
    "mightnt": "mightn’t",
    "mightnt’ve": "mightn’t’ve",
    "mightn’tve": "mightn’t’ve",
    "mightve": "might’ve",
    "mustnt": "mustn’t",
    "mustve": "must’ve",
    "neednt": "needn’t",
    "notve": "not’ve",
    "oclock": "o’clock",
    "oughtnt": "oughtn’t",
    "ow’s’at": "’ow’s’at",
    "’ows’at": "’ow’s’at",
    "’ow’sat": "’ow’s’at",
    "shant": "shan’t",
    "shed’ve": "she’d’ve",
    "she’dve": "she’d’ve",
    "she’s": "she’s",
    "shouldve": "should’ve",
    "shouldnt": "shouldn’t",
    "shouldnt’ve": "shouldn’t’ve",
    "shouldn’tve": "shouldn’t’ve",
    "somebody’d": "somebodyd",
    "somebodyd’ve": "somebody’d’ve",
    "somebody’dve": "somebody’d’ve",
    "somebodyll": "somebody’ll",
    "somebodys": "somebody’s",
    "someoned": "someone’d",
    "someoned’ve": "someone’d’ve",
    "someone’dve": "someone’d’ve",
    "someonell": "someone’ll",
    "someones": "someone’s",
    "somethingd": "something’d",
    "somethingd’ve": "something’d’ve",
    "something’dve": "something’d’ve",
    "somethingll": "something’ll",
    "thats": "that’s",
    "thered": "there’d",
    "thered’ve": "there’d’ve",
    "there’dve": "there’d’ve",
    "therere": "there’re",
    "theres": "there’s",
    "theyd": "they’d",
    "theyd’ve": "they’d’ve",
    "they’dve": "they’d’ve",
    "theyll": "they’ll",
    "theyre": "they’re",
    "theyve": "they’ve",
    "twas": "’twas",
    "wasnt": "wasn’t",
    "wed’ve": "we’d’ve",
    "we’dve": "we’d’ve",
    "weve": "we've",
    "werent": "weren’t",
    "whatll": "what’ll",
    "whatre": "what’re",
    "whats": "what’s",
    "whatve": "what’ve",
    "whens": "when’s",
    "whered": "where’d",
    "wheres": "where's",
    "whereve": "where’ve",
    "whod": "who’d",
    "whod’ve": "who’d’ve",
    "who’dve": "who’d’ve",
    "wholl": "who’ll",
    "whos": "who’s",
    "whove": "who've",
    "whyll": "why’ll",
    "whyre": "why’re",
    "whys": "why’s",
    "wont": "won’t",
    "wouldve": "would’ve",
    "wouldnt": "wouldn’t",
    "wouldnt’ve": "wouldn’t’ve",
    "wouldn’tve": "wouldn’t’ve",
    "yall": "y’all",
    "yall’ll": "y’all’ll",
    "y’allll": "y’all’ll",
    "yall’d’ve": "y’all’d’ve",
    "y’alld’ve": "y’all’d’ve",
    "y’all’dve": "y’all’d’ve",
    "youd": "you’d",
    "youd’ve": "you’d’ve",
    "you’dve": "you’d’ve",
    "youll": "you’ll",
    "youre": "you’re",
    "youve": "you’ve",
}
# leave-one-out needs four matching answers for full credit (three others remain in each subset): fewer than four
# human answers cannot be an annotator panel, they are synonyms
MIN_HUMAN_ANSWERS = 4


def _punctuation(text: str) -> str:
    out = text
    digits_comma = _COMMA_BETWEEN_DIGITS.search(text) is not None
    for mark in _PUNCTUATION:
        # the official test looks at the text as given, not as already cleaned by earlier marks
        touches_space = f"{mark} " in text or f" {mark}" in text
        out = out.replace(mark, "" if touches_space or digits_comma else " ")
    return _PERIOD.sub("", out, count=_PERIOD_COUNT)


def _digits_and_articles(text: str) -> str:
    words = [_MANUAL_MAP.get(word, word) for word in text.lower().split()]
    return " ".join(_CONTRACTIONS.get(word, word) for word in words if word not in _ARTICLES)


def vqa_normalize(text: str) -> str:
    """An answer as the official VQA evaluation compares it.

    >>> vqa_normalize("The U.S.A."), vqa_normalize("Two dogs"), vqa_normalize("none"), vqa_normalize("1,000")
    ('usa', '2 dogs', '0', '1000')
    >>> vqa_normalize("3.5 ft."), vqa_normalize("eleven"), vqa_normalize("dont"), vqa_normalize("yes/no")
    ('3.5 ft', 'eleven', 'don’t', 'yes no')
    """
    return _digits_and_articles(_punctuation(text.replace("\n", " ").replace("\t", " ").strip()))


def vqa_accuracy(answer: str, human_answers: Sequence[str]) -> float:
    """Mean over leave-one-out subsets of the human answers of min(1, matches / 3) (module docstring).

    >>> humans = ["2"] * 3 + ["3"] * 7
    >>> vqa_accuracy("two", humans), vqa_accuracy("3", humans), vqa_accuracy("4", humans)
    (0.9, 1.0, 0.0)
    """
    prediction = vqa_normalize(answer)
    if not prediction or not human_answers:
        return 0.0
    n = len(human_answers)
    k = sum(vqa_normalize(h) == prediction for h in human_answers)
    # leaving out one of the k matching answers leaves k - 1 matches; leaving out any other leaves k
    return (k * min(1.0, (k - 1) / 3) + (n - k) * min(1.0, k / 3)) / n
