"""A reduced quickstart, end to end: build -> SFT warm start -> evaluate -> GRPO -> evaluate -> export -> load the
export with plain transformers in a fresh process; and the commands' answers to bad input.

What is checked is the machinery (rewards vary inside groups, gradients flow, the format survives GRPO, the held-out
reward does not fall, the export loads alone and gives the trained model's logits), never that a tiny model got
lucky.
"""

import json
import math
import subprocess
import sys
import textwrap

import pytest
import torch

from mmrl.boxes import FrameSpec
from mmrl.cli import main as cli
from mmrl.config.loader import load_config
from mmrl.config.schema import TrainConfig
from mmrl.data.manifest import read_manifest
from mmrl.eval.evaluate import evaluate_samples, read_model_config
from mmrl.io.export import export
from mmrl.rl.loop import train
from mmrl.rl.sft import SFTConfig, sft

COMMON = ["model.min_pixels=7056", "model.max_pixels=7056", "model.tiny_family=null", "data.template=think",
          "rewards.template=think", "rollout.max_completion_length=40", "training.vision_lr_scale=0.25",
          "logging.tensorboard=false"]  # fmt: skip


@pytest.fixture(scope="module")
def flow(tiny_model_dirs, build_synthetic, tmp_path_factory):
    root = tmp_path_factory.mktemp("flow")
    train_manifest = build_synthetic(root / "train", 12, seed=0)
    heldout = build_synthetic(root / "heldout", 6, seed=1)
    sft_config = load_config(SFTConfig, None, [*COMMON,
        f"model.name_or_path={tiny_model_dirs('qwen2_5_vl')}", f"data.train_manifest={train_manifest}",
        f"training.output_dir={root / 'sft'}", "training.max_steps=60", "training.batch_size=12",
        "training.micro_batch_size=12", "training.learning_rate=5e-3", "training.warmup_steps=4",
    ])  # fmt: skip
    warm = sft(sft_config, progress=False)
    frame = FrameSpec.for_family("qwen2_5_vl", 7056, 7056)
    manifest = read_manifest(heldout)
    _, before, _ = evaluate_samples(warm.model, warm.processor, frame, manifest, sft_config, progress=False)
    grpo_config = load_config(TrainConfig, None, [*COMMON,
        f"model.name_or_path={warm.checkpoint / 'model'}", f"data.train_manifest={train_manifest}",
        f"training.output_dir={root / 'grpo'}", "training.max_steps=3", "training.batch_size=4",
        "training.micro_batch_size=16", "rollout.num_generations=4", "training.learning_rate=1e-4",
        "logging.samples_steps=0",
    ])  # fmt: skip
    run = train(grpo_config)
    _, after, _ = evaluate_samples(run.unwrapped_model, run.processor, frame, manifest, grpo_config, progress=False)
    model_dir = export(run.run_dir, root / "model")
    metrics = [json.loads(line) for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    return {"root": root, "heldout": heldout, "before": before, "after": after, "metrics": metrics,
            "model_dir": model_dir, "run": run, "warm": warm}  # fmt: skip


def test_sft_warm_start_writes_the_template_and_checkpoints(flow):
    # a short SFT of a tiny model: the think-answer template appears (how often is the seed's luck, not checked)
    assert flow["before"]["variants"]["all"]["format_rate"] > 0.0, flow["before"]
    assert (flow["warm"].checkpoint / "model" / "model.safetensors").is_file()
    assert (flow["warm"].checkpoint / "trainer_state.json").is_file()


def test_rewards_vary_inside_groups_and_gradients_flow(flow):
    assert any(m["frac_zero_spread"] < 1.0 for m in flow["metrics"]), flow["metrics"]
    assert all(m["grad_norm"] > 0 and math.isfinite(m["grad_norm"]) for m in flow["metrics"])


def test_format_does_not_collapse_and_held_out_reward_does_not_fall(flow):
    before, after = flow["before"]["variants"]["all"], flow["after"]["variants"]["all"]
    assert after["format_rate"] >= before["format_rate"] - 0.1, (before, after)
    assert after["reward"] >= before["reward"] - 0.1, (before, after)
    formats = [m["reward/format"] for m in flow["metrics"]]
    assert formats[-1] >= formats[0] - 0.25, formats  # sampled completions keep the template during GRPO


def test_eval_reports_every_metric_per_variant(flow):
    for variant in ("positive", "counterfactual", "random_masked", "all"):
        metrics = flow["after"]["variants"][variant]
        for key in ("accuracy", "abstention_rate", "format_rate", "reward"):
            assert 0.0 <= metrics[key] <= 1.0 or key == "reward", (variant, key, metrics[key])
    positive = flow["after"]["variants"]["positive"]
    assert all(positive[k] is not None for k in ("mean_iou", "AP50", "AP75", "mAP"))
    assert flow["after"]["variants"]["counterfactual"]["AP50"] is None  # no evidence to ground on a counterfactual


PLAIN_LOAD = textwrap.dedent("""
    import sys, torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor
    model_dir, image, out = sys.argv[1:4]
    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    messages = [{"role": "user", "content": [{"type": "text", "text": "What color is the circle?"},
                                             {"type": "image"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=[Image.open(image).convert("RGB")], return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
        ids = model.generate(**inputs, max_new_tokens=40)[0, inputs["input_ids"].shape[1]:]
    torch.save({"logits": logits, "inputs": dict(inputs)}, out)
    assert not any(name == "mmrl" or name.startswith("mmrl.") for name in sys.modules), "mmrl was imported"
    print("ANSWER:", processor.decode(ids, skip_special_tokens=True))
""")


def test_export_loads_with_plain_transformers_and_gives_the_trained_logits(flow, tmp_path):
    model_dir = flow["model_dir"]
    image = next(flow["heldout"].parent.glob("images/*/*_positive.png"))
    out = tmp_path / "plain.pt"
    script = tmp_path / "plain_load.py"
    script.write_text(PLAIN_LOAD)
    done = subprocess.run([sys.executable, str(script), str(model_dir), str(image), str(out)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ANSWER:" in done.stdout
    saved = torch.load(out, weights_only=True)
    model = flow["run"].unwrapped_model.eval()
    with torch.no_grad():
        logits = model(**saved["inputs"]).logits
    assert torch.allclose(logits, saved["logits"], atol=1e-5), (logits - saved["logits"]).abs().max()
    for name in ("README.md", "generation_config.json", "chat_template.jinja", "model.safetensors"):
        assert (model_dir / name).is_file(), name
    card = (model_dir / "README.md").read_text()
    assert "## Training config" in card and "## Final metrics" in card
    size = json.loads((model_dir / "processor_config.json").read_text())["image_processor"]["size"]
    assert size == {"longest_edge": 7056, "shortest_edge": 7056}
    assert read_model_config(model_dir).data.template == "think"


def test_infer_prints_the_answer_and_boxes_in_pixels(flow, tmp_path, capsys):
    image = next(flow["heldout"].parent.glob("images/*/*_positive.png"))
    png = tmp_path / "boxes.png"
    args = ["infer", str(flow["model_dir"]), "--image", str(image), "--question", "What color is the circle?"]
    assert cli([*args, "--out", str(png), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[0])
    assert set(result) == {"answer", "boxes", "completion"}
    for box in result["boxes"]:  # pixels of the 84x84 image
        assert 0 <= box[0] < box[2] <= 84 and 0 <= box[1] < box[3] <= 84
    assert png.is_file()


def test_eval_command_skips_bad_lines_and_evaluates_the_rest(flow, tmp_path, capsys):
    lines = flow["heldout"].read_text().splitlines()[:6]
    bad = flow["heldout"].parent / "with_bad_lines.jsonl"  # beside the images it names
    bad.write_text("\n".join([lines[0], "{not json", json.dumps({"id": "x"}), *lines[1:]]) + "\n")
    assert cli(["eval", str(flow["model_dir"]), str(bad), "--out", str(tmp_path / "eval")]) == 0
    out = capsys.readouterr().out
    assert "2 bad manifest lines skipped" in out
    summary = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert summary["rejected_lines"] == 2 and summary["variants"]["all"]["n"] == 6
    assert (tmp_path / "eval" / "metrics.md").read_text().startswith("| variant |")


@pytest.mark.parametrize(
    "args, message",
    [
        (["infer", "MODEL", "--image", "MISSING", "--question", "q"], "image not found"),
        (["infer", "MODEL", "--image", "CORRUPT", "--question", "q"], "cannot read image"),
        (["export", "EMPTY_RUN", "--out", "OUT"], "holds no finished checkpoint"),
        (["export", "EMPTY_RUN", "--out", "NOT_EXPORT"], "is not an mmrl export: refusing to replace it"),
        (["eval", "MODEL", "ALL_BAD"], "holds no usable sample"),
    ],
)
def test_bad_input_is_one_line_and_a_nonzero_exit(flow, tmp_path, capsys, args, message):
    (tmp_path / "corrupt.png").write_bytes(b"not a png")
    (tmp_path / "empty_run").mkdir()
    (tmp_path / "all_bad.jsonl").write_text("{broken\n")
    (tmp_path / "not_export").mkdir()
    (tmp_path / "not_export" / "notes.txt").write_text("keep me")
    paths = {"MODEL": flow["model_dir"], "MISSING": tmp_path / "nope.png", "CORRUPT": tmp_path / "corrupt.png",
             "EMPTY_RUN": tmp_path / "empty_run", "OUT": tmp_path / "out", "NOT_EXPORT": tmp_path / "not_export",
             "ALL_BAD": tmp_path / "all_bad.jsonl"}  # fmt: skip
    assert cli([str(paths.get(a, a)) for a in args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err, err
    assert (tmp_path / "not_export" / "notes.txt").read_text() == "keep me"


def test_cli_exit_code_from_a_fresh_process(flow, tmp_path):
    done = subprocess.run([sys.executable, "-m", "mmrl.cli", "export", str(tmp_path), "--out", str(tmp_path / "x")],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
