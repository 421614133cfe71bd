"""An internal test split by actor, carved out of the DFDC faces' train/ folder.

The data set's manifest groups (which video shows which actor) are not given, so actors are
recovered from the faces: dlib's 128-d face-recognition embedding of every real face (the ResNet
that `face-recognition-models` ships), agglomerative clustering of those embeddings, and every fake
joined to the real face it was made from: the real with the nearest thumbnail of the whole scene (a
swap keeps the target video's scene, lighting and compression, while its face, the thing an
embedding measures, is another actor's). Whole clusters go to the test
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
import multiprocessing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.cluster import AgglomerativeClustering

from scanner.faces.hog import landmark_model_path
from scanner.media import decode_image
from training.pairs import scene_thumbnail

log = logging.getLogger(__name__)

EMBEDDING_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
EMBEDDING_DIMS = 128
DEFAULT_CLUSTER_DISTANCE = 0.5  # average-linkage cut; dlib's "same person" threshold is 0.6
DEFAULT_TEST_FRACTION = 0.15  # of train/'s real faces, whole actors at a time
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
        vector: np.ndarray = np.asarray(self._encoder.compute_face_descriptor(rgb, shape), dtype=np.float32)
        return vector


_embedder: Embedder | None = None


def face_features(face: FaceFile) -> tuple[np.ndarray, np.ndarray]:
    """One file's embedding (zeros for a fake: a swap changes the identity an embedding measures) and
    thumbnail; one Embedder per process."""
    global _embedder
    rgb = decode_image(face.path.read_bytes())
    if face.label != "real":
        return np.zeros(EMBEDDING_DIMS, dtype=np.float32), scene_thumbnail(rgb)
    if _embedder is None:
        _embedder = Embedder()
    return _embedder.embed(rgb), scene_thumbnail(rgb)


def features(files: list[FaceFile], cache: Path, *, processes: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and thumbnails of `files` (in `processes` processes), cached by the file list."""
    key = hashlib.sha256("\n".join(str(f.path) for f in files).encode()).hexdigest()[:16]
    stored = cache / f"faces-{key}.npz"
    if stored.is_file():
        with np.load(stored) as saved:
            return saved["embeddings"], saved["thumbs"]
    log.info("embedding %d faces in %d processes (once; cached in %s)", len(files), processes, cache)
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        found = pool.map(face_features, files, chunksize=16)
    embeddings, thumbs = np.stack([e for e, _ in found]), np.stack([t for _, t in found])
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(stored, embeddings=embeddings, thumbs=thumbs)
    return embeddings, thumbs


def actor_groups(files: list[FaceFile], embeddings: np.ndarray, thumbs: np.ndarray) -> np.ndarray:
    """One actor group per file: reals clustered by embedding, each fake in the group of its real
    (the real whose scene thumbnail is nearest: a swap keeps the target video's scene and light)."""
    is_real = np.array([f.label == "real" for f in files])
    clusters = AgglomerativeClustering(
        n_clusters=None, distance_threshold=DEFAULT_CLUSTER_DISTANCE, linkage="average"
    ).fit_predict(embeddings[is_real])
    groups = np.empty(len(files), dtype=np.int64)
    groups[is_real] = clusters
    real_thumbs = thumbs[is_real]
    for i in np.flatnonzero(~is_real):
        groups[i] = clusters[int(np.argmin(np.linalg.norm(real_thumbs - thumbs[i], axis=1)))]
    return groups


def held_out_groups(files: list[FaceFile], groups: np.ndarray, *, fraction: float, seed: int) -> set[int]:
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
    data: Path, cache: Path, *, fraction: float = DEFAULT_TEST_FRACTION, seed: int = 0, processes: int = 1
) -> tuple[Path, dict[str, int]]:
    """The split folder (train/valid/test as symbolic links) and its counts; built once, then cached."""
    root = cache / f"dfdc-actor-split-v{SPLIT_VERSION}-f{fraction:g}-s{seed}"
    summary_path = root / "split.json"
    if summary_path.is_file():
        return root, json.loads(summary_path.read_text())
    files = list_faces(data / "train")
    embeddings, thumbs = features(files, cache, processes=processes)
    groups = actor_groups(files, embeddings, thumbs)
    held = held_out_groups(files, groups, fraction=fraction, seed=seed)
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
