"""Format rewards: the think-and-answer structure, box syntax, and the No-Thinking direct answer.

`format` is the one a recipe lists: it follows `config.template`. For "think" it is the structure (0 or 1) times
the share of well-formed boxes when the completion writes any, so one broken box costs part of the reward.
"""

from __future__ import annotations

from mmrl.boxes import FrameSpec
from mmrl.rewards.config import RewardConfig
from mmrl.rewards.grounding import predicted_boxes
from mmrl.rewards.parsing import is_think_answer, parse_direct
from mmrl.types import Sample

DEFAULT_CONFIG = RewardConfig()
DEFAULT_FRAME = FrameSpec()


def think_format_reward(
    completion: str, sample: Sample, *, config: RewardConfig = DEFAULT_CONFIG, frame: FrameSpec = DEFAULT_FRAME
) -> float:
    """1.0 for exactly `<think>..</think><answer>..</answer>` (both non-empty, nothing else around), else 0.0.

    >>> from mmrl.types import Variant
    >>> s = Sample("1", "g", Variant.POSITIVE, "a.png", (64, 64), "?", "red")
    >>> think_format_reward("<think>red pixels</think> <answer>red</answer>", s)
    1.0
    >>> think_format_reward("<think>x</think><answer></answer>", s), think_format_reward("<answer>red</answer>", s)
    (0.0, 0.0)
    """
    return float(is_think_answer(completion))


def box_format_reward(
    completion: str, sample: Sample, *, config: RewardConfig = DEFAULT_CONFIG, frame: FrameSpec = DEFAULT_FRAME
) -> float | None:
    """Share of written boxes that are four finite numbers, x1 < x2, y1 < y2, inside the image in `frame`.

    None when the completion writes no box; 0.0 beyond `max_boxes` boxes.

    >>> from mmrl.types import Variant
    >>> s = Sample("1", "g", Variant.POSITIVE, "a.png", (64, 64), "?", "red")
    >>> box_format_reward("<box>[[1, 2, 30, 40], [9, 9, 1, 1]]</box>", s), box_format_reward("no boxes", s)
    (0.5, None)
    >>> box_format_reward("<box>[0, 0, 65, 10]</box>", s)  # past the 64-pixel edge
    0.0
    """
    valid, written = predicted_boxes(completion, sample, frame, config.max_boxes)
    if written == 0:
        return None
    if written > config.max_boxes:
        return 0.0
    return len(valid) / written


def direct_format_reward(
    completion: str, sample: Sample, *, config: RewardConfig = DEFAULT_CONFIG, frame: FrameSpec = DEFAULT_FRAME
) -> float:
    """1.0 for a No-Thinking answer: non-empty, no tags, at most `direct_max_chars` characters.

    >>> from mmrl.types import Variant
    >>> s = Sample("1", "g", Variant.POSITIVE, "a.png", (64, 64), "?", "red")
    >>> direct_format_reward(" red ", s), direct_format_reward("<answer>red</answer>", s), direct_format_reward("", s)
    (1.0, 0.0, 0.0)
    """
    answer = parse_direct(completion)
    return float(answer is not None and len(answer) <= config.direct_max_chars)


def format_reward(
    completion: str, sample: Sample, *, config: RewardConfig = DEFAULT_CONFIG, frame: FrameSpec = DEFAULT_FRAME
) -> float:
    """The template's format: direct -> `direct_format`; think -> structure x share of well-formed boxes.

    >>> from mmrl.types import Variant
    >>> s = Sample("1", "g", Variant.POSITIVE, "a.png", (64, 64), "?", "red")
    >>> format_reward("<think>the red <box>[[1,1,9,9],[1,1,99,9]]</box></think><answer>red</answer>", s)
    0.5
    """
    if config.template == "direct":
        return direct_format_reward(completion, sample, config=config, frame=frame)
    structure = think_format_reward(completion, sample, config=config, frame=frame)
    boxes = box_format_reward(completion, sample, config=config, frame=frame) if structure else None
    return structure * (1.0 if boxes is None else boxes)
