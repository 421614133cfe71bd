"""The GPU JPEG path gives the CPU path's scores, and sends to the CPU whatever it cannot decode.

`decode_batch` runs on any device torchvision decodes JPEGs on: on the CPU here, so the whole
path (header check, batched decode, EXIF orientation, the model's square, thumbnails, a corrupt
image failing alone) is tested on machines without a GPU; one test repeats the comparison with
nvJPEG where CUDA is present.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from scanner.detector import Preprocessing, square
from scanner.errors import PermanentError
from scanner.media import decode_image
from tests.media_factory import encode_image, pattern_rgb
from tests.training_helpers import write_tiny_checkpoint
from workers.gpudecode import EXIF_ORIENTATION_TAG, Decoded, EncodedJpeg, decode_batch, device_jpeg, orient
from workers.inference import ModelInput, Scored, Scorer

SIZES = [(96, 64), (64, 96), (200, 150), (33, 47)]  # (width, height)
SCORE_TOLERANCE = 1e-2


def jpeg(size: tuple[int, int], *, seed: int = 0, orientation: int | None = None, mode: str = "RGB") -> bytes:
    image = Image.fromarray(pattern_rgb(size, seed=seed)).convert(mode)
    exif = Image.Exif()
    if orientation is not None:
        exif[EXIF_ORIENTATION_TAG] = orientation
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92, exif=exif.tobytes())
    return buffer.getvalue()


@pytest.fixture(scope="module")
def scorer(tmp_path_factory: pytest.TempPathFactory) -> Scorer:
    checkpoint = tmp_path_factory.mktemp("gpudecode") / "tiny.safetensors"
    write_tiny_checkpoint(checkpoint)
    return Scorer(checkpoint, device="cpu", batch_size=8)


def cpu_scores(scorer: Scorer, datas: list[bytes]) -> list[float]:
    """The CPU path's scores: decode_image, Scorer.prepare (resize_uint8), one batch."""
    return [float(s) for s in scorer.score([scorer.prepare(decode_image(d)) for d in datas])]


def encoded(data: bytes) -> EncodedJpeg:
    """The unit a worker's fetch thread makes of a JPEG for the device decoder (EXIF orientation read)."""
    header = device_jpeg(data)
    assert header is not None
    return header.encoded


def device_scores(scorer: Scorer, datas: list[bytes], device: torch.device) -> list[float]:
    """The device path's scores: decode_batch on `device`, then the same model on the CPU."""
    decoded = decode_batch([encoded(d) for d in datas], scorer.meta.preprocessing, device)
    squares = [d.square.cpu() for d in decoded if isinstance(d, Decoded)]
    assert len(squares) == len(datas)
    return [float(s) for s in scorer.score(squares)]


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (encode_image(pattern_rgb((64, 48)), "png"), "not a JPEG"),
        (jpeg((64, 48))[:-400], "truncated"),
        (jpeg((64, 48), mode="CMYK"), "CMYK"),
    ],
)
def test_jpegs_the_device_decoder_should_not_see_are_left_to_the_cpu(data: bytes, why: str) -> None:
    assert device_jpeg(data) is None, why


def test_a_jpeg_over_the_pixel_cap_is_left_to_the_cpu_which_refuses_it() -> None:
    data = jpeg((64, 48))
    assert device_jpeg(data, max_pixels=64 * 48 - 1) is None
    with pytest.raises(PermanentError, match="pixel limit"):
        decode_image(data, max_pixels=64 * 48 - 1)
    assert device_jpeg(data, max_pixels=64 * 48) is not None


def test_an_upright_jpeg_reports_its_size_and_a_quarter_turned_one_swaps_it() -> None:
    plain = device_jpeg(jpeg((80, 40)))
    turned = device_jpeg(jpeg((80, 40), orientation=6), preview_px=128)
    assert plain is not None
    assert turned is not None
    assert (plain.width, plain.height, plain.encoded.orientation) == (80, 40, 1)
    assert (turned.width, turned.height, turned.encoded.orientation) == (40, 80, 6)
    assert turned.encoded.preview_px == 128
    assert decode_image(turned.encoded.data).shape[:2] == (80, 40)  # the CPU path: 80 rows of 40


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_turns_pixels_as_pillow_exif_transpose_does(orientation: int) -> None:
    stored = Image.fromarray(np.random.default_rng(orientation).integers(0, 256, (5, 7, 3), dtype=np.uint8))
    stored.getexif()[EXIF_ORIENTATION_TAG] = orientation
    expected = np.asarray(ImageOps.exif_transpose(stored))
    tensor = torch.from_numpy(np.asarray(stored).copy()).permute(2, 0, 1)
    assert np.array_equal(orient(tensor, orientation).permute(1, 2, 0).numpy(), expected)


def test_device_decoding_on_the_cpu_scores_as_the_cpu_path_does(scorer: Scorer) -> None:
    datas = [jpeg(size, seed=i) for i, size in enumerate(SIZES)] + [jpeg((80, 40), seed=9, orientation=6)]
    expected = cpu_scores(scorer, datas)
    got = device_scores(scorer, datas, torch.device("cpu"))
    np.testing.assert_allclose(got, expected, atol=SCORE_TOLERANCE)


def test_a_corrupt_jpeg_fails_alone_with_the_cpu_decoders_reason(scorer: Scorer) -> None:
    good = [jpeg(size, seed=i) for i, size in enumerate(SIZES[:2])]
    corrupt = jpeg((120, 90), seed=5)[:300]  # a header and a few rows: both decoders refuse it
    inputs = [EncodedJpeg(good[0]), EncodedJpeg(corrupt), EncodedJpeg(good[1], preview_px=32)]

    decoded = decode_batch(inputs, scorer.meta.preprocessing, torch.device("cpu"))

    assert isinstance(decoded[1], PermanentError)
    assert "corrupt image" in str(decoded[1])
    assert isinstance(decoded[0], Decoded)
    assert isinstance(decoded[2], Decoded)
    assert decoded[0].preview is None
    assert decoded[2].preview is not None
    assert max(decoded[2].preview.shape[:2]) == 32
    size = scorer.meta.preprocessing.image_size
    assert decoded[0].square.shape == (3, size, size)
    assert decoded[0].square.dtype == torch.uint8


def test_a_batch_mixing_prepared_tensors_and_jpegs_scores_each_in_its_place(scorer: Scorer) -> None:
    datas = [jpeg(size, seed=i) for i, size in enumerate(SIZES)]
    expected = cpu_scores(scorer, datas)
    corrupt = EncodedJpeg(datas[3][:300])
    inputs: list[ModelInput] = [
        scorer.prepare(decode_image(datas[0])),
        EncodedJpeg(datas[1]),
        corrupt,
        EncodedJpeg(datas[2]),
    ]

    results = scorer.score_inputs(inputs)

    assert isinstance(results[2], PermanentError)
    scored = [r for r in results if isinstance(r, Scored)]
    np.testing.assert_allclose([s.score for s in scored], expected[:3], atol=SCORE_TOLERANCE)


def test_the_float_resize_used_off_the_cpu_is_within_one_level_of_the_cpu_resize() -> None:
    """Torch resizes uint8 on the CPU only; on CUDA the square is resized in float and rounded."""
    prep = Preprocessing(image_size=32)
    image = torch.from_numpy(pattern_rgb((200, 150), seed=3)).permute(2, 0, 1).contiguous()
    on_cpu = square(image, prep).int()
    in_float = square(image.float(), prep).round().clamp(0, 255).int()
    assert int((on_cpu - in_float).abs().max()) <= 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (nvJPEG)")
def test_nvjpeg_scores_as_the_cpu_path_does(tmp_path: Path) -> None:
    checkpoint = tmp_path / "tiny.safetensors"
    write_tiny_checkpoint(checkpoint)
    cpu = Scorer(checkpoint, device="cpu", batch_size=8)
    datas = [jpeg(size, seed=i) for i, size in enumerate(SIZES)] + [jpeg((80, 40), seed=9, orientation=6)]
    expected = cpu_scores(cpu, datas)
    got = device_scores(cpu, datas, torch.device("cuda"))
    np.testing.assert_allclose(got, expected, atol=SCORE_TOLERANCE)

    gpu = Scorer(checkpoint, device="cuda", batch_size=8)  # the worker's own path: nvJPEG, bf16, channels_last
    assert gpu.decodes_jpeg_on_device
    results = gpu.score_inputs([encoded(d) for d in datas])
    np.testing.assert_allclose([r.score for r in results if isinstance(r, Scored)], expected, atol=SCORE_TOLERANCE)
