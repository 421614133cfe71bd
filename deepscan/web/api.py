"""The JSON API under /api/v1: every handler parses, authorises, calls one core function, and answers."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from deepscan.web import schemas
from deepscan.web.auth import Admin, Reviewer, Viewer
from deepscan.web.problems import ProblemError
from deepscan.web.state import WebState, engine_of, state_of
from scanner import queries, review, schedules, thumbnails, timeline
from scanner.aggregation import DEFAULT_VIDEO_STRATEGY
from scanner.jobs import cancel_job
from scanner.launch import launch_scan
from scanner.mediaurl import REMOTE_SCHEMES, scheme_of
from scanner.models import ITEM_KINDS, VERDICTS, ItemStatus, Schedule
from scanner.producer import ScanBackend, ScanRequest
from scanner.redaction import redact_url
from workers.backend import scan_backend as make_backend

PROBLEM_RESPONSES: dict[int | str, dict[str, object]] = {
    status: {"model": schemas.Problem, "description": why}
    for status, why in {
        400: "Bad request",
        401: "No valid API token",
        403: "The token's role is too weak",
        404: "Not found",
        422: "Invalid parameters: `errors` lists each of them",
        503: "A needed service is unavailable",
    }.items()
}
router = APIRouter(prefix="/api/v1", responses=PROBLEM_RESPONSES)

ItemId = Annotated[int, Path(description="the item's id (`id` in a list of items)")]
JobId = Annotated[int, Path(description="the job's id")]
ScheduleName = Annotated[str, Path(description="the schedule's name")]
Verdict = Literal["fake", "real"]
Kind = Literal["image", "video", "unknown"]
assert set(VERDICTS) == {"fake", "real"}
assert set(ITEM_KINDS) == {"image", "video", "unknown"}


def json_response(model: BaseModel) -> Response:
    """The model serialised by pydantic-core in one call: on the hot paths this is most of the cost
    FastAPI's generic encoder would add (the `response_model` still documents the shape)."""
    return Response(model.model_dump_json(), media_type="application/json")


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    """Naive times mean UTC, as in `deepscan results --since`."""
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def result_filter(
    *,
    job: int | None,
    verdict: str | None,
    min_score: float | None,
    max_score: float | None,
    kind: str | None,
    status: str | None,
    since: dt.datetime | None,
    until: dt.datetime | None,
    reviewed: bool | None,
    order: queries.Order,
    limit: int,
    after: str | None,
    model: str | None = None,
) -> queries.ResultFilter:
    """The `deepscan results` filter, checked the same way its options are."""
    since, until = _utc(since), _utc(until)
    if min_score is not None and max_score is not None and min_score > max_score:
        raise ProblemError(400, "min_score is above max_score")
    if since is not None and until is not None and since >= until:
        raise ProblemError(400, "since is not before until")
    return queries.ResultFilter(
        job_id=job, verdict=verdict, min_score=min_score, max_score=max_score, kind=kind, status=status,
        since=since, until=until, reviewed=reviewed, order=order, limit=limit, after=after or None,
        model_version=model or None,
    )  # fmt: skip


@router.get("/items", response_model=schemas.ItemsPage, summary="List items (the filters of `deepscan results`)")
def list_items(
    request: Request,
    _who: Viewer,
    job: Annotated[int | None, Query(description="only items of this job")] = None,
    verdict: Annotated[Verdict | None, Query(description="only items the model judged fake (or real)")] = None,
    min_score: Annotated[float | None, Query(ge=0, le=1, description="only items scoring at least this")] = None,
    max_score: Annotated[float | None, Query(ge=0, le=1, description="only items scoring at most this")] = None,
    kind: Annotated[Kind | None, Query(description="only images (or videos, or items of unknown kind)")] = None,
    status: Annotated[ItemStatus | None, Query(description="only items in this state")] = None,
    since: Annotated[dt.datetime | None, Query(description="finished at or after (ISO 8601; naive = UTC)")] = None,
    until: Annotated[dt.datetime | None, Query(description="finished before (ISO 8601; naive = UTC)")] = None,
    reviewed: Annotated[
        bool | None, Query(description="only items a human has (true) or has not (false) labelled")
    ] = None,
    order: Annotated[
        queries.Order, Query(description="score: highest first; time: most recently finished first (ties by id)")
    ] = "score",
    limit: Annotated[
        int, Query(ge=1, le=queries.MAX_PAGE_SIZE, description="items per page")
    ] = queries.DEFAULT_PAGE_SIZE,
    after: Annotated[str | None, Query(description="the `next` cursor of the previous page")] = None,
    model: Annotated[str | None, Query(description="a model version or a prefix of it")] = None,
) -> Response:
    """A page of items in a stable order (score or finish time, descending, ties by id); every item
    appears exactly once across pages. Pass `next` back as `after`, with the same filters."""
    flt = result_filter(
        job=job, verdict=verdict, min_score=min_score, max_score=max_score, kind=kind, status=status,
        since=since, until=until, reviewed=reviewed, order=order, limit=limit, after=after, model=model,
    )  # fmt: skip
    with Session(engine_of(request)) as session, session.begin():
        page = queries.list_results(session, flt)
    return json_response(schemas.ItemsPage(items=page.rows, next=page.next_cursor))


@dataclass(frozen=True)
class ItemView:
    """An item as both the API and the console show it."""

    detail: queries.ItemDetail
    frames: list[queries.FramePoint]
    ranges: list[tuple[float, float]]
    thumbnails: list[thumbnails.ThumbnailInfo]


def load_item(session: Session, item_id: int) -> ItemView:
    """`deepscan show`'s facts about one item, and its stored thumbnails."""
    detail = queries.find_item(session, str(item_id))
    frames = queries.item_timeline(session, detail.id)
    samples = [(f.timestamp_s, f.score) for f in frames]
    strategy = detail.strategy or DEFAULT_VIDEO_STRATEGY
    threshold = detail.threshold
    ranges = timeline.flagged_ranges(samples, threshold, strategy=strategy) if threshold is not None else []
    return ItemView(detail, frames, ranges, thumbnails.list_thumbnails(session, detail.id))


@router.get("/items/{item_id}", response_model=schemas.ItemOut, summary="One item, its frame scores and flagged ranges")
def get_item(request: Request, _who: Viewer, item_id: ItemId) -> Response:
    with Session(engine_of(request)) as session, session.begin():
        view = load_item(session, item_id)
    thumbs = [
        schemas.ThumbnailOut.model_validate(
            {"url": f"/api/v1/items/{item_id}/thumbnails/{t.position}.jpg", **dataclasses.asdict(t)}
        )
        for t in view.thumbnails
    ]
    return json_response(
        schemas.ItemOut(item=view.detail, timeline=view.frames, flagged_ranges=view.ranges, thumbnails=thumbs)
    )


def thumbnail_response(request: Request, item_id: int, position: int) -> Response:
    with Session(engine_of(request)) as session:
        data = thumbnails.thumbnail_jpeg(session, item_id, position)
    if data is None:
        raise ProblemError(404, f"item {item_id} has no thumbnail {position}")
    # Thumbnails never change once stored for an item: let the browser keep them (privately).
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


@router.get(
    "/items/{item_id}/thumbnails/{position}.jpg",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}},
    summary="A thumbnail JPEG stored at scan time",
)
def get_thumbnail(
    request: Request,
    _who: Viewer,
    item_id: ItemId,
    position: Annotated[int, Path(description="0: the top-scoring face; 1..: one per flagged video segment")],
) -> Response:
    return thumbnail_response(request, item_id, position)


@router.post(
    "/items/{item_id}/review",
    status_code=201,
    response_model=schemas.ReviewView,
    responses={
        409: {"model": schemas.Problem, "description": "The item has no verdict (it errored or is not scanned yet)"}
    },
    summary="Label an item",
)
def post_review(request: Request, who: Reviewer, item_id: ItemId, body: schemas.ReviewIn) -> queries.ReviewView:
    """Record a label; the token's name is recorded as the reviewer. The newest review is the item's label.
    An item without a verdict (it ended `error`, or is not scanned yet) cannot be labelled: 409, with the reason."""
    with Session(engine_of(request)) as session, session.begin():
        return review.add_review(session, item_id, review.ReviewInput(body.label, who.name, body.note))


# --- jobs and scans ------------------------------------------------------------------------------


@router.get("/jobs", response_model=schemas.JobsPage, summary="The newest jobs with their progress")
def list_jobs(
    request: Request,
    _who: Viewer,
    limit: Annotated[int, Query(ge=1, le=10_000, description="how many of the newest jobs")] = 20,
) -> schemas.JobsPage:
    """The `limit` newest jobs, newest first; one page (`next` is null)."""
    with Session(engine_of(request)) as session, session.begin():
        return schemas.JobsPage(items=queries.list_jobs(session, limit), next=None)


@router.get("/jobs/{job_id}", response_model=schemas.JobSummary, summary="One job's progress")
def get_job(request: Request, _who: Viewer, job_id: JobId) -> queries.JobSummary:
    with Session(engine_of(request)) as session, session.begin():
        return queries.job_summary(session, job_id)


@router.post("/jobs/{job_id}/cancel", response_model=schemas.CancelOut, summary="Cancel a job's queued items")
def post_cancel(request: Request, _who: Admin, job_id: JobId) -> schemas.CancelOut:
    outcome = cancel_job(engine_of(request), job_id)
    return schemas.CancelOut(
        job_id=job_id, status=outcome.status, cancelled=outcome.cancelled, was_finished=outcome.was_finished
    )


def refuse_unsafe_sources(state: WebState, sources: list[str]) -> None:
    """A scan asked over HTTP runs on behalf of someone else: no server-side URL lists, and local
    paths only under DEEPSCAN_LOCAL_ROOTS (the sources module then refuses paths outside them)."""
    for source in sources:
        if source.startswith("@") or source == "-":
            raise ProblemError(422, f"source {source!r}: URL lists on the server cannot be read through the API")
        if scheme_of(source) not in REMOTE_SCHEMES and not state.settings.local_roots:
            raise ProblemError(
                403, f"source {redact_url(source)!r}: local paths need DEEPSCAN_LOCAL_ROOTS set on the server"
            )


def scan_backend(state: WebState) -> ScanBackend:
    if state.settings.embedded:
        raise ProblemError(
            503, "scans need a broker and workers: set DEEPSCAN_BROKER_URL for `deepscan serve` (embedded mode)"
        )
    if state.scan_backend is None:
        state.scan_backend = make_backend(state.settings, state.engine)
    return state.scan_backend


@router.post("/scans", status_code=202, response_model=schemas.JobSummary, summary="Submit a scan (admin)")
def post_scan(request: Request, response: Response, _who: Admin, body: schemas.ScanIn) -> queries.JobSummary:
    """Record and enqueue every item of the sources (as `deepscan scan` without --wait does) and
    answer with the job; the workers scan it. Needs a broker: 503 otherwise. A malformed webhook URL,
    options out of range, or sources with no media at all: 422, in the words `deepscan scan` uses."""
    state = state_of(request)
    backend = scan_backend(state)
    refuse_unsafe_sources(state, body.sources)
    scan = ScanRequest(body.sources, body.to_options(), name=body.name, webhook=body.webhook)  # 422 if malformed
    result = launch_scan(state.settings, state.engine, scan, backend, wait=False)
    if result.status == "failed":  # e.g. the broker went away while the items were being enqueued
        raise ProblemError(503, f"job {result.job_id} failed: {result.error}", extra={"job_id": result.job_id})
    response.headers["Location"] = f"/api/v1/jobs/{result.job_id}"
    with Session(state.engine) as session:
        return queries.job_summary(session, result.job_id)


# --- stats ---------------------------------------------------------------------------------------


@router.get("/stats", response_model=schemas.StatsPage, summary="Items, fake rate, errors by reason, latency")
def get_stats(
    request: Request,
    _who: Viewer,
    job: Annotated[int | None, Query(description="only items of this job")] = None,
    by: Annotated[
        queries.StatsBy, Query(description="one row per UTC day (of finishing), job or model version")
    ] = "day",
) -> schemas.StatsPage:
    """One row per group (`key`), in key order; one page (`next` is null)."""
    with Session(engine_of(request)) as session, session.begin():
        return schemas.StatsPage(items=queries.stats(session, job_id=job, by=by), next=None)


# --- schedules -----------------------------------------------------------------------------------


def schedule_out(s: Schedule) -> schemas.ScheduleOut:
    return schemas.ScheduleOut(
        name=s.name,
        cron=s.cron,
        sources=[redact_url(u) for u in s.source_spec],
        options=s.options,
        enabled=s.enabled,
        webhook_url=redact_url(s.webhook_url) if s.webhook_url else None,
        retry_errors=s.retry_errors,
        created_at=s.created_at,
        last_run_at=s.last_run_at,
        last_job_id=s.last_job_id,
        next_run_at=schedules.next_run(s.cron, s.last_run_at or s.created_at),
    )


def _schedule(session: Session, name: str) -> Schedule:
    return schedules.get_schedule(session, name)


@router.get("/schedules", response_model=schemas.SchedulesPage, summary="Scheduled, incremental scans")
def list_schedules(request: Request, _who: Viewer) -> schemas.SchedulesPage:
    """Every schedule, by name; one page (`next` is null)."""
    with Session(engine_of(request)) as session:
        rows = session.scalars(select(Schedule).order_by(Schedule.name)).all()
        return schemas.SchedulesPage(items=[schedule_out(s) for s in rows], next=None)


@router.post(
    "/schedules",
    status_code=201,
    response_model=schemas.ScheduleOut,
    responses={409: {"model": schemas.Problem, "description": "A schedule of that name exists"}},
    summary="Add a schedule (admin)",
)
def post_schedule(request: Request, response: Response, _who: Admin, body: schemas.ScheduleIn) -> schemas.ScheduleOut:
    state = state_of(request)
    refuse_unsafe_sources(state, body.sources)
    with Session(state.engine) as session, session.begin():
        spec = schedules.ScheduleSpec(
            name=body.name,
            sources=tuple(body.sources),
            when=body.cron,
            options=body.to_options(),
            webhook_url=body.webhook,
            retry_errors=body.retry_errors,
        )
        created = schedules.add_schedule(session, spec)
        response.headers["Location"] = f"/api/v1/schedules/{created.name}"
        return schedule_out(created)


@router.get("/schedules/{name}", response_model=schemas.ScheduleOut, summary="One schedule")
def get_schedule(request: Request, _who: Viewer, name: ScheduleName) -> schemas.ScheduleOut:
    with Session(engine_of(request)) as session:
        return schedule_out(_schedule(session, name))


@router.patch("/schedules/{name}", response_model=schemas.ScheduleOut, summary="Pause or resume a schedule (admin)")
def patch_schedule(
    request: Request, _who: Admin, name: ScheduleName, body: schemas.ScheduleUpdate
) -> schemas.ScheduleOut:
    with Session(engine_of(request)) as session, session.begin():
        found = _schedule(session, name)
        found.enabled = body.enabled
        session.flush()
        return schedule_out(found)


@router.delete("/schedules/{name}", status_code=204, response_class=Response, summary="Remove a schedule (admin)")
def delete_schedule(request: Request, _who: Admin, name: ScheduleName) -> Response:
    """Its past jobs and verdicts stay."""
    with Session(engine_of(request)) as session, session.begin():
        session.delete(_schedule(session, name))
    return Response(status_code=204)
