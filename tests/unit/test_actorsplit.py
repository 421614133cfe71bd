"""The DFDC benchmark's test split by actor: whole actors on one side, each fake with its real."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.actorsplit import EMBEDDING_DIMS, FaceFile, actor_groups, held_out_groups, link_split


def faces_of(actors: int, per_actor: int) -> tuple[list[FaceFile], np.ndarray, np.ndarray]:
    """`per_actor` real videos of each actor, each with one fake of the same scene; fakes embed as zeros."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(actors, EMBEDDING_DIMS))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    files, embeddings, thumbs = [], [], []
    for label in ("real", "fake"):
        for actor in range(actors):
            for video in range(per_actor):
                scene = np.random.default_rng([actor, video]).normal(size=48)
                files.append(FaceFile(Path(f"{label}/{actor}-{video}.jpg"), label))
                embeddings.append(centres[actor] + 0.02 * rng.normal(size=EMBEDDING_DIMS) if label == "real" else 0)
                thumbs.append(scene + (0.1 * rng.normal(size=48) if label == "fake" else 0))
    emb = np.stack([np.broadcast_to(e, EMBEDDING_DIMS) for e in embeddings]).astype(np.float32)
    return files, emb, np.stack(thumbs).astype(np.float32)


def actor_of(face: FaceFile) -> str:
    return face.path.stem.split("-")[0]


def test_each_actor_is_one_group_and_each_fake_joins_its_real() -> None:
    files, embeddings, thumbs = faces_of(actors=6, per_actor=4)
    groups = actor_groups(files, embeddings, thumbs)
    by_actor: dict[str, set[int]] = {}
    for face, group in zip(files, groups, strict=True):
        by_actor.setdefault(actor_of(face), set()).add(int(group))
    assert all(len(g) == 1 for g in by_actor.values()), "an actor's reals and fakes share one group"
    assert len({next(iter(g)) for g in by_actor.values()}) == 6, "actors are not merged"


def test_the_test_split_takes_whole_actors_up_to_the_fraction(tmp_path: Path) -> None:
    files, embeddings, thumbs = faces_of(actors=10, per_actor=3)
    groups = actor_groups(files, embeddings, thumbs)
    held = held_out_groups(files, groups, fraction=0.2, seed=0)
    test = [f for f, g in zip(files, groups, strict=True) if g in held]
    train = [f for f, g in zip(files, groups, strict=True) if g not in held]
    assert {actor_of(f) for f in test}.isdisjoint({actor_of(f) for f in train})
    assert sum(f.label == "real" for f in test) == 6, "two of ten actors: 20 % of the reals"
    assert sum(f.label == "fake" for f in test) == 6
    for face in test:
        (tmp_path / "src" / face.path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / face.path).write_bytes(b"x")
    link_split(tmp_path / "split", "test", [FaceFile(tmp_path / "src" / f.path, f.label) for f in test])
    assert len(list((tmp_path / "split" / "test" / "real").iterdir())) == 6
