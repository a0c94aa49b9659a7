"""The wire format of mmrl's requests to a vLLM server: chat turns with the image inlined, the server's pixel budget
as it reports it, and the sampled tokens' log-probs as it returns them (`mmrl.rollout.vllm` uses these)."""

from __future__ import annotations

import base64
import io
from typing import Any


class ServerError(RuntimeError):
    """A non-200 answer of the server; `code` is its HTTP status."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def image_data_url(image: Any) -> str:
    """A PIL image as a PNG data URL: lossless, so the server sees the pixels mmrl's processor sees."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def openai_messages(messages: list[dict[str, Any]], image: Any) -> list[dict[str, Any]]:
    """mmrl's chat turns (`build_messages`) in the OpenAI format: the image placeholder becomes its data URL."""
    out = []
    for message in messages:
        parts = []
        for part in message["content"]:
            if part["type"] == "image":
                parts.append({"type": "image_url", "image_url": {"url": image_data_url(image)}})
            else:
                parts.append(part)
        out.append({"role": message["role"], "content": parts})
    return out


def find_key(tree: Any, key: str) -> Any:
    """The first value under `key` anywhere in a JSON tree (depth first), or None."""
    if isinstance(tree, dict):
        if key in tree:
            return tree[key]
        children = tree.values()
    elif isinstance(tree, list):
        children = tree
    else:
        return None
    for child in children:
        found = find_key(child, key)
        if found is not None:
            return found
    return None


def pixel_budget(mm_processor_kwargs: dict[str, Any] | None) -> tuple[int | None, int | None]:
    """(min_pixels, max_pixels) from a server's processor kwargs, in either spelling Qwen-VL processors take.

    >>> pixel_budget({"min_pixels": 3136, "max_pixels": 1003520})
    (3136, 1003520)
    >>> pixel_budget({"size": {"shortest_edge": 3136, "longest_edge": 1003520}}), pixel_budget(None)
    ((3136, 1003520), (None, None))
    """
    kwargs = mm_processor_kwargs or {}
    size = kwargs.get("size") or {}
    return kwargs.get("min_pixels", size.get("shortest_edge")), kwargs.get("max_pixels", size.get("longest_edge"))


def parse_sampling_logps(logprobs: dict[str, Any] | None, length: int) -> list[float]:
    """The sampled tokens' log-probs of one chat-completions choice; zeros when the server sent none."""
    if not logprobs or not logprobs.get("content"):
        return [0.0] * length
    values = [float(entry["logprob"]) for entry in logprobs["content"]][:length]
    return values + [0.0] * (length - len(values))
