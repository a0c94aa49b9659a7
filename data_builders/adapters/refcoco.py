"""Referring expressions: RefCOCO / RefCOCO+ / RefCOCOg as released (`kind: refcoco`), and a `refs` list inside a
COCO-style JSON (`kind: coco`, `coco_mode: refs`). One reader of refs serves both.

The release (lichengunc/refer) unpacks as `<data>/refcoco/refs(unc).p` + `instances.json` (likewise `refcoco+` with
`refs(unc).p`, `refcocog` with `refs(umd).p` and `refs(google).p`); refer.py reads the images from
`<data>/images/mscoco/images/train2014`. A ref is `{"ref_id", "ann_id", "image_id", "category_id", "split",
"sentences": [{"sent_id", "raw", "sent", "tokens"}], "sent_ids", "file_name"}`; its `file_name` names the ref
(`COCO_train2014_<image>_<ann>.jpg`), not an image file, so the image comes from `instances.json` by `image_id`.

One item per sentence, not per ref: each sentence is its own question about the same box, and the benchmarks
score per sentence. The question holds `raw` (the sentence as typed); `sent` is a lower-cased, tokenised copy.
Evidence: the referred annotation's box (xywh -> xyxy pixels); distractors: the image's other instances, no crowd.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from data_builders.adapters.coco import Instances, load_instances, locate, xyxy
from data_builders.config import BuildConfig
from data_builders.records import FileImage, Item, Reject
from mmrl.errors import UserError

SPLIT_BY = {"refcoco": "unc", "refcoco+": "unc", "refcocog": "umd"}  # the split each dataset is usually run on
TEMPLATE = 'Which object does "{expression}" refer to? Answer with its category.'
_REQUIRED = ("ref_id", "ann_id", "sentences")


class _DataOnly(pickle.Unpickler):
    """The refs pickles hold only dicts, lists, strings and numbers: refuse any class, so loading a file can never
    run code (plain pickle.load would import and call whatever the file names)."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refuses {module}.{name}: a refs file holds only plain data")


def _text(value: Any) -> Any:
    """Python 2 `str` fields load (with encoding="latin1") one character per byte: put UTF-8 bytes back together;
    text that is not UTF-8 stays as latin-1 read it."""
    if isinstance(value, str) and not value.isascii():
        try:
            return value.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            return value
    if isinstance(value, bytes):
        return _text(value.decode("latin-1"))
    return value


def load_refs(path: Path) -> list[Any]:
    try:
        with open(path, "rb") as handle:
            refs = _DataOnly(handle, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise UserError(f"cannot read {path} as a refs pickle: {err}") from None
    if not isinstance(refs, list):
        raise UserError(f"{path}: expected a list of refs, got {type(refs).__name__}")
    return refs


def _refs_file(folder: Path, split_by: str) -> Path:
    found = {p.name[len("refs(") : -len(").p")]: p for p in sorted(folder.glob("refs(*).p"))}
    if split_by:
        if split_by not in found:
            names = ", ".join(sorted(found)) or "none"
            raise UserError(f"{folder}: no refs({split_by}).p (split_by found: {names})")
        return found[split_by]
    if not found:
        raise UserError(
            f"{folder}: no refs(<split_by>).p here (the release unpacks as refcoco/refs(unc).p + instances.json)"
        )
    if len(found) == 1:
        return next(iter(found.values()))
    usual = SPLIT_BY.get(folder.name)
    if usual in found:
        return found[usual]
    names = ", ".join(sorted(found)) or "none"
    raise UserError(f"{folder}: expected one refs(<split_by>).p (found {names}); set source.split_by")


def _images_dir(folder: Path, images_dir: str) -> str:
    if images_dir:
        return images_dir
    # refer.py's layout first, then COCO's train2014 beside the dataset folder or inside it
    for candidate in (folder.parent / "images/mscoco/images/train2014", folder.parent / "train2014",
                      folder / "train2014"):  # fmt: skip
        if candidate.is_dir():
            return str(candidate)
    raise UserError(f"no COCO train2014 folder found beside {folder} (images/mscoco/images/train2014 or "
                    "train2014); set source.images_dir")  # fmt: skip


def in_split(ref_split: str, split: str) -> bool:
    """refer.py's getRefIds rule: testA/testB match any split holding that letter (testAB too), test any test*.

    >>> [in_split(s, "testA") for s in ("testA", "testB", "testAB")], in_split("test", "test"), in_split("val", "train")
    ([True, False, True], True, False)
    """
    if split in ("testA", "testB", "testC"):
        return ref_split.startswith("test") and split[-1] in ref_split[4:]
    if split == "test":
        return ref_split.startswith("test")
    return ref_split == split


def ref_items(refs: list[Any], coco: Instances, root: str, source: str, template: str, split: str = "",
              ) -> Iterator[Item | Reject]:  # fmt: skip
    """Items from refs; `split` (when given) keeps only refs of that split, as refer.py's getRefIds does."""
    for index, ref in enumerate(refs):
        rid = f"ref{ref.get('ref_id', index)}" if isinstance(ref, dict) else f"ref-{index}"
        if (
            not isinstance(ref, dict)
            or any(key not in ref for key in _REQUIRED)
            or not isinstance(ref["sentences"], list)
        ):
            yield Reject(rid, "bad_record", f"ref {index}: needs {', '.join(_REQUIRED)}")
            continue
        if split:
            if not isinstance(ref.get("split"), str):
                yield Reject(rid, "bad_record", f"ref {ref['ref_id']} has no split")
                continue
            if not in_split(_text(ref["split"]), split):
                continue
        ann = coco.annotations.get(ref["ann_id"])
        if ann is None or ann["image_id"] not in coco.images:
            yield Reject(rid, "bad_record", f"ref {ref['ref_id']} names an unknown annotation or image")
            continue
        category = coco.category(ref.get("category_id", ann["category_id"]))
        others = coco.others(ann)
        for k, sent in enumerate(ref["sentences"]):
            sentence = _text(sent.get("raw", sent.get("sent", "")) if isinstance(sent, dict) else sent)
            sentence = sentence.strip() if isinstance(sentence, str) else ""
            meta = {"image_id": ann["image_id"], "ann_id": ann["id"], "expression": sentence}
            if isinstance(sent, dict) and "sent_id" in sent:
                meta["sent_id"] = sent["sent_id"]
            if split:
                meta["split"] = _text(ref["split"])
            yield Item(
                id=f"{rid}-{k}",
                source=source,
                image=FileImage(_text(coco.images[ann["image_id"]]["file_name"]), root),
                question=template.format(expression=sentence) if sentence else "",
                answer=category,
                boxes=[xyxy(ann.get("bbox"))],
                distractors=others,
                task="grounding",
                meta=meta,
                box_frame=coco.frame(ann["image_id"]),
            )


def read(cfg: BuildConfig) -> Iterator[Item | Reject]:
    src = cfg.source
    template = src.question_template or TEMPLATE
    if src.kind == "coco":  # coco_mode=refs: a `refs` list inside the instances JSON; no split filter
        path, root = locate(src)
        data = load_instances(path)
        yield from ref_items(data.get("refs", []), Instances.index(data), root, src.name or path.stem, template)
        return
    folder = Path(src.path)
    if not folder.is_dir():
        raise UserError(f"source.path must be the dataset folder holding refs(<split_by>).p: {folder}")
    refs_path = _refs_file(folder, src.split_by)
    coco = Instances.index(load_instances(folder / "instances.json"))
    source = src.name or f"{folder.name}_{refs_path.name[5:-3]}"
    yield from ref_items(load_refs(refs_path), coco, _images_dir(folder, src.images_dir), source, template, src.split)
