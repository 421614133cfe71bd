"""The workers' fast data path gives the very numbers training and evaluation compute.

Workers resize in uint8 on the decode threads and normalise once per batch; a checkpoint may ask
for JPEGs to be decoded at reduced scale. Either way `preprocess` (training's path) and the
worker's path must agree exactly, and reduced decoding happens only where the checkpoint says so.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scanner.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from scanner.detector import Preprocessing, build_model, normalize, preprocess, preprocess_batch, resize_uint8
from scanner.errors import CheckpointError
from scanner.media import decode_image
from training.datasets import ImageDataset, Item, Sample
from workers.inference import Scorer


def photo(width: int, height: int, *, fmt: str = "JPEG", seed: int = 0) -> bytes:
    """A smooth photo-like image (large JPEGs of pure noise are not what cameras make)."""
    small = np.random.default_rng(seed).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC).save(buffer, format=fmt)
    return buffer.getvalue()


def write_checkpoint(path: Path, prep: Preprocessing) -> Path:
    torch.manual_seed(0)
    save_checkpoint(
        path,
        build_model("resnet18"),
        CheckpointMeta(arch="resnet18", preprocessing=prep, threshold=0.5, target_fpr=0.01),
    )
    return path


def test_preprocess_is_the_uint8_resize_then_the_batch_normalisation() -> None:
    prep = Preprocessing(image_size=40)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (60 + 13 * i, 50 + 7 * i, 3), dtype=np.uint8) for i in range(4)]

    one_at_a_time = torch.stack([preprocess(rgb, prep) for rgb in images])
    halves = normalize(torch.stack([resize_uint8(rgb, prep) for rgb in images]), prep)

    assert resize_uint8(images[0], prep).dtype == torch.uint8
    assert torch.equal(one_at_a_time, halves)
    assert torch.equal(one_at_a_time, preprocess_batch(images, prep))


@pytest.mark.parametrize("decode", ["full", "reduced"])
def test_workers_score_exactly_what_evaluation_scores(decode: str, tmp_path: Path) -> None:
    checkpoint = write_checkpoint(tmp_path / "model.safetensors", Preprocessing(image_size=32, decode=decode))
    paths = []
    for i, (w, h) in enumerate([(1200, 900), (640, 480), (100, 80)]):
        paths.append(tmp_path / f"img_{i}.jpg")
        paths[-1].write_bytes(photo(w, h, seed=i))
    loaded = load_checkpoint(checkpoint)
    dataset = ImageDataset([Sample(p, 0) for p in paths], loaded.meta.preprocessing)
    items = [dataset[i] for i in range(len(paths))]
    evaluation = torch.stack([item.images[0] for item in items if isinstance(item, Item)])  # the whole image

    scorer = Scorer(checkpoint, device="cpu", batch_size=2, precision="fp32")  # as the fp32 forward below
    prepared = [scorer.prepare(decode_image(p.read_bytes(), min_side_px=scorer.decode_min_side_px)) for p in paths]

    assert torch.equal(normalize(torch.stack(prepared), loaded.meta.preprocessing), evaluation)
    expected = torch.sigmoid(loaded.model(evaluation).reshape(-1)).detach().numpy()
    np.testing.assert_allclose(scorer.score(prepared), expected, atol=1e-5)


def test_reduced_decoding_keeps_both_sides_at_least_the_size_asked_for() -> None:
    big = photo(1600, 1200)
    assert decode_image(big).shape == (1200, 1600, 3)
    assert decode_image(big, min_side_px=448).shape == (600, 800, 3)  # 1/2: 1/4 would leave 300 rows
    assert decode_image(big, min_side_px=128).shape == (150, 200, 3)  # 1/8, the smallest the decoder offers
    assert decode_image(photo(400, 300), min_side_px=448).shape == (300, 400, 3)  # too small to reduce
    assert decode_image(photo(1600, 1200, fmt="PNG"), min_side_px=128).shape == (1200, 1600, 3)  # JPEG only


def test_reduced_decoding_changes_the_model_input_only_slightly() -> None:
    prep = Preprocessing(image_size=64)
    big = photo(2000, 1500)
    full = resize_uint8(decode_image(big), prep).float()
    reduced = resize_uint8(decode_image(big, min_side_px=2 * prep.image_size), prep).float()
    assert (full - reduced).abs().mean() < 4.0  # pixel levels out of 255: small, but not nothing


def test_decode_mode_travels_with_the_checkpoint() -> None:
    prep = Preprocessing(image_size=224, decode="reduced")
    assert Preprocessing.from_metadata(prep.to_metadata()) == prep
    assert prep.decode_min_side_px == 448
    old = {k: v for k, v in prep.to_metadata().items() if k != "decode"}  # written before the field existed
    assert Preprocessing.from_metadata(old).decode == "full"
    assert Preprocessing.from_metadata(old).decode_min_side_px is None
    with pytest.raises(CheckpointError, match="decode mode"):
        Preprocessing.from_metadata({**prep.to_metadata(), "decode": "tiny"})
