"""Request and response bodies of the JSON API; responses reuse the core's dataclasses field for field."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from scanner.aggregation import DEFAULT_VIDEO_STRATEGY, validate_strategy
from scanner.jobs import DEFAULT_CHUNK_SIZE, DEFAULT_FPS, DEFAULT_MAX_FRAMES, ScanOptions
from scanner.models import REVIEW_LABELS
from scanner.queries import FramePoint, ItemDetail, JobSummary, ResultRow, ReviewView, StatsRow

Label = Literal["fake", "real", "unsure"]
assert set(REVIEW_LABELS) == {"fake", "real", "unsure"}


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str


class ItemsPage(BaseModel):
    items: list[ResultRow]
    next: str | None = Field(description="Pass as `after` for the next page; null on the last page.")


class ThumbnailOut(BaseModel):
    position: int = Field(description="0: the item's top-scoring face; 1..: one per flagged video segment.")
    url: str
    frame_index: int
    timestamp_s: float
    start_s: float | None
    end_s: float | None
    score: float
    width: int
    height: int


class ItemOut(BaseModel):
    item: ItemDetail
    timeline: list[FramePoint]
    flagged_ranges: list[tuple[float, float]]
    thumbnails: list[ThumbnailOut]


class ReviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: Label
    note: str | None = Field(None, max_length=2000)


class JobsOut(BaseModel):
    jobs: list[JobSummary]


class CancelOut(BaseModel):
    job_id: int
    status: str
    cancelled: int = Field(description="Queued items that will not be scanned.")
    was_finished: bool


class StatsOut(BaseModel):
    by: str
    stats: list[StatsRow]


class ScanOptionsIn(BaseModel):
    """The scan options `deepscan scan` takes, with the same defaults."""

    model_config = ConfigDict(extra="forbid")
    threshold: float | None = Field(None, ge=0, le=1, allow_inf_nan=False)
    fps: float = Field(DEFAULT_FPS, gt=0, allow_inf_nan=False)
    max_frames: int = Field(DEFAULT_MAX_FRAMES, ge=1)
    faces: bool = True
    strategy: str = DEFAULT_VIDEO_STRATEGY
    chunk_size: int = Field(DEFAULT_CHUNK_SIZE, ge=1)
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    rescan: bool = False
    thumbnails: bool = True

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, value: str) -> str:
        return validate_strategy(value)

    def to_options(self) -> ScanOptions:
        values = self.model_dump(include=set(ScanOptionsIn.model_fields))
        values["include"], values["exclude"] = tuple(self.include), tuple(self.exclude)
        return ScanOptions(**values)


class ScanIn(ScanOptionsIn):
    sources: list[str] = Field(min_length=1, description="Local paths under DEEPSCAN_LOCAL_ROOTS, http(s):// or s3://")
    name: str | None = Field(None, max_length=200)
    webhook: str | None = Field(None, description="POST a JSON notification here when the job finishes.")


class ScheduleIn(ScanOptionsIn):
    name: str = Field(min_length=1, max_length=200)
    sources: list[str] = Field(min_length=1)
    cron: str = Field(description="5-field cron expression in UTC ('0 2 * * *'), or '@every 10m'.")
    webhook: str | None = None
    retry_errors: bool = Field(False, description="Each run also rescans items that ended in error before.")


class ScheduleUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool


class ScheduleOut(BaseModel):
    name: str
    cron: str
    sources: list[str]
    options: dict[str, Any]
    enabled: bool
    webhook_url: str | None
    retry_errors: bool
    created_at: dt.datetime
    last_run_at: dt.datetime | None
    last_job_id: int | None
    next_run_at: dt.datetime


class SchedulesOut(BaseModel):
    schedules: list[ScheduleOut]


__all__ = ["JobSummary", "ReviewView"]
