"""An on-disk cache of face detections for training and evaluation, so epochs and re-runs detect once.

Keyed by the image file's content (sha256), the face detector's name and the scale the image was
decoded at: the boxes and landmarks depend on nothing else, while margin and alignment are
re-applied from them (cheap) on every use. A checkpoint that decodes JPEGs at reduced scale
(`Preprocessing.decode == "reduced"`) finds faces on the smaller image, in its pixels, so its
detections live apart from full-scale ones. One small JSON file per image under
DIR/<detector>[-min<N>]-v1/<sha[:2]>/<sha>.json, written atomically, so several data-loading
processes can share the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from scanner.faces import BBox

CACHE_VERSION = "1"


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/deepscan/faces (usually ~/.cache/deepscan/faces)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "deepscan" / "faces"


class FaceCache:
    def __init__(self, directory: Path, detector: str, decode_min_side_px: int | None = None) -> None:
        scale = "" if decode_min_side_px is None else f"-min{decode_min_side_px}"
        self.folder = directory / f"{detector}{scale}-v{CACHE_VERSION}"

    def _path(self, data: bytes) -> Path:
        digest = hashlib.sha256(data).hexdigest()
        return self.folder / digest[:2] / f"{digest}.json"

    def get(self, data: bytes) -> list[BBox] | None:
        try:
            rows = json.loads(self._path(data).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # not cached yet, or a torn file from a crash: detect again
        return [_box(row) for row in rows]

    def put(self, data: bytes, boxes: list[BBox]) -> None:
        path = self._path(data)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [{"x": b.x, "y": b.y, "w": b.w, "h": b.h, "landmarks": b.landmarks} for b in boxes]
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(rows, fh)
        os.replace(tmp, path)


def _box(row: dict[str, object]) -> BBox:
    marks = row.get("landmarks")
    landmarks = tuple((float(p[0]), float(p[1])) for p in marks) if isinstance(marks, list) else None
    return BBox(int(row["x"]), int(row["y"]), int(row["w"]), int(row["h"]), landmarks=landmarks)  # type: ignore[call-overload]
