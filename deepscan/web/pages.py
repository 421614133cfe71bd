"""The review console: server-rendered pages over the same core functions as the API and the CLI.

Usable without JavaScript (every action is a link or a form); console.js only adds keyboard
shortcuts. Every value is escaped by Jinja's autoescaping; the CSP forbids inline script and style.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Annotated
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from deepscan.web.api import load_item, thumbnail_response
from deepscan.web.auth import (
    CSRF_FIELD,
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    ConsoleAdmin,
    ConsoleReviewer,
    ConsoleViewer,
    check_csrf,
    same_origin,
)
from deepscan.web.charts import timeline_chart
from deepscan.web.problems import ProblemError
from deepscan.web.rendering import render
from deepscan.web.state import engine_of
from scanner import claims, content, labels, queries, review, thumbnails, tokens
from scanner.jobs import cancel_job
from scanner.models import ITEM_KINDS, ITEM_STATUSES, OPEN_JOB_STATUSES, REVIEW_LABELS, VERDICTS, Review, utcnow
from scanner.tokens import ConsoleSession

DEFAULT_QUEUE_PAGE = 50
DEFAULT_JOBS_SHOWN = 50
JOBS_REFRESH_S = 5
router = APIRouter(prefix="/console", include_in_schema=False)
FormText = Annotated[str | None, Form()]


def _safe_next(target: str | None, fallback: str) -> str:
    """Only a path inside the console: never an open redirect."""
    if target and target.startswith("/console/") and not target.startswith("//") and "\\" not in target:
        return target
    return fallback


def _with_param(target: str, key: str, value: str | int) -> str:
    """`target` with `key=value` set in its query (before any #fragment)."""
    parts = urlsplit(target)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != key] + [(key, str(value))]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _without_flash(request: Request) -> str:
    """This page's path and query without the one-time confirmation parameters."""
    query = [(k, v) for k, v in request.query_params.multi_items() if k not in ("done", "undone")]
    return f"{request.url.path}?{urlencode(query)}" if query else request.url.path


@dataclass(frozen=True)
class Flash:
    """The confirmation shown once after a label or an undo: which review, of which item, and what now."""

    review: queries.ReviewView
    undone: bool
    back: str  # where the undo button returns to: the page showing the confirmation


def _just_done(session: Session, request: Request, found: ConsoleSession) -> Flash | None:
    """The review named by `?done=` (just given) or `?undone=` (just undone), if it is this reviewer's."""
    for key, undone in (("done", False), ("undone", True)):
        raw = request.query_params.get(key, "")
        row = session.get(Review, int(raw)) if raw.isdigit() else None
        if row is not None and row.reviewer == found.identity.name:
            return Flash(queries.ReviewView.of(row), undone, _without_flash(request))
    return None


# --- sign-in -------------------------------------------------------------------------------------


def _set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


@router.get("/login")
def login_page(request: Request, error: str | None = None) -> Response:
    login_csrf = secrets.token_urlsafe(24)
    response = render(request, "login.html", {"csrf": login_csrf, "error": error})
    _set_cookie(request, response, LOGIN_CSRF_COOKIE, login_csrf, 3600)
    return response


@router.post("/login")
def login(request: Request, token: FormText = None, csrf: FormText = None) -> Response:
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not same_origin(request) or not tokens.csrf_matches(expected, csrf):
        raise ProblemError(403, "the sign-in form's CSRF check failed: reload the page and sign in again")
    with Session(engine_of(request)) as session, session.begin():
        identity = tokens.authenticate(session, (token or "").strip())
        if identity is None:
            return render(request, "login.html", {"csrf": expected, "error": "unknown or revoked token"}, status=401)
        cookie, _ = tokens.start_session(session, identity)
    response = RedirectResponse("/console/queue", status_code=303)
    _set_cookie(request, response, SESSION_COOKIE, cookie, tokens.DEFAULT_SESSION_LIFETIME_S)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
    return response


@router.post("/logout")
def logout(request: Request, found: ConsoleViewer, csrf: FormText = None) -> Response:
    check_csrf(request, found.csrf_token, csrf)
    with Session(engine_of(request)) as session, session.begin():
        tokens.end_session(session, request.cookies.get(SESSION_COOKIE, ""))
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# --- queue ---------------------------------------------------------------------------------------


def _parse_time(name: str, raw: str | None) -> dt.datetime | None:
    if not raw:
        return None
    try:
        value = dt.datetime.fromisoformat(raw.strip())
    except ValueError:
        raise ProblemError(400, f"{name}: {raw!r} is not a date or time (2026-01-31 or 2026-01-31T12:00)") from None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _choice(name: str, raw: str | None, choices: tuple[str, ...]) -> str | None:
    if not raw:
        return None
    if raw not in choices:
        raise ProblemError(400, f"{name}: choose one of {', '.join(choices)}")
    return raw


@dataclass(frozen=True)
class QueueQuery:
    """The queue's filters, as they travel in the URL from the queue to item pages and back.

    By default the queue is what needs a human: flagged content (verdict fake) nobody has labelled,
    one row per content (sha256) however often it was scanned, highest score first; `verdict=any`
    adds the rest after them; `order=time` puts the newest first; `q` searches URLs and file names.
    """

    job: int | None = None
    verdict: str | None = "fake"
    kind: str | None = None
    status: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    reviewed: str = "no"  # no (the default: still to review), yes, any
    search: str | None = None
    order: queries.Order = "score"

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> QueueQuery:
        job = params.get("job") or None
        if job is not None and not job.isdigit():
            raise ProblemError(400, f"job: {job!r} is not a job id")
        verdict = params.get("verdict") or "fake"
        status = params.get("status") or "any"
        return cls(
            job=int(job) if job else None,
            verdict=_choice("verdict", verdict, (*VERDICTS, "any")) if verdict != "any" else None,
            kind=_choice("kind", params.get("kind"), ITEM_KINDS),
            status=_choice("status", status, (*ITEM_STATUSES, "any")) if status != "any" else None,
            since=_parse_time("since", params.get("since")),
            until=_parse_time("until", params.get("until")),
            reviewed=_choice("reviewed", params.get("reviewed"), ("no", "yes", "any")) or "no",
            search=(params.get("q") or "").strip() or None,
            order="time" if _choice("order", params.get("order"), queries.ORDERS) == "time" else "score",
        )

    def result_filter(self, *, limit: int, after: str | None = None) -> queries.ResultFilter:
        reviewed = {"no": False, "yes": True}.get(self.reviewed)
        return queries.ResultFilter(
            job_id=self.job, verdict=self.verdict, kind=self.kind, status=self.status, since=self.since,
            until=self.until, reviewed=reviewed, order=self.order, limit=limit, after=after,
            one_per_content=True, search=self.search,
        )  # fmt: skip

    def params(self) -> dict[str, str]:
        values = {
            "job": str(self.job) if self.job is not None else "",
            "verdict": self.verdict or "any",
            "kind": self.kind or "",
            "status": self.status or "any",
            "since": self.since.strftime("%Y-%m-%dT%H:%M") if self.since else "",
            "until": self.until.strftime("%Y-%m-%dT%H:%M") if self.until else "",
            "reviewed": self.reviewed,
            "q": self.search or "",
            "order": self.order,
        }
        defaults = {"verdict": "fake", "status": "any", "reviewed": "no", "order": "score"}
        return {k: v for k, v in values.items() if v and defaults.get(k) != v}

    def url(self, path: str, **extra: str | int | None) -> str:
        query = self.params() | {k: str(v) for k, v in extra.items() if v is not None}
        return f"{path}?{urlencode(query)}" if query else path


@router.get("")
@router.get("/")
def console_home() -> Response:
    return RedirectResponse("/console/queue", status_code=303)


@router.get("/queue")
def queue_page(request: Request, found: ConsoleViewer) -> Response:
    query = QueueQuery.parse(request.query_params)
    after = request.query_params.get("after") or None
    with Session(engine_of(request)) as session, session.begin():
        page = queries.list_results(session, query.result_filter(limit=DEFAULT_QUEUE_PAGE, after=after))
        with_thumbs = thumbnails.first_thumbnails(session, [r.id for r in page.rows])
        sightings = content.content_sightings(session, [r.id for r in page.rows])
        now, me = utcnow(), found.identity.name
        live = claims.live_claims(session, [r.id for r in page.rows], now=now)
        held = {i: c for i, c in live.items() if c.held_by_other(me, now)}
        counts = _queue_counts(session, me, now)
        done = _just_done(session, request, found)
    here = query.url("/console/queue", after=after)
    context = {
        "query": query,
        "rows": page.rows,
        "with_thumbs": with_thumbs,
        "sightings": sightings,
        "held": held,
        "counts": counts,
        "bulk": _bulk_flash(request),
        "done": done,
        "selected": request.query_params.get("selected", ""),
        "next_url": query.url("/console/queue", after=page.next_cursor) if page.next_cursor else None,
        "here": here,
        "csrf": found.csrf_token,
        "can_review": found.identity.may("reviewer"),
        "labels": REVIEW_LABELS,
        "kinds": ITEM_KINDS,
        "statuses": ITEM_STATUSES,
        "item_url": lambda item_id: query.url(f"/console/items/{item_id}"),
        "then_select": lambda item_id: query.url("/console/queue", after=after, selected=item_id) + f"#item-{item_id}",
        "job_url": lambda job_id: replace(query, job=job_id).url("/console/queue"),
    }
    return render(request, "queue.html", context)


@dataclass(frozen=True)
class QueueCounts:
    """The numbers at the top of the queue: flagged content, how much of it nobody labelled, my labels today."""

    flagged: int
    unreviewed: int
    mine_today: int


def _queue_counts(session: Session, me: str, now: dt.datetime) -> QueueCounts:
    flagged = queries.ResultFilter(verdict="fake", status="done", one_per_content=True)
    return QueueCounts(
        flagged=queries.count_results(session, flagged),
        unreviewed=queries.count_results(session, replace(flagged, reviewed=False)),
        mine_today=labels.labels_given(session, me, since=labels.start_of_day(now)),
    )


def _bulk_flash(request: Request) -> tuple[int, str] | None:
    """(how many, label) after a bulk label, from `?bulk=N&bulk_label=L`."""
    count, label = request.query_params.get("bulk", ""), request.query_params.get("bulk_label", "")
    return (int(count), label) if count.isdigit() and label in REVIEW_LABELS else None


DEFAULT_BULK_MAX = 200  # rows one bulk label may cover: a queue page and then some


def _bulk_ids(raw: list[str]) -> list[int]:
    ids = list(dict.fromkeys(int(v) for v in raw if v.isdigit()))
    if not ids:
        raise ProblemError(422, "select at least one row to label")
    if len(ids) > DEFAULT_BULK_MAX:
        raise ProblemError(422, f"at most {DEFAULT_BULK_MAX} rows at once")
    return ids


@router.post("/reviews/bulk")
def bulk_review(
    request: Request,
    found: ConsoleReviewer,
    label: FormText = None,
    item: Annotated[list[str] | None, Form()] = None,
    confirm: FormText = None,
    csrf: FormText = None,
    next: FormText = None,
) -> Response:
    """Label the selected rows: first a page naming every item and the label, then (confirmed) the labels."""
    check_csrf(request, found.csrf_token, csrf)
    if label not in REVIEW_LABELS:
        raise ProblemError(422, f"label: choose one of {', '.join(REVIEW_LABELS)}")
    ids = _bulk_ids(item or [])
    back = _safe_next(next, "/console/queue")
    if confirm != "yes":
        with Session(engine_of(request)) as session:
            rows = [queries.find_item(session, str(i)) for i in ids]
        context = {"rows": rows, "label": label, "back": back, "csrf": found.csrf_token}
        return render(request, "bulk.html", context)
    with Session(engine_of(request)) as session, session.begin():
        for item_id in ids:
            review.add_review(session, item_id, review.ReviewInput(label, found.identity.name))
        claims.release(session, ids)
    return RedirectResponse(_with_param(_with_param(back, "bulk", len(ids)), "bulk_label", label), status_code=303)


# --- items ---------------------------------------------------------------------------------------


DEFAULT_NEXT_LOOKAHEAD = 25  # rows looked at past the current one for an item nobody else holds


def _following(session: Session, query: QueueQuery, detail: queries.ItemDetail) -> list[int]:
    """The items after this one in the queue's order: the queue's own query, continued after this item."""
    flt = query.result_filter(limit=DEFAULT_NEXT_LOOKAHEAD)
    key = detail.finished_at if flt.order == "time" else detail.score
    after = queries.encode_cursor(flt, key, detail.id)
    return [row.id for row in queries.list_results(session, replace(flt, after=after)).rows]


def _next_in_queue(session: Session, query: QueueQuery, detail: queries.ItemDetail, me: str) -> int | None:
    """The next item in the queue that no one else has claimed (what `j` leads to; nothing is claimed here)."""
    following = _following(session, query, detail)
    taken = claims.live_claims(session, following)
    return next((i for i in following if i not in taken or not taken[i].held_by_other(me, utcnow())), None)


def _claim_next(session: Session, query: QueueQuery, detail: queries.ItemDetail, me: str) -> int | None:
    """Claim the next item in the queue that no one else holds, and return it: of two moderators racing for
    one item, one gets it and the other the one after."""
    for item_id in _following(session, query, detail):
        if claims.claim(session, item_id, me).reviewer == me:
            return item_id
    return None


@router.get("/next")
def next_item(request: Request, found: ConsoleViewer) -> Response:
    """Go on from item `from` to the next one nobody else is reviewing (claiming it for a reviewer),
    carrying the confirmation of a label just given; back to the queue at its end."""
    query = QueueQuery.parse(request.query_params)
    start = request.query_params.get("from", "")
    me = found.identity.name
    with Session(engine_of(request)) as session, session.begin():
        detail = queries.find_item(session, start) if start.isdigit() else None
        if detail is None:
            target = None
        elif found.identity.may("reviewer"):
            target = _claim_next(session, query, detail, me)
        else:
            target = _next_in_queue(session, query, detail, me)
    url = query.url(f"/console/items/{target}", prev=start) if target else query.url("/console/queue")
    for key in ("done", "undone"):
        if (value := request.query_params.get(key, "")).isdigit():
            url = _with_param(url, key, value)
    return RedirectResponse(url, status_code=303)


@dataclass(frozen=True)
class HistoryEntry:
    at: dt.datetime
    action: str  # "label" or "undo"
    label: str
    who: str
    item_id: int
    note: str | None


def review_history(reviews: list[queries.ReviewView]) -> list[HistoryEntry]:
    """Every label and every undo of an item's content, newest first."""
    entries = [HistoryEntry(r.created_at, "label", r.label, r.reviewer, r.item_id, r.note) for r in reviews]
    entries += [
        HistoryEntry(r.undone_at, "undo", r.label, r.undone_by or "", r.item_id, None)
        for r in reviews
        if r.undone_at is not None
    ]
    return sorted(entries, key=lambda e: e.at, reverse=True)


@router.get("/items/{item_id}")
def item_page(request: Request, found: ConsoleViewer, item_id: int) -> Response:
    query = QueueQuery.parse(request.query_params)
    prev_id = request.query_params.get("prev")
    with Session(engine_of(request)) as session, session.begin():
        view = load_item(session, item_id)
        me = found.identity.name
        holder = claims.claim(session, item_id, me) if found.identity.may("reviewer") else None
        next_id = _next_in_queue(session, query, view.detail, me)
        done = _just_done(session, request, found)
        evidence = thumbnails.list_views(session, item_id) if view.detail.width and view.detail.height else []
    detail = view.detail
    context = {
        "view": view,
        "evidence": evidence,
        "viewed_frames": {v.frame_index for v in evidence},
        "item": detail,
        "human": detail.human_label,
        "done": done,
        "history": review_history(detail.reviews),
        "chart": timeline_chart(view.frames, detail.threshold, view.ranges) if detail.kind == "video" else None,
        "csrf": found.csrf_token,
        "can_review": found.identity.may("reviewer"),
        "labels": REVIEW_LABELS,
        "queue_url": query.url("/console/queue"),
        "claimed_by": holder if holder is not None and holder.reviewer != me else None,
        "next_url": query.url("/console/next", **{"from": item_id}) if next_id else None,
        "prev_url": query.url(f"/console/items/{prev_id}") if prev_id and prev_id.isdigit() else None,
        "after_review": query.url("/console/next", **{"from": item_id}),
    }
    return render(request, "item.html", context)


@router.get("/items/{item_id}/thumbnails/{position}.jpg")
def item_thumbnail(request: Request, _found: ConsoleViewer, item_id: int, position: int) -> Response:
    return thumbnail_response(request, item_id, position)


@router.get("/items/{item_id}/views/{frame_index}.jpg")
def item_view(request: Request, _found: ConsoleViewer, item_id: int, frame_index: int) -> Response:
    """The whole image, or one top frame of a video, as stored at scan time (at most 640 px)."""
    with Session(engine_of(request)) as session:
        data = thumbnails.view_jpeg(session, item_id, frame_index)
    if data is None:
        raise ProblemError(404, f"item {item_id} has no stored view of frame {frame_index}")
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


@router.post("/items/{item_id}/review")
def review_item(
    request: Request,
    found: ConsoleReviewer,
    item_id: int,
    label: FormText = None,
    note: FormText = None,
    csrf: Annotated[str | None, Form(alias=CSRF_FIELD)] = None,
    next: FormText = None,
) -> Response:
    """Label an item (and its content), then go on to `next` with a confirmation offering an undo."""
    check_csrf(request, found.csrf_token, csrf)
    if label not in REVIEW_LABELS:
        raise ProblemError(422, f"label: choose one of {', '.join(REVIEW_LABELS)}")
    with Session(engine_of(request)) as session, session.begin():
        given = review.add_review(session, item_id, review.ReviewInput(label, found.identity.name, note))
        claims.release(session, [item_id])
    target = _safe_next(next, f"/console/items/{item_id}")
    return RedirectResponse(_with_param(target, "done", given.id), status_code=303)


@router.post("/reviews/{review_id}/undo")
def undo_review(
    request: Request, found: ConsoleReviewer, review_id: int, csrf: FormText = None, next: FormText = None
) -> Response:
    """Undo a label: the review stays in the history, marked undone, and the label before it (or none) is back."""
    check_csrf(request, found.csrf_token, csrf)
    with Session(engine_of(request)) as session, session.begin():
        try:
            undone = labels.undo_review(session, review_id, found.identity.name)
        except labels.NoSuchReviewError as exc:
            raise ProblemError(404, str(exc)) from None
        item_id = undone.item_id
    target = _safe_next(next, f"/console/items/{item_id}")
    return RedirectResponse(_with_param(target, "undone", review_id), status_code=303)


# --- jobs and stats ------------------------------------------------------------------------------


@router.get("/jobs")
def jobs_page(request: Request, found: ConsoleViewer) -> Response:
    with Session(engine_of(request)) as session, session.begin():
        summaries = queries.list_jobs(session, DEFAULT_JOBS_SHOWN)
    running = any(s.status in OPEN_JOB_STATUSES for s in summaries)
    context = {
        "jobs": summaries,
        "refresh_s": JOBS_REFRESH_S if running else None,
        "csrf": found.csrf_token,
        "can_cancel": found.identity.may("admin"),
    }
    return render(request, "jobs.html", context)


@router.post("/jobs/{job_id}/cancel")
def cancel_job_form(request: Request, found: ConsoleAdmin, job_id: int, csrf: FormText = None) -> Response:
    check_csrf(request, found.csrf_token, csrf)
    cancel_job(engine_of(request), job_id)  # no such job: NotFoundError, a 404 page
    return RedirectResponse("/console/jobs", status_code=303)


@router.get("/stats")
def stats_page(request: Request, _found: ConsoleViewer, by: str = "day", job: int | None = None) -> Response:
    if by not in queries.STATS_BY:
        raise ProblemError(400, f"by: choose one of {', '.join(queries.STATS_BY)}")
    with Session(engine_of(request)) as session, session.begin():
        rows = queries.stats(session, job_id=job, by=by)
        today = labels.reviewer_stats(session, since=labels.start_of_day())
        ever = labels.reviewer_stats(session)
    context = {"rows": rows, "by": by, "job": job, "choices": queries.STATS_BY, "reviewers": ever, "today": today}
    return render(request, "stats.html", context | {"labels": REVIEW_LABELS})
