"""An internal test split by actor, carved out of the DFDC faces' train/ folder.

The data set's manifest groups (which video shows which actor) are not given, so actors are
recovered from the faces: dlib's 128-d face-recognition embedding of every real face (the ResNet
that `face-recognition-models` ships), agglomerative clustering of those embeddings, and every fake
joined to the real face it was made from (the nearest real by embedding and by a thumbnail of the
scene: a swap keeps the target's scene, lighting and compression). Whole clusters go to the test
split, so an actor and all of that actor's swaps land on one side.

The embeddings and the split are cached outside the repository (the data's licence is research only,
nothing derived from it belongs in the repository); the split is a folder of symbolic links in
the 140k layout that `deepscan train` and `deepscan evaluate` read: `train/` (train/ minus the test
actors), `valid/` (the data set's own valid/, by actor already) and `test/`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from sklearn.cluster import AgglomerativeClustering

from scanner.faces.hog import landmark_model_path
from scanner.media import decode_image

log = logging.getLogger(__name__)

EMBEDDING_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
DEFAULT_CLUSTER_DISTANCE = 0.5  # average-linkage cut; dlib's "same person" threshold is 0.6
DEFAULT_TEST_FRACTION = 0.15  # of train/'s real faces, whole actors at a time
THUMB_PX = 16  # side of the scene thumbnail used to pair a fake with its real
SPLIT_VERSION = 1  # bump when the way splits are made changes, so cached ones are rebuilt


@dataclass(frozen=True)
class FaceFile:
    path: Path
    label: str  # "real" or "fake"


def list_faces(split_dir: Path) -> list[FaceFile]:
    return [FaceFile(p, label) for label in ("real", "fake") for p in sorted((split_dir / label).glob("*.jpg"))]


class Embedder:
    """dlib's face detector, 5-point landmarks and 128-d face-recognition ResNet."""

    def __init__(self) -> None:
        import dlib  # heavy optional library, needed only by this benchmark

        models = landmark_model_path().parent
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self._encoder = dlib.face_recognition_model_v1(str(models / EMBEDDING_MODEL))
        self._rectangle = dlib.rectangle

    def embed(self, rgb: np.ndarray) -> np.ndarray:
        """The embedding of the largest face; a face crop where no face is found is taken as one face."""
        found = sorted(self._detector(rgb, 0), key=lambda r: r.area(), reverse=True)
        height, width = rgb.shape[:2]
        rect = found[0] if found else self._rectangle(width // 8, height // 8, width * 7 // 8, height * 7 // 8)
        shape = self._predictor(rgb, rect)
        return np.asarray(self._encoder.compute_face_descriptor(rgb, shape), dtype=np.float32)


def thumbnail(rgb: np.ndarray) -> np.ndarray:
    """A tiny, contrast-normalised picture of the whole scene."""
    small = cv2.resize(rgb, (THUMB_PX, THUMB_PX), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    return (small - small.mean()) / (small.std() + 1e-6) / np.sqrt(small.size)


def features(files: list[FaceFile], cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and thumbnails of `files`, cached by the file list."""
    key = hashlib.sha256("\n".join(str(f.path) for f in files).encode()).hexdigest()[:16]
    stored = cache / f"faces-{key}.npz"
    if stored.is_file():
        with np.load(stored) as saved:
            return saved["embeddings"], saved["thumbs"]
    embedder = Embedder()
    embeddings, thumbs = [], []
    for n, face in enumerate(files):
        rgb = decode_image(face.path.read_bytes())
        embeddings.append(embedder.embed(rgb))
        thumbs.append(thumbnail(rgb))
        if n % 500 == 0:
            log.info("embedded %d of %d faces", n, len(files))
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(stored, embeddings=np.stack(embeddings), thumbs=np.stack(thumbs))
    return np.stack(embeddings), np.stack(thumbs)


def actor_groups(files: list[FaceFile], embeddings: np.ndarray, thumbs: np.ndarray) -> np.ndarray:
    """One actor group per file: reals clustered by embedding, each fake in the group of its real."""
    is_real = np.array([f.label == "real" for f in files])
    clusters = AgglomerativeClustering(
        n_clusters=None, distance_threshold=DEFAULT_CLUSTER_DISTANCE, linkage="average"
    ).fit_predict(embeddings[is_real])
    groups = np.empty(len(files), dtype=np.int64)
    groups[is_real] = clusters
    real_emb, real_thumb = embeddings[is_real], thumbs[is_real]
    for i in np.flatnonzero(~is_real):
        distance = np.linalg.norm(real_emb - embeddings[i], axis=1) + np.linalg.norm(real_thumb - thumbs[i], axis=1)
        groups[i] = clusters[int(np.argmin(distance))]
    return groups


def test_groups(files: list[FaceFile], groups: np.ndarray, *, fraction: float, seed: int) -> set[int]:
    """Whole groups, drawn in a seeded order, until they hold `fraction` of the real faces."""
    reals = np.array([f.label == "real" for f in files])
    wanted, taken, chosen = fraction * reals.sum(), 0, set()
    for group in np.random.default_rng(seed).permutation(np.unique(groups)):
        if taken >= wanted:
            break
        chosen.add(int(group))
        taken += int((reals & (groups == group)).sum())
    return chosen


def link_split(root: Path, name: str, files: list[FaceFile]) -> None:
    for face in files:
        link = root / name / face.label / face.path.name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(face.path.resolve())


def actor_split(
    data: Path, cache: Path, *, fraction: float = DEFAULT_TEST_FRACTION, seed: int = 0
) -> tuple[Path, dict[str, int]]:
    """The split folder (train/valid/test as symbolic links) and its counts; built once, then cached."""
    root = cache / f"dfdc-actor-split-v{SPLIT_VERSION}-f{fraction:g}-s{seed}"
    summary_path = root / "split.json"
    if summary_path.is_file():
        return root, json.loads(summary_path.read_text())
    files = list_faces(data / "train")
    embeddings, thumbs = features(files, cache)
    groups = actor_groups(files, embeddings, thumbs)
    held = test_groups(files, groups, fraction=fraction, seed=seed)
    test = [f for f, g in zip(files, groups, strict=True) if g in held]
    train = [f for f, g in zip(files, groups, strict=True) if g not in held]
    link_split(root, "train", train)
    link_split(root, "test", test)
    link_split(root, "valid", list_faces(data / "valid"))
    summary = {
        "actors": len(np.unique(groups)),
        "test_actors": len(held),
        **{f"{name}_{label}": sum(f.label == label for f in part) for name, part in (("train", train), ("test", test))
           for label in ("real", "fake")},
    }  # fmt: skip
    summary_path.write_text(json.dumps(summary, sort_keys=True))
    return root, summary
