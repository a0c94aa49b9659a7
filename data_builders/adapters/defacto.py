"""The DeFacto release layout, imported as it is: a folder per sample, the folder name being the item id.

    <root>/<id>/original.jpg      the image (any of .jpg .jpeg .png .webp .bmp)
    <root>/<id>/smask.png         the counterfactual image (evidence masked), optional
    <root>/<id>/rmask.png         the random-masked image, optional
    <root>/<id>/boxes.txt         evidence boxes
    <root>/<id>/sboxes.txt        the boxes masked in smask (default: boxes.txt)
    <root>/<id>/outside_boxes.txt distractor boxes: regions outside the evidence
    <root>/<id>/random_boxes.txt  the boxes masked in rmask
    <root>/<id>/question.txt      the question, UTF-8 (the whole file, stripped)
    <root>/<id>/answer.txt        UTF-8; the first line is the answer, any further lines are accepted aliases

A box file holds one box per line, `x1 y1 x2 y2` in pixels of the original image (commas may separate the numbers);
blank lines and lines starting with `#` are skipped. The shipped smask / rmask images become the counterfactual and
random-masked variants unchanged; with `source.regenerate=true` they are ignored and the variants made here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from data_builders.config import BuildConfig
from data_builders.records import FileImage, Item, Prebuilt, Reject
from mmrl.errors import UserError

SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


class _Bad(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code


def read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise _Bad("not_utf8", f"{path.name} is not valid UTF-8 ({err.reason} at byte {err.start})") from None


def read_boxes(path: Path) -> list[list[float]] | None:
    """None when the file is absent.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "boxes.txt"
    >>> _ = p.write_text("# x1 y1 x2 y2\\n10 20 30 40\\n1.5, 2, 3, 4\\n")
    >>> read_boxes(p)
    [[10.0, 20.0, 30.0, 40.0], [1.5, 2.0, 3.0, 4.0]]
    """
    if not path.is_file():
        return None
    boxes = []
    for lineno, line in enumerate(read_text(path).splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.replace(",", " ").split()
        try:
            if len(parts) != 4:
                raise ValueError
            boxes.append([float(p) for p in parts])
        except ValueError:
            raise _Bad("bad_box", f"{path.name} line {lineno}: expected 'x1 y1 x2 y2', got {line!r}") from None
    return boxes


def _find(folder: Path, stem: str) -> Path | None:
    for suffix in SUFFIXES:
        path = folder / f"{stem}{suffix}"
        if path.is_file():
            return path
    return None


def read_sample(folder: Path, root: Path, source: str, regenerate: bool) -> Item:
    original = _find(folder, "original")
    if original is None:
        raise _Bad("missing_image", f"no original image ({'/'.join(SUFFIXES)}) in {folder.name}")
    for name in ("question.txt", "answer.txt"):
        if not (folder / name).is_file():
            raise _Bad("bad_record", f"{folder.name} has no {name}")
    answer_lines = [a.strip() for a in read_text(folder / "answer.txt").splitlines() if a.strip()]
    boxes = read_boxes(folder / "boxes.txt")
    prebuilt = {}
    if not regenerate:
        for variant, stem, box_file in (
            ("counterfactual", "smask", "sboxes.txt"),
            ("random_masked", "rmask", "random_boxes.txt"),
        ):
            image = _find(folder, stem)
            masked = read_boxes(folder / box_file)
            if masked is None and variant == "counterfactual":
                masked = boxes
            if image is not None:
                prebuilt[variant] = Prebuilt(FileImage(str(image.relative_to(root)), str(root)), masked or [])
    return Item(
        id=folder.name,
        source=source,
        image=FileImage(str(original.relative_to(root)), str(root)),
        question=read_text(folder / "question.txt").strip(),
        answer=answer_lines[0] if answer_lines else "",
        aliases=tuple(answer_lines[1:]),
        boxes=boxes,
        distractors=read_boxes(folder / "outside_boxes.txt"),
        meta={"defacto_folder": folder.name},
        prebuilt=prebuilt,
    )


def read(cfg: BuildConfig) -> Iterator[Item | Reject]:
    root = Path(cfg.source.path)
    if not root.is_dir():
        raise UserError(f"DeFacto folder not found: {root}")
    source = cfg.source.name or "defacto"
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            yield read_sample(folder, root, source, cfg.source.regenerate)
        except _Bad as err:
            yield Reject(folder.name, err.code, str(err))
