"""Synthetic demo data: layout, manifest, determinism, and a fingerprint that survives the worker path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from scanner.detector import Preprocessing, preprocess
from scanner.errors import ConfigError
from scanner.media import read_image_file
from training.synthetic import MANIFEST_NAME, count_video_frames, render_image, write_demo_data

DEMO_MODEL_PREP = Preprocessing(image_size=64)  # what the demo checkpoint and its workers see
COUNT = 20


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("demo")
    manifest = write_demo_data(out, count=COUNT, seed=1)
    return out, json.loads(manifest.read_text())


def fingerprint_energy(rgb: np.ndarray) -> float:
    """Share of spectral energy at the generator's checkerboard frequency once resized to 64 px."""
    x = preprocess(rgb, DEMO_MODEL_PREP).mean(0).numpy()
    spectrum = np.abs(np.fft.fft2(x - x.mean()))
    return float((spectrum[16, 16] + spectrum[16, 48]) / spectrum.sum())


def test_demo_data_uses_the_140k_layout(demo: tuple[Path, dict[str, Any]]) -> None:
    out, manifest = demo
    expected = {"train": 14, "valid": 3, "test": 3}
    for split, n in expected.items():
        for label in ("real", "fake"):
            assert len(list((out / split / label).glob("*.jpg"))) == n
    assert manifest["splits"] == {split: {"real": n, "fake": n} for split, n in expected.items()}
    assert "not a claim about real deepfakes" in manifest["note"]


def test_videos_decode_and_name_their_manipulated_range(demo: tuple[Path, dict[str, Any]]) -> None:
    out, manifest = demo
    ranges = {Path(v["path"]).name: v["manipulated"] for v in manifest["videos"]}
    assert ranges["real_clip.mp4"] is None
    partly = ranges["partly_fake_clip.mp4"]
    assert (partly["start_frame"], partly["end_frame"]) == (24, 48)
    assert (partly["start_s"], partly["end_s"]) == (1.0, 2.0)
    for video in manifest["videos"]:
        assert count_video_frames(out / video["path"]) == video["frames"]
        assert (out / video["path"]).read_bytes()[4:8] == b"ftyp"


def test_same_seed_same_bytes(demo: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    out, _ = demo
    write_demo_data(tmp_path, count=COUNT, seed=1)
    for name in ("train/fake/fake_00003.jpg", "test/real/real_00001.jpg", MANIFEST_NAME):
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes()


def test_fingerprint_survives_jpeg_and_the_resize_to_64_px(demo: tuple[Path, dict[str, Any]]) -> None:
    out, _ = demo
    real = [fingerprint_energy(read_image_file(str(p))) for p in sorted((out / "train" / "real").glob("*.jpg"))]
    fake = [fingerprint_energy(read_image_file(str(p))) for p in sorted((out / "train" / "fake").glob("*.jpg"))]
    assert min(fake) > 2 * float(np.median(real))
    assert np.mean(fake) > 4 * np.mean(real)


def test_fingerprint_survives_the_video_codec(demo: tuple[Path, dict[str, Any]]) -> None:
    out, _ = demo
    capture = cv2.VideoCapture(str(out / "videos" / "partly_fake_clip.mp4"))
    energies = []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        energies.append(fingerprint_energy(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
    capture.release()
    clean, swapped = energies[:24] + energies[48:], energies[24:48]
    assert min(swapped) > max(clean)


def test_real_and_fake_images_look_alike_on_average() -> None:
    """The fake signal is the fingerprint, not brightness: the untrained-model baseline stays near chance."""
    means = {
        fake: np.mean([render_image(np.random.default_rng([2, i]), 128, fake=fake).mean() for i in range(40)])
        for fake in (False, True)
    }
    assert abs(means[True] - means[False]) < 10


def test_too_few_images_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least 20"):
        write_demo_data(tmp_path, count=5, seed=0)
