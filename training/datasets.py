"""Labelled image lists and the torch Dataset that decodes them.

Labels are always taken from what a folder or a column means, never from sort order:
deepscan's training label is 1 = fake (manipulated), 0 = real, matching `score = P(fake)`.
The 140k data set's CSV manifests use the opposite convention (label 1 = real), which is
exactly the polarity bug that makes a detector score at chance; `read_csv_manifest` maps it by
meaning and cross-checks `label` against `label_str`.

Three layouts are understood:
- the 140k layout `ROOT/{train,valid,test}/{real,fake}/*.jpg`, also when it sits under
  `ROOT/real_vs_fake/real-vs-fake/` as in the Kaggle download;
- its CSV manifests `ROOT/{train,valid,test}.csv` (columns original_path,id,label,label_str,path);
- a plain `ROOT/{real,fake}/` tree, split into train/valid/test by a seeded stratified split.
"""

from __future__ import annotations

import csv
import functools
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from scanner.detector import CENTER, Preprocessing, preprocess
from scanner.errors import ConfigError, PermanentError, check_choice
from scanner.faces import BBox, FaceView, detect
from scanner.faces.hog import HogDetector
from scanner.media import decode_image
from training.augment import AugmentConfig, augment
from training.config import SPLITS, LabelSource
from training.facecache import FaceCache
from training.selfblend import DEFAULT_FACE_REGION, Point, self_blend

log = logging.getLogger(__name__)

REAL, FAKE = 0, 1
LABEL_BY_FOLDER = {"real": REAL, "fake": FAKE}
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})
KAGGLE_IMAGE_ROOT = Path("real_vs_fake") / "real-vs-fake"
CSV_COLUMNS = ("original_path", "id", "label", "label_str", "path")
CSV_LABEL_MEANING = {"1": "real", "0": "fake"}  # the 140k manifests' own convention
DEFAULT_PLAIN_SPLIT = (("train", 0.8), ("valid", 0.1), ("test", 0.1))
LOADER_PREFETCH_BATCHES = 4  # batches each loader process keeps ready (torch's default is 2)
GROUP_ORDER_STREAM = 7  # seeds the order of grouped batches apart from the per-sample generators


@dataclass(frozen=True)
class Sample:
    """One image file and its training label (1 = fake). `blend` asks for a self-blended fake
    made on the fly from this (real) file."""

    path: Path
    label: int
    blend: bool = False


def image_root(root: Path) -> Path:
    """The folder holding the split folders: ROOT itself or the Kaggle download's inner folder."""
    if _has_split_folders(root):
        return root
    for nested in (root / KAGGLE_IMAGE_ROOT, root / KAGGLE_IMAGE_ROOT.name):
        if _has_split_folders(nested):
            return nested
    return root


def _has_split_folders(root: Path) -> bool:
    return any((root / split).is_dir() for split in SPLITS)


def _images_in(folder: Path) -> list[Path]:
    """Images under `folder`, sub-folders included (one per manipulation method, say; see
    `source_of`); hidden files and folders are skipped."""
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def source_of(path: Path) -> str:
    """The sub-folder an image sits in below its real/ or fake/ folder ("" directly in it):
    `test/fake/face2face/x.jpg` comes from source "face2face"."""
    parts = path.parts[:-1]
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] in LABEL_BY_FOLDER:
            return "/".join(parts[i + 1 :])
    return ""


def folder_samples(split_dir: Path) -> list[Sample]:
    """Samples of one split folder holding real/ and/or fake/."""
    return [Sample(p, label) for name, label in LABEL_BY_FOLDER.items() for p in _images_in(split_dir / name)]


def csv_label(row: dict[str, str], line: int, path: Path) -> int:
    """deepscan's label for one manifest row: 140k label 1 = real, 0 = fake, cross-checked with label_str."""
    meaning = CSV_LABEL_MEANING.get((row.get("label") or "").strip())
    stated = (row.get("label_str") or "").strip().lower() or meaning
    if meaning is None or stated != meaning:
        raise ConfigError(
            f"{path} line {line}: label {row.get('label')!r} / label_str {row.get('label_str')!r} disagree "
            "(the 140k manifests use label 1 = real, 0 = fake)"
        )
    return LABEL_BY_FOLDER[meaning]


def read_csv_manifest(csv_path: Path, images: Path) -> list[Sample]:
    """Samples listed by a 140k CSV manifest; `path` is relative to `images`."""
    with csv_path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in ("label", "path") if c not in (reader.fieldnames or [])]
        if missing:
            raise ConfigError(f"{csv_path} lacks column(s) {', '.join(missing)}: expected {','.join(CSV_COLUMNS)}")
        samples = [Sample(images / row["path"], csv_label(row, n, csv_path)) for n, row in enumerate(reader, 2)]
    if samples and not samples[0].path.is_file():
        raise ConfigError(f"{csv_path} names {samples[0].path}, which does not exist: point --data at the folder")
    return sorted(samples, key=lambda s: s.path)


def stratified_split(samples: Sequence[Sample], *, seed: int) -> dict[str, list[Sample]]:
    """Split per class with a seeded shuffle, so each split keeps the class balance."""
    out: dict[str, list[Sample]] = {name: [] for name, _ in DEFAULT_PLAIN_SPLIT}
    for label in (REAL, FAKE):
        group = sorted((s for s in samples if s.label == label), key=lambda s: s.path)
        order = np.random.default_rng([seed, label]).permutation(len(group))
        start = 0
        for index, (name, fraction) in enumerate(DEFAULT_PLAIN_SPLIT):
            end = len(group) if index == len(DEFAULT_PLAIN_SPLIT) - 1 else start + round(fraction * len(group))
            out[name].extend(group[i] for i in order[start:end])
            start = end
    return {name: sorted(group, key=lambda s: s.path) for name, group in out.items()}


def _csv_path(root: Path, split: str) -> Path | None:
    for folder in (root, image_root(root)):
        if (folder / f"{split}.csv").is_file():
            return folder / f"{split}.csv"
    return None


def load_split(root: Path, split: str, *, labels: LabelSource = "auto", seed: int = 0) -> list[Sample]:
    """The labelled samples of `split` under `root` (see the module docstring for layouts).

    `labels="auto"` uses split folders when they exist, else the CSV manifests, else a plain
    real/fake tree. Raises ConfigError when nothing usable is found.
    """
    check_choice(split, SPLITS, "split")
    images = image_root(root)
    csv_path = _csv_path(root, split)
    if labels == "csv" or (labels == "auto" and not _has_split_folders(images) and csv_path):
        if csv_path is None:
            raise ConfigError(f"no {split}.csv manifest in {root}")
        return read_csv_manifest(csv_path, images)
    if _has_split_folders(images):
        samples = folder_samples(images / split)
    elif (root / "real").is_dir() or (root / "fake").is_dir():
        samples = stratified_split(folder_samples(root), seed=seed)[split]
    else:
        samples = []
    if not samples:
        raise ConfigError(
            f"no {split} images under {root}: expected {split}/real and {split}/fake folders "
            f"(the 140k layout, also under {KAGGLE_IMAGE_ROOT}), {split}.csv manifests, or real/ and fake/"
        )
    return samples


def self_blend_samples(samples: Sequence[Sample], *, keep_fakes: bool = False) -> list[Sample]:
    """Each real image twice: as itself and as a self-blended fake; given fakes are left out unless
    `keep_fakes` (`--self-blend mix`: the real fakes and the self-blended ones together)."""
    reals = [s for s in samples if s.label == REAL]
    fakes = [s for s in samples if s.label == FAKE] if keep_fakes else []
    return [*reals, *fakes, *(Sample(s.path, FAKE, blend=True) for s in reals)]


@functools.cache
def _landmark_model() -> HogDetector:
    return HogDetector()  # one per process: loader workers each load their own


def crop_landmarks(crop: np.ndarray, view: FaceView) -> tuple[Point, ...]:
    """dlib's five landmarks of the face in a crop the face view made: the view centres the face box
    in its crop with `margin` around it; a whole image is taken to hold a centred face crop."""
    height, width = crop.shape[:2]
    if view.finds_faces:
        side = min(height, width) / (1 + 2 * view.margin)
        box = BBox(round((width - side) / 2), round((height - side) / 2), round(side), round(side))
    else:
        region = DEFAULT_FACE_REGION
        half_w, half_h = region.rx * width * 1.15, region.ry * height * 1.15
        box = BBox(
            round(region.cx * width - half_w), round(region.cy * height - half_h), round(2 * half_w), round(2 * half_h)
        )
    return _landmark_model().landmarks(crop, box)


def class_counts(samples: Sequence[Sample]) -> dict[str, int]:
    return {"real": sum(s.label == REAL for s in samples), "fake": sum(s.label == FAKE for s in samples)}


class Item(NamedTuple):
    images: torch.Tensor  # Kx3xSxS: one row per face the face view gave (1 when training)
    label: int
    position: int  # index into the dataset


class Batch(NamedTuple):
    """A collated batch; `skipped` holds dataset indices of images that could not be decoded.

    `images` has one row per face; `faces[i]` rows belong to item i (all 1 when training)."""

    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    skipped: list[int]
    faces: torch.Tensor


class ImageDataset(Dataset[Item | int]):
    """Decodes through `scanner.media` (the workers' decoder), cuts the faces through the
    checkpoint's face view (scanner/faces, the workers' code), optionally self-blends and augments
    the largest face, then applies the checkpoint's preprocessing. Random choices come from a
    generator seeded with (seed, epoch, index), so results do not depend on loader workers or order.

    `all_faces` keeps every face (evaluation and validation: an image scores as the maximum over its
    faces, as in a scan); otherwise only the largest is kept (training learns one face per label).
    `random_window` places a "center" crop at random (training) instead of in the centre (scoring).
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        prep: Preprocessing,
        *,
        view: FaceView | None = None,
        all_faces: bool = False,
        face_cache: FaceCache | None = None,
        augmentation: AugmentConfig | None = None,
        random_window: bool = False,
        blend_mask: str = "ellipse",
        seed: int = 0,
    ) -> None:
        self.samples = list(samples)
        self.blend_mask = blend_mask
        self.prep = prep
        self.view = view or FaceView.whole_image()
        self.all_faces = all_faces
        self.face_cache = face_cache
        self.augmentation = augmentation
        self.random_window = random_window and prep.crop == "center"
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Item | int:
        """The preprocessed item, or the bare index when the file cannot be decoded."""
        sample = self.samples[index]
        try:
            data = sample.path.read_bytes()
            rgb = decode_image(data, min_side_px=self.prep.decode_min_side_px)
        except (PermanentError, OSError) as exc:
            log.warning("skipping unreadable image %s: %s", sample.path, exc)
            return index
        crops = [face.rgb for face in self.view.faces(rgb, self._boxes(data, rgb))]
        if not self.all_faces:
            crops = crops[:1]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if sample.blend:
            crops = [self._blend(crop, rng) for crop in crops]
        if self.augmentation is not None:
            crops = [augment(crop, rng, self.augmentation) for crop in crops]
        window = (float(rng.random()), float(rng.random())) if self.random_window else CENTER
        return Item(torch.stack([preprocess(crop, self.prep, window=window) for crop in crops]), sample.label, index)

    def _blend(self, crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A self-blended fake of one crop, its mask the face hull (`blend_mask` "hull") or an ellipse."""
        landmarks = crop_landmarks(crop, self.view) if self.blend_mask == "hull" else None
        return self_blend(crop, rng, model_size=self.prep.image_size, landmarks=landmarks)

    def _boxes(self, data: bytes, rgb: np.ndarray) -> list[BBox] | None:
        """The face view's detections, from the cache when it has them (None: let the view detect)."""
        if self.face_cache is None or not self.view.finds_faces:
            return None
        boxes = self.face_cache.get(data)
        if boxes is None:
            boxes = detect(self.view, rgb)
            self.face_cache.put(data, boxes)
        return boxes


def collate(items: Sequence[Item | int]) -> Batch:
    """Stack decodable items; count the rest."""
    good = [item for item in items if isinstance(item, Item)]
    skipped = [item for item in items if isinstance(item, int)]
    if not good:
        empty = torch.empty(0)
        return Batch(empty, empty.long(), empty.long(), skipped, empty.long())
    return Batch(
        images=torch.cat([item.images for item in good]),
        labels=torch.tensor([item.label for item in good], dtype=torch.long),
        indices=torch.tensor([item.position for item in good], dtype=torch.long),
        skipped=skipped,
        faces=torch.tensor([len(item.images) for item in good], dtype=torch.long),
    )


def grouped_batches(
    groups: Sequence[Sequence[int]], *, batch_size: int, rng: np.random.Generator | None
) -> list[list[int]]:
    """Batches of sample indices: the groups in a random order (as given without `rng`), each
    group's members side by side (shuffled within the group), cut every `batch_size` indices."""
    order: list[int] = []
    for g in range(len(groups)) if rng is None else rng.permutation(len(groups)):
        group = list(groups[int(g)])
        order.extend(group if rng is None else [group[int(k)] for k in rng.permutation(len(group))])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def batches(
    dataset: ImageDataset,
    *,
    batch_size: int,
    workers: int,
    shuffle: bool = False,
    epoch: int = 0,
    pin_memory: bool = False,
    groups: Sequence[Sequence[int]] | None = None,
) -> Iterator[Batch]:
    """Batches of `dataset` for one epoch; shuffling is seeded by (dataset seed, epoch).

    With `workers` > 0, decoding and augmentation run in that many loader processes, each keeping
    `LOADER_PREFETCH_BATCHES` batches ready ahead of the step. `pin_memory` speeds up copies to a GPU.
    `groups` (training.pairs): sample indices that go into a batch side by side, in a seeded order
    per epoch (shuffled with `shuffle`), instead of a shuffle of single samples."""
    dataset.epoch = epoch
    prefetch = LOADER_PREFETCH_BATCHES if workers > 0 else None
    loader: DataLoader[Item | int]
    if groups is not None:
        rng = np.random.default_rng([dataset.seed, epoch, GROUP_ORDER_STREAM]) if shuffle else None
        order = grouped_batches(groups, batch_size=batch_size, rng=rng)
        loader = DataLoader(
            dataset,
            batch_sampler=order,
            num_workers=workers,
            collate_fn=collate,
            pin_memory=pin_memory,
            prefetch_factor=prefetch,
        )
    else:
        generator = torch.Generator().manual_seed(dataset.seed * 100_003 + epoch)
        loader = DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=workers,
            collate_fn=collate,
            generator=generator,
            drop_last=False,
            pin_memory=pin_memory,
            prefetch_factor=prefetch,
        )
    yield from loader
