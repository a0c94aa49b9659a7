"""The manifest reader, the resumable sample stream, the metrics file and the samples page."""

import json

import pytest

from mmrl.data.manifest import SampleStream, read_manifest
from mmrl.errors import UserError
from mmrl.io.logger import MetricsLogger, SampleRow, mean_std, write_samples_page


def test_read_manifest_counts_bad_lines_and_never_substitutes(tmp_path):
    good = {"id": "a", "variant": "positive", "image": "a.png", "image_size": [8, 8], "question": "?", "answer": "x"}
    lines = [
        json.dumps(good),
        "{not json",
        json.dumps({**good, "variant": "upside_down"}),
        json.dumps({**good, "id": "b", "image": "../outside.png"}),
        json.dumps(good),  # duplicate id
        "",
        json.dumps({**good, "id": "c"}),
    ]
    (tmp_path / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    manifest = read_manifest(tmp_path / "manifest.jsonl")
    assert [s.id for s in manifest.samples] == ["a", "c"]
    assert [line for line, _ in manifest.rejects] == [2, 3, 4, 5]
    assert "unknown variant" in manifest.rejects[1][1] and "duplicate" in manifest.rejects[3][1]
    assert manifest.root == tmp_path


def test_read_manifest_errors_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="manifest not found"):
        read_manifest(tmp_path / "missing.jsonl")
    (tmp_path / "m.jsonl").write_text("{}\n")
    with pytest.raises(UserError, match="no usable sample.*line 1"):
        read_manifest(tmp_path / "m.jsonl")


def test_stream_epochs_shards_and_resume():
    stream = SampleStream(5, seed=3, shuffle=True)
    first_epoch = stream.next_batch(5)
    assert sorted(first_epoch) == [0, 1, 2, 3, 4] and first_epoch != [0, 1, 2, 3, 4]
    assert sorted(stream.next_batch(5)) == [0, 1, 2, 3, 4] and stream.position == 10
    # resume mid-epoch: a fresh stream loaded with the state continues identically
    stream.next_batch(2)
    state = stream.state_dict()
    expected = [stream.next_batch(3) for _ in range(3)]
    fresh = SampleStream(5, seed=3, shuffle=True)
    fresh.load_state_dict(state)
    assert [fresh.next_batch(3) for _ in range(3)] == expected
    # two processes take disjoint halves whose union is what one process takes
    one = SampleStream(8, seed=1)
    ranks = [SampleStream(8, seed=1, process_index=r, num_processes=2) for r in range(2)]
    for _ in range(3):
        whole = one.next_batch(4)
        halves = [r.next_batch(4) for r in ranks]
        assert halves[0] + halves[1] == whole and not set(halves[0]) & set(halves[1])
    with pytest.raises(ValueError, match="does not split"):
        ranks[0].next_batch(3)


def test_metrics_file_drops_steps_past_a_resume(tmp_path):
    logger = MetricsLogger(tmp_path, tensorboard=True)
    for step in (1, 2, 3):
        logger.log(step, {"reward": step / 2, "kl": float("nan")})
    logger.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[0] == {"step": 1, "reward": 0.5, "kl": None}  # NaN is written as null: the file stays strict JSON
    assert any((tmp_path / "tensorboard").iterdir())
    resumed = MetricsLogger(tmp_path, tensorboard=False, resume_step=2)
    resumed.log(3, {"reward": 9.0})
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    # other processes write nothing
    MetricsLogger(tmp_path / "rank1", is_main_process=False).log(1, {"reward": 1.0})
    assert not (tmp_path / "rank1").exists()


def test_samples_page_shows_image_completion_and_terms(tmp_path):
    from PIL import Image

    row = SampleRow("s1", "counterfactual", "What <color>?", "unknown", "<answer>red</answer>", -0.6,
                    {"answer": -0.6, "grounding": None}, -1.2, Image.new("RGB", (84, 84), "red"))  # fmt: skip
    page = write_samples_page(tmp_path, 7, [row]).read_text()
    assert (tmp_path / "samples" / "step_000007.html").is_file()
    assert "data:image/png;base64," in page and "counterfactual" in page
    assert "What &lt;color&gt;?" in page and "&lt;answer&gt;red&lt;/answer&gt;" in page  # escaped, not markup
    assert "-0.600" in page and "-1.200" in page


def test_mean_std_ignores_missing_terms():
    import math

    assert all(math.isnan(v) for v in mean_std([None, None]))  # no value: NaN, written as null
    assert mean_std([2.0, None, 4.0]) == (3.0, 1.0)
