"""One pixel cap for every command that opens an image: a clear rejection or a downscale, never Pillow's bomb."""

import struct
import zlib

import pytest
from PIL import Image

from mmrl.data.images import MAX_IMAGE_PIXELS, open_rgb
from mmrl.models.prompts import load_image
from mmrl.types import Sample, Variant


def _png_header_only(path, width, height):
    """A PNG whose header claims width x height; the pixel data is absent (a bomb's header is all that is read)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"") + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("side", [12_000, 20_000])  # 144 MP: Pillow warns; 400 MP: Pillow raises its bomb error
def test_a_huge_image_is_rejected_by_the_cap_not_pillows_bomb_error(tmp_path, side):
    path = _png_header_only(tmp_path / "huge.png", side, side)
    with pytest.raises(ValueError, match=f"over the {MAX_IMAGE_PIXELS}-pixel cap") as info:
        open_rgb(path)
    assert "\n" not in str(info.value)


def test_the_cap_is_the_builders_and_the_configs_default():
    from data_builders.config import BuildConfig
    from mmrl.config.schema import DataConfig

    assert BuildConfig().max_pixels == DataConfig().max_image_pixels == MAX_IMAGE_PIXELS == 50_000_000


def test_downscale_keeps_the_aspect_and_uses_a_reduced_jpeg_decode(tmp_path, monkeypatch):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (1600, 1200), (200, 30, 30)).save(path, quality=90)
    decoded = []
    real_load = Image.Image.load

    def recording_load(self):
        decoded.append(self.size)  # the size the decoder actually produces
        return real_load(self)

    monkeypatch.setattr(Image.Image, "load", recording_load)
    image = open_rgb(path, max_pixels=120_000, oversize="downscale")
    # sqrt(120000 / 1920000) = 0.25: 1600x1200 -> 400x300, exactly the cap
    assert image.size == (400, 300) and image.getpixel((10, 10))[0] > 190
    assert max(w * h for w, h in decoded) == 400 * 300  # JPEG decoded at 1/4 scale: never the whole 1.9 MP
    with pytest.raises(ValueError, match="1600x1200, over the 120000-pixel cap"):
        open_rgb(path, max_pixels=120_000)


def test_load_image_names_the_sample_and_follows_the_data_config(tmp_path):
    from mmrl.config.schema import DataConfig

    Image.new("RGB", (300, 200)).save(tmp_path / "a.png")
    sample = Sample(id="s1", group_id="g", variant=Variant.POSITIVE, image="a.png", image_size=(300, 200),
                    question="q", answer="a")  # fmt: skip
    with pytest.raises(ValueError, match=r"^sample s1: image .*a.png is 300x200, over the 1000-pixel cap"):
        load_image(sample, tmp_path, DataConfig(max_image_pixels=1000))
    small = load_image(sample, tmp_path, DataConfig(max_image_pixels=6000, oversize_images="downscale"))
    assert small.size == (94, 63)  # floor(300 * 0.3162), floor(200 * 0.3162)
    assert load_image(sample, tmp_path).size == (300, 200)
