"""The DeFacto-100K release (huggingface.co/datasets/tinnel123/defacto_dataset), read as it unpacks: a folder per
sample (numbered 1, 2, 3, ...), the folder name being the item id.

    <root>/<id>/original.<ext>        the image (.png .jpg .jpeg .webp .bmp)
    <root>/<id>/original_smask.<ext>  the question-relevant regions masked: the counterfactual image
    <root>/<id>/original_rmask.<ext>  irrelevant regions masked: the random-masked image
    <root>/<id>/boxes.txt             every box found in the image (not read: it mixes evidence and the rest)
    <root>/<id>/sboxes.txt            the question-relevant boxes: the evidence, and what original_smask masks
    <root>/<id>/outside_boxes.txt     the irrelevant boxes: the distractors
    <root>/<id>/random_boxes.txt      the boxes masked in original_rmask
    <root>/<id>/question.txt          the question, UTF-8 (the whole file, stripped)
    <root>/<id>/answer.txt            UTF-8; the first line is the answer, any further lines are accepted aliases

The release does not state the box-file syntax, so every form seen in DeFacto's tooling is read: one box a line as
`x1 y1 x2 y2`, comma-separated, or a bracketed list, or one bracketed list of boxes; pixels of the original image;
blank lines and `#` comments skipped. `smask.<ext>` / `rmask.<ext>` (without `original_`) are read too.

The shipped masked images become the counterfactual and random-masked variants unchanged; with
`source.regenerate=true` they are ignored and the variants made here from sboxes.txt. An item without sboxes.txt,
or with an empty one, has no evidence: its counterfactual is rejected (masking nothing cannot make "unknown" right).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from data_builders.adapters.common import boxes_from_text
from data_builders.config import BuildConfig
from data_builders.records import FileImage, Item, Prebuilt, Reject
from mmrl.errors import UserError

SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MASKED = (("counterfactual", "smask", "sboxes.txt"), ("random_masked", "rmask", "random_boxes.txt"))


class _Bad(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code


def read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise _Bad("not_utf8", f"{path.name} is not valid UTF-8 ({err.reason} at byte {err.start})") from None


def read_boxes(path: Path) -> list[list[float]] | None:
    """The boxes of a box file; None when the file is absent.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "sboxes.txt"
    >>> _ = p.write_text("# x1 y1 x2 y2\\n10 20 30 40\\n1.5, 2, 3, 4\\n[5, 6, 7, 8]\\n")
    >>> read_boxes(p)
    [[10.0, 20.0, 30.0, 40.0], [1.5, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]
    """
    if not path.is_file():
        return None
    boxes: list[list[float]] = []
    for lineno, line in enumerate(read_text(path).splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            boxes += boxes_from_text(line)
        except ValueError as err:
            raise _Bad("bad_box", f"{path.name} line {lineno}: {err}") from None
    return boxes


def _find(folder: Path, *stems: str) -> Path | None:
    for stem in stems:
        for suffix in SUFFIXES:
            for path in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
                if path.is_file():
                    return path
    return None


def read_sample(folder: Path, root: Path, source: str, regenerate: bool) -> Item:
    original = _find(folder, "original")
    if original is None:
        raise _Bad("missing_image", f"no original image (original{'/'.join(SUFFIXES)}) in {folder.name}")
    for name in ("question.txt", "answer.txt"):
        if not (folder / name).is_file():
            raise _Bad("bad_record", f"{folder.name} has no {name}")
    answer_lines = [a.strip() for a in read_text(folder / "answer.txt").splitlines() if a.strip()]
    evidence = read_boxes(folder / "sboxes.txt")
    prebuilt = {}
    if not regenerate:
        for variant, stem, box_file in MASKED:
            image = _find(folder, f"original_{stem}", stem)
            masked = read_boxes(folder / box_file)
            if image is None or (variant == "counterfactual" and not evidence):
                continue  # made here (random_masked) or rejected for want of evidence (counterfactual)
            prebuilt[variant] = Prebuilt(FileImage(str(image.relative_to(root)), str(root)), masked or [])
    return Item(
        id=folder.name,
        source=source,
        image=FileImage(str(original.relative_to(root)), str(root)),
        question=read_text(folder / "question.txt").strip(),
        answer=answer_lines[0] if answer_lines else "",
        aliases=tuple(answer_lines[1:]),
        boxes=evidence or [],
        distractors=read_boxes(folder / "outside_boxes.txt"),
        meta={"defacto_folder": folder.name},
        prebuilt=prebuilt,
    )


def _order(folder: Path) -> tuple[int, int | str]:
    # numbered folders in numeric order (1, 2, ..., 10), any other names after them
    return (0, int(folder.name)) if folder.name.isdigit() else (1, folder.name)


def read(cfg: BuildConfig) -> Iterator[Item | Reject]:
    root = Path(cfg.source.path)
    if not root.is_dir():
        raise UserError(f"DeFacto folder not found: {root}")
    source = cfg.source.name or "defacto"
    folders = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=_order)
    if not folders:
        raise UserError(f"{root} holds no sample folders (expected <root>/1/original.png, <root>/2/..., ...)")
    for folder in folders:
        try:
            yield read_sample(folder, root, source, cfg.source.regenerate)
        except _Bad as err:
            yield Reject(folder.name, err.code, str(err))
