"""The type of a file comes from its bytes, and every supported image format decodes the same way."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scanner.errors import PermanentError
from scanner.media import decode_image, sniff_kind
from tests import media_factory as mf


@pytest.mark.parametrize("fmt", mf.IMAGE_FORMATS)
def test_every_supported_format_sniffs_as_image_and_decodes_to_rgb(tmp_path: Path, fmt: str) -> None:
    data = mf.write_image(tmp_path / f"a.{fmt}", size=(96, 72), seed=1).read_bytes()

    assert sniff_kind(data[:512]) == "image"
    rgb = decode_image(data)
    assert rgb.shape == (72, 96, 3)
    assert rgb.dtype == np.uint8
    original = mf.pattern_rgb((96, 72), seed=1).astype(np.int16)
    tolerance = {"png": 0, "bmp": 0, "tiff": 0}.get(fmt, 40)  # lossless formats round-trip exactly
    assert np.abs(rgb.astype(np.int16) - original).mean() <= tolerance


def test_the_name_does_not_decide_the_type(tmp_path: Path) -> None:
    png_named_jpg = mf.write_image(tmp_path / "really-a-png.jpg", fmt="png").read_bytes()
    video = mf.write_video(tmp_path / "clip.jpg", seconds=0.5).read_bytes()

    assert sniff_kind(png_named_jpg[:512]) == "image"
    assert sniff_kind(video[:512]) == "video"


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"\x1a\x45\xdf\xa3" + b"\x00" * 28, "video"),  # WebM / Matroska
        (b"RIFF\x00\x00\x00\x00AVI LIST" + b"\x00" * 16, "video"),
        (b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00" + b"\x00" * 12, "video"),  # QuickTime .mov
        (b"\x00\x00\x00\x08wide\x00\x00\x00\x00mdat" + b"\x00" * 16, "video"),  # QuickTime without 'ftyp'
        (b"\x00\x00\x00\x1cftypheic\x00\x00\x00\x00" + b"\x00" * 12, "image"),  # HEIF still, not a video
        (mf.HTML_BYTES, "unknown"),
        (b"just some text that happens to be long enough", "unknown"),
        (b"", "unknown"),
    ],
)
def test_sniff_kind_recognises_containers_by_signature(head: bytes, kind: str) -> None:
    assert sniff_kind(head) == kind


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    data = mf.write_exif_rotated_jpeg(tmp_path / "phone.jpg", size=(80, 40), orientation=6).read_bytes()

    rgb = decode_image(data)

    assert rgb.shape == (80, 40, 3)  # stored 80 wide x 40 high, shown rotated: 40 wide x 80 high
    assert tuple(rgb[5, 20]) > (200, 0, 0)
    assert rgb[5, 20, 2] < 60
    assert rgb[75, 20, 2] > 200
    assert rgb[75, 20, 0] < 60


def test_an_animated_gif_gives_its_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (20, 10), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)

    rgb = decode_image(path.read_bytes())

    assert rgb.shape == (10, 20, 3)
    assert rgb[5, 10, 0] > 200
    assert rgb[5, 10, 1] < 50


@pytest.mark.parametrize(
    ("write", "reason"),
    [
        (mf.write_zero_byte, "empty file (0 bytes)"),
        (mf.write_truncated_jpeg, "corrupt image: "),
        (mf.write_text_as_jpeg, "not an image or video"),
        (mf.write_html, "not an image or video"),
    ],
)
def test_bad_images_fail_with_a_one_line_reason(tmp_path: Path, write, reason: str) -> None:
    data = write(tmp_path / "bad.jpg").read_bytes()

    with pytest.raises(PermanentError) as caught:
        decode_image(data)

    assert str(caught.value).startswith(reason)
    assert "\n" not in str(caught.value)


def test_images_over_the_pixel_cap_are_refused_before_decoding(tmp_path: Path) -> None:
    data = mf.write_image(tmp_path / "big.png", size=(400, 300)).read_bytes()

    with pytest.raises(PermanentError, match=r"image is 400x300, over the 100,000-pixel limit"):
        decode_image(data, max_pixels=100_000)
    assert decode_image(data, max_pixels=120_000).shape == (300, 400, 3)


@pytest.mark.parametrize("mode", ["RGB", "L", "P", "RGBA", "I;16"])
def test_images_copied_band_by_band_match_a_whole_image_conversion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    monkeypatch.setattr("scanner.media.DEFAULT_COPY_BAND_BYTES", 97 * 3 * 7)  # bands of 7 rows, the last one short
    source = Image.fromarray(mf.pattern_rgb((97, 60), seed=5))
    if mode == "I;16":
        image = Image.fromarray(np.asarray(source.convert("L"), np.uint16) * 257)
    else:
        image = source.convert(mode)
    path = tmp_path / ("a.tiff" if mode == "I;16" else "a.png")
    image.save(path)

    rgb = decode_image(path.read_bytes())

    with Image.open(path) as reference:
        np.testing.assert_array_equal(rgb, np.asarray(reference.convert("RGB")))
    assert rgb.flags.writeable


def test_a_decompression_bomb_png_just_under_the_cap_decodes(tmp_path: Path) -> None:
    path = mf.write_flat_png(tmp_path / "bomb.png", (7999, 7999), colour=(10, 20, 30))  # ~200 KiB on disk

    rgb = decode_image(path.read_bytes())

    assert path.stat().st_size < 300_000
    assert rgb.shape == (7999, 7999, 3)
    assert (rgb[::997, ::997] == (10, 20, 30)).all()


def test_a_decompression_bomb_png_over_the_cap_is_refused_before_decoding(tmp_path: Path) -> None:
    path = mf.write_flat_png(tmp_path / "bomb.png", (8001, 8000))

    with pytest.raises(PermanentError, match=r"^image is 8001x8000, over the 64,000,000-pixel limit$"):
        decode_image(path.read_bytes())
