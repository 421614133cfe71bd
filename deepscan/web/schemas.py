"""Request and response bodies of the JSON API; responses reuse the core's dataclasses field for field."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from scanner.aggregation import DEFAULT_VIDEO_STRATEGY, validate_strategy
from scanner.jobs import DEFAULT_CHUNK_SIZE, DEFAULT_FPS, DEFAULT_LOCAL_CHUNK_SIZE, DEFAULT_MAX_FRAMES, ScanOptions
from scanner.models import REVIEW_LABELS
from scanner.queries import FramePoint, ItemDetail, JobSummary, ResultRow, ReviewView, StatsRow

Label = Literal["fake", "real", "unsure"]
assert set(REVIEW_LABELS) == {"fake", "real", "unsure"}


NEXT_DESCRIPTION = "Pass as `after` for the next page; null on the last page."


class ValidationIssue(BaseModel):
    location: str = Field(description="Where the invalid value is: `query.verdict`, `body.sources`, …")
    message: str = Field(description="What is wrong with it.")


class Problem(BaseModel):
    """RFC 9457 problem details (`application/problem+json`); members beyond these may be added."""

    model_config = ConfigDict(extra="allow")
    type: str = Field("about:blank", description="Always about:blank: the title is the HTTP status phrase.")
    title: str = Field(description="The HTTP status phrase (`Not Found`).")
    status: int = Field(description="The HTTP status code, repeated.")
    detail: str = Field(description="What went wrong and what to do, in one line.")
    instance: str = Field(description="The path that was asked.")
    errors: list[ValidationIssue] | None = Field(None, description="422 only: every invalid parameter.")
    job_id: int | None = Field(None, description="POST /scans 503 only: the job recorded before the broker failed.")
    checks: dict[str, str] | None = Field(None, description="/readyz 503 only: the state of each dependency.")


class Liveness(BaseModel):
    status: Literal["ok"] = Field(description="Always ok: the process answers.")


class Readiness(BaseModel):
    status: Literal["ready"] = Field(description="Always ready (otherwise the answer is a 503 problem).")
    database: str = Field(description="ok.")
    migrations: str = Field(description="The database's migration revision (the newest).")
    broker: str = Field(description="ok, or why scans cannot be submitted (embedded mode).")


class ItemsPage(BaseModel):
    items: list[ResultRow] = Field(description="Items in the requested order.")
    next: str | None = Field(description=NEXT_DESCRIPTION)


class ThumbnailOut(BaseModel):
    position: int = Field(description="0: the item's top-scoring face; 1..: one per flagged video segment.")
    url: str = Field(description="Where to GET the JPEG (same token).")
    frame_index: int = Field(description="The video frame it was cut from (0 for an image).")
    timestamp_s: float = Field(description="That frame's time in the video, in seconds (0 for an image).")
    start_s: float | None = Field(description="Start of the flagged segment it stands for, in seconds.")
    end_s: float | None = Field(description="End of the flagged segment it stands for, in seconds.")
    score: float = Field(description="The score of the face (or frame) shown.")
    width: int = Field(description="JPEG width in pixels.")
    height: int = Field(description="JPEG height in pixels.")


class ItemOut(BaseModel):
    item: ItemDetail = Field(description="The item, as `deepscan show` prints it.")
    timeline: list[FramePoint] = Field(description="Per-frame scores in frame order (one point for an image).")
    flagged_ranges: list[tuple[float, float]] = Field(
        description="[start_s, end_s] of each video segment at or above the threshold; empty for images."
    )
    thumbnails: list[ThumbnailOut] = Field(description="JPEGs stored at scan time.")


class ReviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: Label = Field(description="The moderator's decision.")
    note: str | None = Field(None, max_length=2000, description="Why, for the next reviewer.")


class JobsPage(BaseModel):
    items: list[JobSummary] = Field(description="The newest jobs first.")
    next: str | None = Field(description="Always null: the list is one page of the `limit` newest jobs.")


class CancelOut(BaseModel):
    job_id: int = Field(description="The job.")
    status: str = Field(description="The job's status now.")
    cancelled: int = Field(description="Queued items that will not be scanned.")
    was_finished: bool = Field(description="The job had already ended: nothing was cancelled.")


class StatsPage(BaseModel):
    items: list[StatsRow] = Field(description="One row per group, in key order.")
    next: str | None = Field(description="Always null: every group is on one page.")


class ScanOptionsIn(BaseModel):
    """The scan options `deepscan scan` takes, with the same defaults."""

    model_config = ConfigDict(extra="forbid")
    threshold: float | None = Field(
        None, ge=0, le=1, allow_inf_nan=False, description="Verdict threshold; null: the checkpoint's calibrated one."
    )
    fps: float = Field(DEFAULT_FPS, gt=0, allow_inf_nan=False, description="Video frames sampled per second.")
    max_frames: int = Field(DEFAULT_MAX_FRAMES, ge=1, description="At most this many frames per video.")
    faces: bool = Field(True, description="Score detected faces (false: whole images).")
    strategy: str = Field(
        DEFAULT_VIDEO_STRATEGY,
        description="How frame scores become a video's score: segments, segmentsN, mean, max or topK_mean.",
    )
    chunk_size: int | None = Field(
        None,
        ge=1,
        description=(
            f"Items per worker task; null: {DEFAULT_LOCAL_CHUNK_SIZE} when every item is a local file, "
            f"{DEFAULT_CHUNK_SIZE} otherwise."
        ),
    )
    include: list[str] = Field(default_factory=list, description="Only paths or keys matching these globs.")
    exclude: list[str] = Field(default_factory=list, description="Leave out paths or keys matching these globs.")
    rescan: bool = Field(False, description="Score again content already scanned with this model.")
    thumbnails: bool = Field(True, description="Store thumbnails for the console.")

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
    name: str | None = Field(None, max_length=200, description="The job's name (default: from the sources).")
    webhook: str | None = Field(None, description="POST a JSON notification here when the job finishes.")


class ScheduleIn(ScanOptionsIn):
    name: str = Field(min_length=1, max_length=200, description="A name unique among schedules.")
    sources: list[str] = Field(min_length=1, description="As for POST /scans.")
    cron: str = Field(description="5-field cron expression in UTC ('0 2 * * *'), or '@every 10m'.")
    webhook: str | None = Field(None, description="POST a JSON notification here when each run finishes.")
    retry_errors: bool = Field(False, description="Each run also rescans items that ended in error before.")


class ScheduleUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(description="false pauses the schedule, true resumes it.")


class ScheduleOut(BaseModel):
    name: str = Field(description="The schedule's name.")
    cron: str = Field(description="When it runs, in UTC.")
    sources: list[str] = Field(description="What each run scans (credentials and query strings removed).")
    options: dict[str, Any] = Field(description="The scan options of each run.")
    enabled: bool = Field(description="false: beat skips it.")
    webhook_url: str | None = Field(description="Where run notifications go (credentials removed).")
    retry_errors: bool = Field(description="Each run also rescans items that ended in error before.")
    created_at: dt.datetime = Field(description="When it was added (UTC).")
    last_run_at: dt.datetime | None = Field(description="When it last started a run (UTC).")
    last_job_id: int | None = Field(description="The job of its last run.")
    next_run_at: dt.datetime = Field(description="When it is next due (UTC).")


class SchedulesPage(BaseModel):
    items: list[ScheduleOut] = Field(description="Every schedule, by name.")
    next: str | None = Field(description="Always null: every schedule is on one page.")


__all__ = ["JobSummary", "ReviewView"]
