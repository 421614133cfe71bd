"""Content: the items that share the same bytes (sha256), however and wherever they were scanned.

The queue shows each content once and says where it was seen; labels follow content (scanner/labels.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from scanner.models import MediaItem


@dataclass(frozen=True)
class Sightings:
    """Where one content (sha256) was seen: how many items, and the newest few (item id, job id, URL)."""

    count: int
    newest: list[tuple[int, int, str]]


def content_sightings(session: Session, item_ids: Sequence[int], *, shown: int = 3) -> dict[int, Sightings]:
    """For each of `item_ids` that has a content hash: how many items were scanned from the same
    content, and the newest `shown` of them."""
    content = content_of(session, item_ids)
    if not content:
        return {}
    rank = func.row_number().over(partition_by=MediaItem.content_sha256, order_by=MediaItem.id.desc())
    total = func.count().over(partition_by=MediaItem.content_sha256)
    columns = (MediaItem.content_sha256, MediaItem.id, MediaItem.job_id, MediaItem.url)
    ranked = (
        select(*columns, rank.label("rank"), total.label("total"))
        .where(MediaItem.content_sha256.in_(set(content.values())))
        .subquery()
    )
    by_sha: dict[str, Sightings] = {}
    rows = session.execute(
        select(ranked).where(ranked.c.rank <= shown).order_by(ranked.c.content_sha256, ranked.c.rank)
    )
    for sha, item_id, job_id, url, _, count in rows:
        by_sha.setdefault(sha, Sightings(count, [])).newest.append((item_id, job_id, url))
    return {item_id: by_sha[sha] for item_id, sha in content.items() if sha in by_sha}


def content_of(session: Session, item_ids: Sequence[int]) -> dict[int, str]:
    """The content hash of each of `item_ids` that has one."""
    if not item_ids:
        return {}
    query = select(MediaItem.id, MediaItem.content_sha256).where(
        MediaItem.id.in_(item_ids), MediaItem.content_sha256.is_not(None)
    )
    return {item_id: sha for item_id, sha in session.execute(query) if sha is not None}
