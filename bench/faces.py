"""Face detectors compared: recall, false positives and time per image, Haar cascade vs dlib's HOG.

Real photographs from installed packages only (no downloads): matplotlib's portrait of Grace Hopper
as the face, in five variants (as shipped, small, tilted 15 degrees, mirrored, darkened), and
scikit-learn's two sample photos (a temple, a flower) as pictures without faces; plus the demo's
synthetic faces. Prints one JSON object with the CPU model. `python bench/faces.py` (under a minute).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.memory import cpu_model
from scanner.faces import BBox
from scanner.faces.haar import HaarDetector
from scanner.faces.hog import HogDetector
from training.synthetic import DEFAULT_DEMO_IMAGE_SIZE_PX, render_image

DEMO_FACES = 100


def package_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise SystemExit(f"{package} is not installed")
    return Path(spec.origin).parent.joinpath(*parts)


def photos() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(pictures with one face, pictures with none)."""
    face = np.asarray(Image.open(package_file("matplotlib", "mpl-data", "sample_data", "grace_hopper.jpg")))
    height, width = face.shape[:2]
    tilt = cv2.getRotationMatrix2D((width / 2, height / 2), 15, 1.0)
    with_face = {
        "portrait": face,
        "portrait_small": cv2.resize(face, (width // 2, height // 2), interpolation=cv2.INTER_AREA),
        "portrait_tilted_15deg": cv2.warpAffine(face, tilt, (width, height), borderMode=cv2.BORDER_REPLICATE),
        "portrait_mirrored": np.ascontiguousarray(face[:, ::-1]),
        "portrait_dark": (face * 0.4).astype(np.uint8),
    }
    images = package_file("sklearn", "datasets", "images")
    without = {name: np.asarray(Image.open(images / f"{name}.jpg").convert("RGB")) for name in ("china", "flower")}
    return with_face, without


def measure(detect: Callable[[np.ndarray], list[BBox]]) -> dict[str, object]:
    with_face, without = photos()
    demo = [
        render_image(np.random.default_rng(i), DEFAULT_DEMO_IMAGE_SIZE_PX, fake=i % 2 == 1) for i in range(DEMO_FACES)
    ]
    start = time.perf_counter()
    found = {name: len(detect(rgb)) for name, rgb in with_face.items()}
    false = {name: len(detect(rgb)) for name, rgb in without.items()}
    demo_found = sum(bool(detect(rgb)) for rgb in demo)
    ms = (time.perf_counter() - start) * 1000 / (len(with_face) + len(without) + len(demo))
    return {
        "photo_recall": f"{sum(n > 0 for n in found.values())}/{len(found)}",
        "photo_faces_found": found,
        "false_positives_on_photos_without_faces": sum(false.values()),
        "demo_faces_found": f"{demo_found}/{DEMO_FACES}",
        "ms_per_image": round(ms, 1),
    }


def main() -> None:
    figures: dict[str, object] = {"cpu": cpu_model(), "cores": os.cpu_count()}
    figures["haar"] = measure(HaarDetector().detect)
    figures["hog"] = measure(HogDetector().detect)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
