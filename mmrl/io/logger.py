"""Where a run's numbers go: `metrics.jsonl` (one JSON object per step), TensorBoard, optionally Weights & Biases,
and every K steps an HTML page of sampled completions beside their images, for a person to open in a browser.

Only the main process writes. On resume, lines of `metrics.jsonl` past the resumed step are dropped first, so the
file reads as one run that never stopped. That file is never rewritten in place: the kept lines go to a new file
that replaces the old one with an atomic rename, so a kill at any moment leaves the old history or the new one,
never an empty or half-written file. A torn or garbage line (a kill in the middle of a write, a bad edit) is
dropped with one warning line instead of breaking every later resume.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmrl.errors import UserError


def mean_std(values: Iterable[float | None]) -> tuple[float, float]:
    """Mean and population std of the values that are not None (NaN, NaN when there are none).

    >>> mean_std([1.0, None, 3.0])
    (2.0, 1.0)
    """
    present = [float(v) for v in values if v is not None]
    if not present:
        return math.nan, math.nan
    mean = sum(present) / len(present)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in present) / len(present))


class MetricsLogger:
    def __init__(
        self,
        run_dir: str | Path,
        *,
        tensorboard: bool = True,
        wandb: bool = False,
        wandb_project: str = "mmrl",
        config: dict[str, Any] | None = None,
        is_main_process: bool = True,
        resume_step: int = 0,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "metrics.jsonl"
        self.enabled = is_main_process
        self._tb = None
        self._wandb = None
        if not self.enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._truncate_after(resume_step)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"), purge_step=resume_step + 1)
        if wandb:
            try:
                import wandb as wandb_module
            except ImportError:
                raise UserError(
                    "logging.wandb is true but wandb is not installed (pip install 'mmrl[wandb]')"
                ) from None
            self._wandb = wandb_module.init(project=wandb_project, config=config, dir=str(self.run_dir), resume="allow")

    def _truncate_after(self, step: int) -> None:
        if not self.path.is_file():
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        bad: list[int] = []
        with self.path.open("rb") as source, tmp.open("wb") as target:  # streamed: the file can be large
            for number, raw in enumerate(source, 1):
                record = _record(raw)
                if record is None:
                    bad.append(number)
                elif record["step"] <= step:
                    target.write(raw if raw.endswith(b"\n") else raw + b"\n")
            target.flush()
            os.fsync(target.fileno())
        os.replace(tmp, self.path)
        if bad:
            print(
                f"mmrl: warning: {self.path}: {len(bad)} torn or unreadable line(s) dropped (first: line {bad[0]})",
                file=sys.stderr,
            )

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": step, **{k: _jsonable(v) for k, v in metrics.items()}}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for key, value in metrics.items():
                if isinstance(value, int | float) and math.isfinite(value):
                    self._tb.add_scalar(key, value, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(metrics, step=step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def _record(raw: bytes) -> dict[str, Any] | None:
    """One line of metrics.jsonl as a dict with an integer step, or None when it is torn or garbage."""
    try:
        record = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("step"), int) or not raw.endswith(b"\n"):
        return None  # a line without its newline is the torn end of a write that was cut short
    return record


def _jsonable(value: Any) -> Any:
    # JSON has no NaN or infinity: write them as null rather than produce a file strict parsers reject
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass
class SampleRow:
    """One sampled completion as the samples page shows it."""

    sample_id: str
    variant: str
    question: str
    answer: str
    completion: str
    reward: float
    terms: dict[str, float | None] = field(default_factory=dict)
    advantage: float = 0.0
    image: Any = None  # a PIL image, shown as a thumbnail embedded in the page


def _thumbnail(image: Any, max_side: int = 256) -> str:
    image = image.copy()
    image.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


_STYLE = (
    "body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
    "padding:4px;vertical-align:top}pre{white-space:pre-wrap;max-width:40em;margin:0}img{image-rendering:pixelated;"
    "min-width:128px}.pos{color:#070}.neg{color:#a00}"
)


def write_samples_page(run_dir: str | Path, step: int, rows: list[SampleRow]) -> Path:
    """Write RUN/samples/step_000010.html (self-contained: images embedded) and return its path."""
    out = Path(run_dir) / "samples" / f"step_{step:06d}.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    term_names = sorted({name for row in rows for name in row.terms})
    head = "".join(f"<th>{html.escape(n)}</th>" for n in term_names)
    body = []
    for row in rows:
        image = f'<img src="{_thumbnail(row.image)}">' if row.image is not None else ""
        terms = "".join(f"<td>{'' if row.terms.get(n) is None else f'{row.terms[n]:.3f}'}</td>" for n in term_names)
        css = "pos" if row.advantage > 0 else "neg" if row.advantage < 0 else ""
        body.append(
            f"<tr><td>{image}</td><td>{html.escape(row.sample_id)}<br>{html.escape(row.variant)}</td>"
            f"<td>{html.escape(row.question)}</td><td>{html.escape(row.answer)}</td>"
            f"<td><pre>{html.escape(row.completion)}</pre></td><td>{row.reward:.3f}</td>"
            f'<td class="{css}">{row.advantage:+.3f}</td>{terms}</tr>'
        )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>step {step}</title><style>{_STYLE}</style></head>"
        f"<body><h1>Sampled completions, step {step}</h1><table><tr><th>image</th><th>sample</th><th>question</th>"
        f"<th>expected</th><th>completion</th><th>reward</th><th>advantage</th>{head}</tr>{''.join(body)}</table>"
        "</body></html>\n"
    )
    out.write_text(page, encoding="utf-8")
    return out
