"""A table of a user's mistakes, one per row: each command ends with exit code 2 and one line naming the problem,
no traceback, and nothing the user had is overwritten."""

import shutil
import zlib
from pathlib import Path

import pytest
from PIL import Image

from mmrl import testing
from mmrl.cli import main as cli

tiny_model_dirs = testing.small_tiny_model
ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def files(tiny_model_dirs, tmp_path_factory):
    """The paths the table's rows name, made once."""
    from transformers import AutoModelForImageTextToText

    from data_builders.build import build
    from data_builders.config import BuildConfig
    from mmrl.config.loader import load_config
    from mmrl.io import checkpoint

    root = tmp_path_factory.mktemp("bad_input")
    model = tiny_model_dirs("qwen2_5_vl")
    corrupt = root / "corrupt_model"
    shutil.copytree(model, corrupt)
    weights = corrupt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    overrides = ["source.kind=synthetic", "source.num_items=2", f"out={root / 'data'}", "workers=0", "progress=false"]
    build(load_config(BuildConfig, None, overrides))
    Image.new("RGB", (64, 48), (0, 0, 255)).save(root / "photo.png")
    (root / "empty.jsonl").write_text("")
    (root / "a_file").write_text("keep me")
    (root / "full").mkdir()
    (root / "full" / "notes.txt").write_text("keep me")
    run = root / "run"  # a training run folder whose only checkpoint is damaged
    checkpoint.save_checkpoint(run, 1, model=AutoModelForImageTextToText.from_pretrained(model))
    (run / "config.yaml").write_text("model: {}\n")
    (run / "checkpoint-000001" / "model" / "model.safetensors").write_bytes(b"\0" * 64)
    huge = root / "huge.png"
    Image.new("RGB", (1, 1)).save(huge)  # a 1x1 PNG, then its header patched to claim 12000 x 12000
    data = bytearray(huge.read_bytes())
    data[16:24] = (12000).to_bytes(4, "big") * 2
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    huge.write_bytes(bytes(data))
    return {"MODEL": model, "CORRUPT_MODEL": corrupt, "MANIFEST": root / "data" / "manifest.jsonl",
            "PHOTO": root / "photo.png", "HUGE": huge, "EMPTY_JSONL": root / "empty.jsonl", "FILE": root / "a_file",
            "FULL_DIR": root / "full", "RUN": run, "OUT": root / "out",
            "CFG": ROOT / "configs" / "debug_tiny.yaml"}  # fmt: skip


CASES = [
    # config
    (["config", "show", "CFG", "training.batch_size=0"], "error: training.batch_size and training.micro_batch_size"),
    (["config", "show", "CFG", "training.learning_rate=.nan"], "learning_rate must be a positive finite number"),
    (["train", "CFG", "training.seedd=1"], "unknown key 'training.seedd'"),
    # manifests and sources
    (["build", "--input", "EMPTY_JSONL", "--out", "OUT"], "holds no item"),
    # images
    (["infer", "MODEL", "--image", "HUGE", "--question", "q"], "is 12000x12000, over the 50000000-pixel cap"),
    # command-line arguments
    (["eval", "MODEL", "MANIFEST", "--limit", "0"], "--limit must be >= 1, got 0"),
    (["eval", "MODEL", "MANIFEST", "--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    (["eval", "CORRUPT_MODEL", "MANIFEST", "--out", "OUT"], "cannot load model"),
    (["infer", "CORRUPT_MODEL", "--image", "PHOTO", "--question", "q"], "cannot load model"),
    # paths
    (["eval", "MODEL", "MANIFEST", "--out", "FILE"], "is a file, not a folder"),
    (["infer", "MODEL", "--image", "PHOTO", "--question", "q", "--out", "PHOTO"], "is the input image"),
    (["tiny-model", "--family", "qwen2_vl", "--out", "FULL_DIR"], "exists and is not empty: refusing to replace it"),
    (["build", "--input", "MANIFEST", "--out", "RUN"], "holds files that are not a build"),
    (["build", "--input", "MANIFEST", "--out", "FILE"], "is a file, not a folder"),
    (["export", "RUN", "--out", "OUT"], "no intact checkpoint in"),
]


@pytest.mark.parametrize(("args", "message"), CASES, ids=[" ".join(a[:1] + a[-2:]) for a, _ in CASES])
def test_a_mistake_is_one_line_and_exit_2(files, capsys, args, message):
    before = {p: p.read_bytes() for p in (files["FILE"], files["FULL_DIR"] / "notes.txt", files["PHOTO"])}
    run_config = (files["RUN"] / "config.yaml").read_text()
    capsys.readouterr()
    assert cli([str(files.get(a, a)) for a in args]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mmrl")]
    assert len(err) == 1 and message in err[0] and "training.training" not in err[0], err
    assert all(p.read_bytes() == data for p, data in before.items())
    assert (files["RUN"] / "config.yaml").read_text() == run_config
