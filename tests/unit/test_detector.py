"""The shared model module: architecture, preprocessing, inference and pretrained weights."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from scanner import detector
from scanner.detector import (
    ARCHS,
    Preprocessing,
    build_model,
    imagenet_weights_path,
    prepare_for_inference,
    preprocess,
    preprocess_batch,
    resize_uint8,
    resolve_device,
    score_batch,
)
from scanner.errors import CheckpointError, ConfigError
from tests.training_helpers import tiny_model, tiny_rgb

OFFLINE_FAIL_WITHIN_S = 10.0


@pytest.mark.parametrize("arch", ARCHS)
def test_each_arch_has_a_single_logit_head(arch: str) -> None:
    model = build_model(arch).eval()
    with torch.inference_mode():
        logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 1)
    assert torch.isfinite(logits).all()


def test_unknown_arch_is_refused() -> None:
    with pytest.raises(ConfigError, match="resnet50, resnet34, resnet18"):
        build_model("vgg16")


def test_preprocess_resizes_to_the_input_size_deterministically() -> None:
    prep = Preprocessing(image_size=48)
    rgb = np.random.default_rng(0).integers(0, 256, (90, 70, 3), dtype=np.uint8)
    first, second = preprocess(rgb, prep), preprocess(rgb, prep)
    assert first.shape == (3, 48, 48)
    assert first.dtype == torch.float32
    assert torch.equal(first, second)


def test_preprocess_normalises_with_mean_and_std() -> None:
    prep = Preprocessing(image_size=16)
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 0] = 255
    x = preprocess(rgb, prep)
    expected = [(v - m) / s for v, m, s in zip((1.0, 0.0, 0.0), prep.mean, prep.std, strict=True)]
    assert torch.allclose(x.mean(dim=(1, 2)), torch.tensor(expected), atol=1e-6)


def test_preprocess_accepts_read_only_arrays_without_warning() -> None:
    rgb = tiny_rgb(0)
    rgb.setflags(write=False)  # what np.asarray(PIL image) returns
    assert preprocess(rgb, Preprocessing(image_size=16)).shape == (3, 16, 16)


@pytest.mark.parametrize(
    "bad", [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8), np.zeros((8, 8, 3), np.float32)]
)
def test_preprocess_refuses_anything_but_uint8_rgb(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        preprocess(bad, Preprocessing(image_size=16))


@pytest.mark.parametrize("shape", [(90, 70), (256, 256), (300, 1200), (20, 30)])
def test_preprocess_matches_a_float_resize_to_within_one_pixel_level(shape: tuple[int, int]) -> None:
    prep = Preprocessing(image_size=48)
    rgb = np.random.default_rng(1).integers(0, 256, (*shape, 3), dtype=np.uint8)
    x = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).float().div(255.0)
    resized = F.interpolate(x, size=(48, 48), mode="bilinear", antialias=True, align_corners=False)
    mean, std = torch.tensor(prep.mean).view(1, 3, 1, 1), torch.tensor(prep.std).view(1, 3, 1, 1)
    float_path = ((resized - mean) / std)[0]

    difference = (preprocess(rgb, prep) - float_path).abs() * torch.tensor(prep.std).view(3, 1, 1)

    assert difference.max() <= 1.0 / 255 + 1e-6  # the uint8 resize rounds to whole pixel levels, no more


def test_preprocess_resizes_before_converting_to_float(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[torch.dtype] = []
    original = F.interpolate

    def recording(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        seen.append(x.dtype)
        return original(x, *args, **kwargs)

    monkeypatch.setattr(F, "interpolate", recording)  # scanner.detector calls F.interpolate on this module
    preprocess(np.zeros((2000, 3000, 3), np.uint8), Preprocessing(image_size=32))

    assert seen == [torch.uint8]  # a 2000x3000 image never exists as float32 (72 MB; 768 MB at 64 MP)


def test_preprocess_batch_stacks_images_of_any_size() -> None:
    prep = Preprocessing(image_size=24)
    batch = preprocess_batch([tiny_rgb(1, size=40), tiny_rgb(2, size=64)], prep)
    assert batch.shape == (2, 3, 24, 24)
    assert preprocess_batch([], prep).shape == (0, 3, 24, 24)


def test_preprocessing_round_trips_through_metadata() -> None:
    prep = Preprocessing(image_size=96, mean=(0.5, 0.25, 0.125), std=(0.1, 0.2, 0.3))
    meta = prep.to_metadata()
    assert all(isinstance(v, str) for v in meta.values())
    assert Preprocessing.from_metadata(meta) == prep


def test_malformed_preprocessing_metadata_is_a_checkpoint_error() -> None:
    with pytest.raises(CheckpointError, match="preprocessing"):
        Preprocessing.from_metadata({"image_size": "224", "mean": "0.5,0.5", "std": "1,1,1"})


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("tpu", "cuda:x", "cpu:0"):
        with pytest.raises(ConfigError, match="invalid device"):
            resolve_device(bad)


def test_score_batch_is_sigmoid_of_the_logit_in_fp32_on_cpu() -> None:
    model = prepare_for_inference(tiny_model(), torch.device("cpu"))
    batch = preprocess_batch([tiny_rgb(i) for i in range(4)], Preprocessing(image_size=32))
    scores = score_batch(model, batch, torch.device("cpu"))
    with torch.inference_mode():
        expected = torch.sigmoid(model(batch).reshape(-1)).numpy()
    assert scores.dtype == np.float32
    assert scores.shape == (4,)
    assert ((scores >= 0) & (scores <= 1)).all()
    np.testing.assert_allclose(scores, expected, atol=1e-6)
    assert score_batch(model, batch[:0], torch.device("cpu")).shape == (0,)


def test_imagenet_weights_offline_fail_fast_naming_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for name in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # the discard port: refused at once
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    started = time.monotonic()
    with pytest.raises(CheckpointError) as caught:
        build_model("resnet18", pretrained="imagenet")
    message = str(caught.value)
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert time.monotonic() - started < OFFLINE_FAIL_WITHIN_S
    assert "\n" not in message
    assert f"put https://download.pytorch.org/models/resnet18-f37072fd.pth at {expected}" in message
    assert not any(expected.parent.iterdir()), "no partial download is left behind"


def test_imagenet_weights_come_from_the_torch_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None)
    path = imagenet_weights_path("resnet18")
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    model = build_model("resnet18", pretrained="imagenet")
    assert torch.equal(model.state_dict()["conv1.weight"], reference.state_dict()["conv1.weight"])
    assert model.state_dict()["fc.weight"].shape == (1, 512)


def test_pretrained_path_loads_the_backbone(tmp_path: Path) -> None:
    torch.manual_seed(2)
    reference = torchvision.models.resnet34(weights=None)
    path = tmp_path / "resnet34.pth"
    torch.save(reference.state_dict(), path)
    model = build_model("resnet34", pretrained=str(path))
    assert torch.equal(model.state_dict()["layer4.2.conv2.weight"], reference.state_dict()["layer4.2.conv2.weight"])


def test_pretrained_weights_of_another_arch_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(CheckpointError, match="does not fit resnet50"):
        build_model("resnet50", pretrained=str(path))


def test_pretrained_file_with_pickled_code_is_not_executed(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "payload": detector.Preprocessing()}, path)
    with pytest.raises(CheckpointError, match="cannot read weights file"):
        build_model("resnet18", pretrained=str(path))


def test_missing_pretrained_file_is_a_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        build_model("resnet18", pretrained=str(tmp_path / "nope.pth"))


def test_center_crop_keeps_native_pixels() -> None:
    prep = Preprocessing(image_size=32, crop="center")
    rgb = np.random.default_rng(1).integers(0, 256, (80, 100, 3), dtype=np.uint8)
    centre = resize_uint8(rgb, prep)
    assert torch.equal(centre, torch.from_numpy(rgb[24:56, 34:66]).permute(2, 0, 1))
    corner = resize_uint8(rgb, prep, window=(0.0, 1.0))
    assert torch.equal(corner, torch.from_numpy(rgb[:32, 68:]).permute(2, 0, 1))


def test_center_crop_enlarges_an_image_smaller_than_the_input_keeping_its_aspect() -> None:
    prep = Preprocessing(image_size=32, crop="center")
    rgb = np.zeros((16, 48, 3), np.uint8)
    rgb[:, :24] = 255  # left half white: the centre window straddles the edge
    out = resize_uint8(rgb, prep)
    assert out.shape == (3, 32, 32)
    assert out[:, :, :8].min() == 255
    assert out[:, :, -8:].max() == 0


def test_resize_ignores_the_window() -> None:
    prep = Preprocessing(image_size=24)
    rgb = tiny_rgb(3, size=64)
    assert torch.equal(resize_uint8(rgb, prep, window=(0.0, 0.0)), resize_uint8(rgb, prep))


def test_crop_mode_is_recorded_and_old_checkpoints_resize() -> None:
    prep = Preprocessing(image_size=64, crop="center")
    assert Preprocessing.from_metadata(prep.to_metadata()).crop == "center"
    old = {k: v for k, v in prep.to_metadata().items() if k != "crop"}
    assert Preprocessing.from_metadata(old).crop == "resize"
    with pytest.raises(CheckpointError, match="crop mode 'tiles'"):
        Preprocessing.from_metadata({**prep.to_metadata(), "crop": "tiles"})


def test_flip_tta_scores_the_mean_logit_of_each_square_and_its_mirror() -> None:
    model = prepare_for_inference(tiny_model(), torch.device("cpu"))
    batch = preprocess_batch([tiny_rgb(i) for i in range(3)], Preprocessing(image_size=32))
    scores = score_batch(model, batch, torch.device("cpu"), "fp32", "flip")
    with torch.inference_mode():
        expected = torch.sigmoid((model(batch).reshape(-1) + model(batch.flip(3)).reshape(-1)) / 2).numpy()
    np.testing.assert_allclose(scores, expected, atol=1e-6)
    assert not np.allclose(scores, score_batch(model, batch, torch.device("cpu")), atol=1e-6)
    mirrored = score_batch(model, batch.flip(3), torch.device("cpu"), "fp32", "flip")
    np.testing.assert_allclose(mirrored, scores, atol=1e-6)  # a mirror image scores as the original
    assert score_batch(model, batch[:0], torch.device("cpu"), "fp32", "flip").shape == (0,)
    with pytest.raises(ConfigError, match="test-time augmentation 'five-crop'"):
        score_batch(model, batch, torch.device("cpu"), "fp32", "five-crop")


def test_tta_is_recorded_and_old_checkpoints_score_one_view() -> None:
    prep = Preprocessing(image_size=64, tta="flip")
    assert Preprocessing.from_metadata(prep.to_metadata()).tta == "flip"
    old = {k: v for k, v in prep.to_metadata().items() if k != "tta"}
    assert Preprocessing.from_metadata(old).tta == "none"
    with pytest.raises(CheckpointError, match="test-time augmentation 'mirror'"):
        Preprocessing.from_metadata({**prep.to_metadata(), "tta": "mirror"})
