"""Human review: moderators' labels beside the model's verdicts, and exports that feed training.

`export_training_set` closes the loop from moderation back to training: it writes images into
`OUT/real/` and `OUT/fake/` (the folder layout `deepscan train` reads) with a manifest CSV
saying where each file came from and why it got its label.

A label belongs to the bytes that were scanned and reviewed, not to a URL: the exporter fetches
each item again, so it checks the bytes against the item's `content_sha256` and leaves out (and
counts) any item whose file changed since, rather than train on new content under an old label.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from scanner.errors import ConflictError, DeepscanError, InvalidInputError, NotFoundError
from scanner.media import decode_image
from scanner.mediaurl import InvalidMediaUrlError, MediaUrl
from scanner.models import OPEN_ITEM_STATUSES, REVIEW_LABELS, MediaItem, Review
from scanner.queries import ReviewView, latest_review_ids
from scanner.redaction import redact_url

TRAINING_LABELS = ("real", "fake")
MANIFEST_NAME = "manifest.csv"
MANIFEST_FIELDS = ("item_id", "file", "label", "label_source", "url", "score", "verdict", "review_label", "reviewer")
DEFAULT_EXPORT_BATCH = 500
# Why an item's fetched bytes could not be exported under its label.
CONTENT_CHANGED = "content changed since it was scanned"
NO_CONTENT_HASH = "no content hash recorded (scan it again)"

# Formats `deepscan train` reads (training.datasets.IMAGE_SUFFIXES), told apart by their magic
# bytes; anything else (GIF, TIFF, HEIF…) is decoded and written as PNG.
_TRAINABLE_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "jpg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"BM", "bmp"),
)

FetchBytes = Callable[[str], bytes]


class UnsupportedUrlError(DeepscanError):
    """The exporter cannot fetch this kind of URL."""


MAX_REVIEWER_CHARS = 200  # reviews.reviewer is VARCHAR(200)
MAX_NOTE_CHARS = 2000


@dataclass(frozen=True)
class ReviewInput:
    """A moderator's decision as given, checked on construction whichever front end builds it: a
    known label, a reviewer's name, a note of at most MAX_NOTE_CHARS (InvalidInputError otherwise).
    Names and notes are stored stripped; a blank note is none."""

    label: str
    reviewer: str
    note: str | None = None

    def __post_init__(self) -> None:
        if self.label not in REVIEW_LABELS:
            raise InvalidInputError(f"label must be one of {', '.join(REVIEW_LABELS)}")
        reviewer = self.reviewer.strip()
        if not reviewer or len(reviewer) > MAX_REVIEWER_CHARS:
            raise InvalidInputError(f"a review needs a reviewer name of 1 to {MAX_REVIEWER_CHARS} characters")
        note = (self.note or "").strip() or None
        if note is not None and len(note) > MAX_NOTE_CHARS:
            raise InvalidInputError(f"a review note holds at most {MAX_NOTE_CHARS} characters (this one {len(note)})")
        object.__setattr__(self, "reviewer", reviewer)
        object.__setattr__(self, "note", note)


def add_review(session: Session, item_id: int, given: ReviewInput) -> ReviewView:
    """Record a moderator's label for an item and its content: the newest review, not undone, of an
    item or of any item with the same bytes is its human label (scanner/labels.py)."""
    item = session.get(MediaItem, item_id)
    if item is None:
        raise NotFoundError(f"no item {item_id}: `deepscan results` lists item ids")
    if item.verdict is None:
        raise ConflictError(no_verdict_reason(item))
    review = Review(
        item_id=item_id,
        label=given.label,
        reviewer=given.reviewer,
        note=given.note,
        content_sha256=item.content_sha256,
    )
    session.add(review)
    session.flush()
    return ReviewView.of(review)


def no_verdict_reason(item: MediaItem) -> str:
    """Why an item without a verdict cannot be labelled: a label overrides a verdict in exports and
    stats, and there is nothing a moderator saw to judge (an errored item was never scored)."""
    if item.status == "error":
        why = f"it ended error ({item.error or 'no reason recorded'})"
        hint = "scan it again once the cause is fixed, then label it"
    else:
        why = f"it is {item.status}"
        hint = "label it once it has a verdict" if item.status in OPEN_ITEM_STATUSES else "scan it again"
    return f"item {item.id} has no verdict to review: {why}; {hint}"


def read_local_file(url: str) -> bytes:
    """The bytes behind a `file://` URL or an absolute local path.

    Other schemes raise UnsupportedUrlError; the CLI passes the workers' fetcher for those.
    """
    try:
        path = MediaUrl.parse(url).path
    except InvalidMediaUrlError as exc:
        raise UnsupportedUrlError(f"{redact_url(url)}: {exc}") from None
    if path is None:
        raise UnsupportedUrlError(
            f"{redact_url(url)}: only file:// URLs and local paths can be exported without the fetcher"
        )
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DeepscanError(f"{url}: {exc.strerror or exc}") from None


def trainable_format(head: bytes) -> str | None:
    """The file extension training reads for these bytes as they are, or None when they need converting."""
    for magic, ext in _TRAINABLE_MAGIC:
        if head.startswith(magic):
            return ext
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


def as_trainable_image(data: bytes) -> tuple[bytes, str]:
    """(bytes, extension) training can read: the original file, or a PNG of its first frame.

    Raises PermanentError when the bytes are not a decodable image.
    """
    ext = trainable_format(data[:16])
    if ext is not None:
        return data, ext
    pixels = decode_image(data)  # the decoder the workers and training share: same pixels, same limits
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue(), "png"


@dataclass(frozen=True)
class ExportEntry:
    """One item chosen for export and the label it gets (a human label wins over the verdict)."""

    item_id: int
    url: str
    kind: str
    label: str
    label_source: str
    content_sha256: str | None
    score: float | None
    verdict: str | None
    review_label: str | None
    reviewer: str | None


@dataclass
class ExportReport:
    """What an export wrote and what it left out, and why."""

    out: Path
    written: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TRAINING_LABELS, 0))
    skipped_unsure: int = 0
    skipped_not_image: int = 0
    unverified: list[tuple[int, str]] = field(default_factory=list)  # (item id, reason): bytes not the scanned ones
    failed: list[tuple[int, str]] = field(default_factory=list)

    @property
    def manifest(self) -> Path:
        return self.out / MANIFEST_NAME

    @property
    def unverified_by_reason(self) -> Counter[str]:
        """How many items were left out for each reason their bytes could not be verified."""
        return Counter(reason for _, reason in self.unverified)


def _export_query(*, reviewed_only: bool, job_id: int | None) -> Select[MediaItem, Review | None]:
    latest = latest_review_ids().subquery()
    query = (
        select(MediaItem, Review)
        .outerjoin(latest, latest.c.item_id == MediaItem.id)
        .outerjoin(Review, Review.id == latest.c.id)
        .order_by(MediaItem.content_sha256, MediaItem.id)  # copies of one content side by side: written once
    )
    if reviewed_only:
        query = query.where(latest.c.id.is_not(None))
    else:
        query = query.where((latest.c.id.is_not(None)) | (MediaItem.verdict.is_not(None)))
    if job_id is not None:
        query = query.where(MediaItem.job_id == job_id)
    return query


def export_candidates(session: Session, *, reviewed_only: bool, job_id: int | None = None) -> Iterator[ExportEntry]:
    """Items with a human label (and, unless `reviewed_only`, items with a verdict), labelled.

    `unsure` reviews come out with label `unsure` for the caller to skip: an unsure human still
    overrides the model, since someone looked and could not tell. Each content (sha256) comes out
    once, as its first-scanned item: copies and rescans would only weigh it twice in training.
    """
    query = _export_query(reviewed_only=reviewed_only, job_id=job_id)
    previous: str | None = None
    for item, review in session.execute(query.execution_options(yield_per=DEFAULT_EXPORT_BATCH)):
        if item.content_sha256 is not None and item.content_sha256 == previous:
            continue
        previous = item.content_sha256
        label, source = (review.label, "review") if review is not None else (item.verdict or "unsure", "model")
        yield ExportEntry(
            item_id=item.id,
            url=item.url,
            kind=item.kind,
            label=label,
            label_source=source,
            content_sha256=item.content_sha256,
            score=item.score,
            verdict=item.verdict,
            review_label=review.label if review is not None else None,
            reviewer=review.reviewer if review is not None else None,
        )


def export_training_set(
    session: Session,
    out: Path,
    *,
    reviewed_only: bool,
    fetch_bytes: FetchBytes,
    job_id: int | None = None,
) -> ExportReport:
    """Write labelled images to `out/{real,fake}/<item id>.<ext>` plus `out/manifest.csv`.

    Only images are exported (training reads still images); items whose bytes cannot be fetched are
    reported in `failed`, and items whose bytes are not the ones scanned (their sha256 differs from
    `content_sha256`, or none was recorded) in `unverified`; neither stops the export, and an earlier
    export's copy of such an item (or of one now labelled unsure) is removed, since training reads the
    folders. Re-running is safe: files are replaced atomically, and an item whose label changed moves.
    """
    report = ExportReport(out=out)
    for label in TRAINING_LABELS:
        (out / label).mkdir(parents=True, exist_ok=True)
    written: list[tuple[ExportEntry, str]] = []
    for entry in export_candidates(session, reviewed_only=reviewed_only, job_id=job_id):
        if entry.kind != "image":
            report.skipped_not_image += 1
        elif entry.label not in TRAINING_LABELS:
            report.skipped_unsure += 1
            _remove_exported(out, entry.item_id)  # relabelled unsure since an earlier export
        else:
            try:
                fetched = fetch_bytes(entry.url)
                if (reason := unverified_reason(entry, fetched)) is not None:
                    report.unverified.append((entry.item_id, reason))
                    _remove_exported(out, entry.item_id)  # an earlier export's copy is not in the set either
                    continue
                data, ext = as_trainable_image(fetched)
            except (DeepscanError, OSError) as exc:
                report.failed.append((entry.item_id, str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
                # Its source vanished or broke: an earlier export's copy can no longer be checked against
                # the content, and training reads the folders, not the manifest.
                _remove_exported(out, entry.item_id)
                continue
            written.append((entry, _write_image(out, entry, data, ext)))
            report.written[entry.label] += 1
    _write_manifest(report.manifest, written)
    return report


def unverified_reason(entry: ExportEntry, data: bytes) -> str | None:
    """Why `data` may not be exported under the entry's label (None when it is the content that was scanned)."""
    if entry.content_sha256 is None:
        return NO_CONTENT_HASH
    if hashlib.sha256(data).hexdigest() != entry.content_sha256.lower():
        return CONTENT_CHANGED
    return None


def _write_image(out: Path, entry: ExportEntry, data: bytes, ext: str) -> str:
    """Write the image atomically and remove any copy left under another label; return its relative path."""
    name = f"{entry.item_id}.{ext}"
    _remove_exported(out, entry.item_id, keep=out / entry.label / name)
    _atomic_write(out / entry.label / name, data)
    return f"{entry.label}/{name}"


def _remove_exported(out: Path, item_id: int, *, keep: Path | None = None) -> None:
    """Delete the item's files left in `out` by earlier exports, except `keep`."""
    for label in TRAINING_LABELS:
        for stale in (out / label).glob(f"{item_id}.*"):
            if stale != keep:
                stale.unlink()


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_manifest(path: Path, written: list[tuple[ExportEntry, str]]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".csv")
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(MANIFEST_FIELDS)
            for entry, file in written:
                writer.writerow(
                    [
                        entry.item_id,
                        file,
                        entry.label,
                        entry.label_source,
                        redact_url(entry.url),  # the manifest is shared with trainers: no fetch credentials
                        "" if entry.score is None else repr(entry.score),
                        entry.verdict or "",
                        entry.review_label or "",
                        entry.reviewer or "",
                    ]
                )
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
