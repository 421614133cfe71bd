"""Labelled samples from every supported layout, and the Dataset that decodes them."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pytest
import torch

from scanner.detector import Preprocessing, preprocess
from scanner.errors import ConfigError
from scanner.media import decode_image
from tests.training_helpers import tiny_rgb, write_140k_layout, write_jpeg
from training.augment import DEFAULT_AUGMENT
from training.datasets import (
    FAKE,
    REAL,
    ImageDataset,
    Sample,
    batches,
    class_counts,
    load_split,
    self_blend_samples,
)

PREP = Preprocessing(image_size=16)


def _labels(samples: list[Sample]) -> dict[Path, int]:
    return {s.path.resolve(): s.label for s in samples}


@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_folders_and_csv_manifests_give_identical_labels(tmp_path: Path, split: str) -> None:
    images = write_140k_layout(tmp_path)
    from_folders = _labels(load_split(tmp_path, split, labels="folders"))
    from_csv = _labels(load_split(tmp_path, split, labels="csv"))
    assert from_folders == from_csv
    assert len(from_folders) == 6
    for path, label in from_folders.items():
        assert label == (FAKE if path.parent.name == "fake" else REAL), path
    assert _labels(load_split(tmp_path, split)) == from_folders  # auto
    assert _labels(load_split(images, split)) == from_folders  # pointed at the inner folder
    assert _labels(load_split(images.parent, split)) == from_folders  # or at real_vs_fake/


def test_csv_manifest_alone_is_enough(tmp_path: Path) -> None:
    images = write_140k_layout(tmp_path)
    (images / "test").rename(tmp_path / "moved")  # keep the files, hide the split folder
    (tmp_path / "moved").rename(images / "elsewhere")
    (tmp_path / "test.csv").write_text((tmp_path / "test.csv").read_text().replace(",test/", ",elsewhere/"))
    samples = load_split(tmp_path, "test", labels="csv")
    assert class_counts(samples) == {"real": 3, "fake": 3}
    assert all(s.label == (FAKE if s.path.parent.name == "fake" else REAL) for s in samples)


def test_csv_label_and_label_str_must_agree(tmp_path: Path) -> None:
    write_140k_layout(tmp_path)
    manifest = tmp_path / "valid.csv"
    with manifest.open(newline="") as fh:
        rows = list(csv.reader(fh))
    rows[1][3] = "0"  # a real image whose numeric label now says fake
    with manifest.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    with pytest.raises(ConfigError, match=r"valid.csv line 2: .*label 1 = real"):
        load_split(tmp_path, "valid", labels="csv")


def test_csv_without_label_column_is_refused(tmp_path: Path) -> None:
    write_140k_layout(tmp_path)
    (tmp_path / "train.csv").write_text("path\ntrain/real/r000.jpg\n")
    with pytest.raises(ConfigError, match="lacks column"):
        load_split(tmp_path, "train", labels="csv")


def _plain_tree(root: Path, per_class: int = 20) -> None:
    for label in ("real", "fake"):
        for i in range(per_class):
            write_jpeg(root / label / f"{i:03d}.jpg", tiny_rgb(i, fake=label == "fake", size=16))


def test_plain_tree_gets_a_seeded_stratified_split(tmp_path: Path) -> None:
    _plain_tree(tmp_path)
    splits = {name: load_split(tmp_path, name, seed=7) for name in ("train", "valid", "test")}
    assert {name: class_counts(s) for name, s in splits.items()} == {
        "train": {"real": 16, "fake": 16},
        "valid": {"real": 2, "fake": 2},
        "test": {"real": 2, "fake": 2},
    }
    paths = [s.path for group in splits.values() for s in group]
    assert len(set(paths)) == 40, "splits are disjoint and cover every file"
    assert load_split(tmp_path, "test", seed=7) == splits["test"]
    assert load_split(tmp_path, "test", seed=8) != splits["test"]
    assert all(s.label == (FAKE if s.path.parent.name == "fake" else REAL) for g in splits.values() for s in g)


def test_nothing_usable_names_the_expected_layouts(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no train images under .*train/real and train/fake"):
        load_split(tmp_path, "train")


def test_self_blend_samples_use_each_real_image_twice_and_drop_fakes() -> None:
    samples = [Sample(Path("r1.jpg"), REAL), Sample(Path("f1.jpg"), FAKE), Sample(Path("r2.jpg"), REAL)]
    blended = self_blend_samples(samples)
    assert class_counts(blended) == {"real": 2, "fake": 2}
    assert {s.path for s in blended} == {Path("r1.jpg"), Path("r2.jpg")}
    assert all(s.blend == (s.label == FAKE) for s in blended)


def test_self_blend_mix_keeps_the_given_fakes_beside_the_blended_ones() -> None:
    samples = [Sample(Path("r1.jpg"), REAL), Sample(Path("f1.jpg"), FAKE), Sample(Path("r2.jpg"), REAL)]
    mixed = self_blend_samples(samples, keep_fakes=True)
    assert class_counts(mixed) == {"real": 2, "fake": 3}
    assert [s.path for s in mixed if s.label == FAKE and not s.blend] == [Path("f1.jpg")]
    assert {s.path for s in mixed if s.blend} == {Path("r1.jpg"), Path("r2.jpg")}


def test_unreadable_images_are_skipped_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = [Sample(write_jpeg(tmp_path / f"{i}.jpg", tiny_rgb(i)), i % 2) for i in range(3)]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really a jpeg")
    samples = [good[0], Sample(broken, FAKE), good[1], Sample(tmp_path / "gone.jpg", REAL), good[2]]
    with caplog.at_level(logging.WARNING):
        out = list(batches(ImageDataset(samples, PREP), batch_size=2, workers=0))
    assert sorted(i for b in out for i in b.skipped) == [1, 3]
    assert [int(i) for b in out for i in b.indices] == [0, 2, 4]
    assert torch.cat([b.images for b in out]).shape == (3, 3, 16, 16)
    assert "broken.jpg" in caplog.text


def test_augmented_items_depend_only_on_seed_epoch_and_index(tmp_path: Path) -> None:
    samples = [Sample(write_jpeg(tmp_path / f"{i}.jpg", tiny_rgb(i, size=48)), REAL) for i in range(2)]
    dataset = ImageDataset(samples, PREP, augmentation=DEFAULT_AUGMENT, seed=3)
    first = next(b.images for b in batches(dataset, batch_size=2, workers=0, epoch=1))
    again = [b.images for b in batches(dataset, batch_size=1, workers=0, epoch=1)]
    other_epoch = next(b.images for b in batches(dataset, batch_size=2, workers=0, epoch=2))
    assert torch.equal(first, torch.cat(again))
    assert not torch.equal(first, other_epoch)


def test_self_blended_items_differ_from_their_source(tmp_path: Path) -> None:
    path = write_jpeg(tmp_path / "face.jpg", tiny_rgb(5, size=64))
    dataset = ImageDataset([Sample(path, REAL), Sample(path, FAKE, blend=True)], Preprocessing(image_size=64))
    (batch,) = batches(dataset, batch_size=2, workers=0)
    assert batch.labels.tolist() == [REAL, FAKE]
    assert (batch.images[0] - batch.images[1]).abs().max() > 0.1


def test_training_windows_move_with_the_epoch_and_scoring_takes_the_centre(tmp_path: Path) -> None:
    prep = Preprocessing(image_size=16, crop="center")
    samples = [Sample(write_jpeg(tmp_path / f"{i}.jpg", tiny_rgb(i, size=64)), REAL) for i in range(2)]
    training = ImageDataset(samples, prep, random_window=True, seed=1)
    scoring = ImageDataset(samples, prep)

    def images(dataset: ImageDataset, epoch: int) -> torch.Tensor:
        return torch.cat([b.images for b in batches(dataset, batch_size=2, workers=0, epoch=epoch)])

    assert torch.equal(images(training, 1), images(training, 1))
    assert not torch.equal(images(training, 1), images(training, 2))
    assert torch.equal(images(scoring, 1), images(scoring, 2))
    centre = preprocess(decode_image(samples[0].path.read_bytes()), prep)
    assert torch.equal(images(scoring, 1)[0], centre)
