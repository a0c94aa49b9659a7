"""Benchmark: build the three variants from annotation boxes for N 640x480 JPEGs, one process, against the floor.

    .venv/bin/python scripts/bench_build.py [--num 1000] [--format png|jpeg|both]

The floor decodes each JPEG and re-encodes it once, with the same encoder and parameters the build uses. The build
does more than that by nature: besides the positive (the source bytes copied), it encodes two new images per item
(counterfactual, random-masked), so the script also prints the "written-images floor" (decode + one encode per image
the build encodes).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_builders.build import build  # noqa: E402
from data_builders.config import BuildConfig  # noqa: E402
from data_builders.images import decode, encode  # noqa: E402
from mmrl.config.loader import load_config  # noqa: E402


def make_inputs(root: Path, num: int) -> Path:
    from skimage import data

    photos = [
        np.asarray(Image.fromarray(getattr(data, n)()).resize((800, 600))) for n in ("astronaut", "coffee", "chelsea")
    ]
    rng = np.random.default_rng(0)
    rows = []
    for i in range(num):
        x, y = (int(v) for v in rng.integers(0, 160, size=2))
        pixels = photos[i % 3][y : y + 480, x : x + 640]
        Image.fromarray(pixels).save(root / f"{i:05d}.jpg", quality=90)
        bx, by = int(rng.integers(0, 440)), int(rng.integers(0, 300))
        box = [bx, by, bx + int(rng.integers(40, 200)), by + int(rng.integers(40, 180))]
        rows.append(
            {"id": f"b{i:05d}", "image": f"{i:05d}.jpg", "question": "What is there?", "answer": "a", "boxes": [box]}
        )
    path = root / "bench.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def floor(root: Path, num: int, fmt: str, encodes: int) -> float:
    start = time.perf_counter()
    for i in range(num):
        pixels = decode((root / f"{i:05d}.jpg").read_bytes(), 50_000_000, "bench").pixels
        for _ in range(encodes):
            encode(pixels, fmt)
    return num / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=1000)
    parser.add_argument("--format", choices=["png", "jpeg", "both"], default="both")
    ns = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        jsonl = make_inputs(root, ns.num)
        for fmt in ["png", "jpeg"] if ns.format == "both" else [ns.format]:
            one = floor(root, ns.num, fmt, 1)
            two = floor(root, ns.num, fmt, 2)
            cfg = load_config(
                BuildConfig,
                None,
                [
                    f"source.path={jsonl}",
                    f"out={root / ('out-' + fmt)}",
                    "workers=0",
                    "progress=false",
                    f"image_format={fmt}",
                ],
            )
            start = time.perf_counter()
            summary = build(cfg)
            rate = ns.num / (time.perf_counter() - start)
            print(f"[{fmt}] {ns.num} JPEGs 640x480, variants {summary['variants']}, rejects {summary['rejects']}")
            print(f"[{fmt}]   build (1 process):                       {rate:7.1f} images/s")
            print(f"[{fmt}]   floor: decode + 1 re-encode:             {one:7.1f} images/s   ratio {one / rate:.2f}x")
            print(f"[{fmt}]   written-images floor: decode + 2 encodes: {two:7.1f} images/s   ratio {two / rate:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
