"""`deepscan results|show|review|export-training-set|stats|jobs`: what moderators query and decide.

Machine-readable output (`--format json|jsonl|csv`) has stable field names: the ones of
`scanner.queries.ResultRow`, `ItemDetail`, `JobSummary` and `StatsRow`, timestamps in RFC 3339
UTC, absent values as null (JSON) or empty (CSV). Lists print as `{"items": [...], "next": …}`
(deepscan/cli/output.py).
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
from sqlalchemy.orm import Session

from deepscan.cli.context import EXIT_ITEM_ERRORS, AppContext, pass_app
from deepscan.cli.options import WHEN
from deepscan.cli.output import (
    LIST_FORMATS,
    RECORD_FORMATS,
    cell,
    counted,
    dump_json,
    emit_list,
    format_option,
    render_key_values,
    render_table,
)
from scanner import queries, review, timeline
from scanner.aggregation import DEFAULT_VIDEO_STRATEGY
from scanner.errors import InvalidInputError, PermanentError
from scanner.mediaurl import scheme_of
from scanner.models import ITEM_KINDS, ITEM_STATUSES, REVIEW_LABELS, VERDICTS

DEFAULT_JOBS_LIMIT = 20


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


# --- results -------------------------------------------------------------------------------------

RESULT_TABLE = ("id", "job_id", "kind", "status", "score", "verdict", "review_label", "finished_at", "url")
RESULT_TABLE_WITH_ERRORS = (*RESULT_TABLE, "error")


@click.command()
@click.option("--job", "job_id", type=int, help="Only items of this job.")
@click.option("--verdict", type=click.Choice(VERDICTS), help="Only items the model judged fake (or real).")
@click.option("--min-score", type=click.FloatRange(0, 1), help="Only items scoring at least this.")
@click.option("--max-score", type=click.FloatRange(0, 1), help="Only items scoring at most this.")
@click.option("--kind", type=click.Choice(ITEM_KINDS), help="Only images (or videos).")
@click.option("--status", type=click.Choice(ITEM_STATUSES), help="Only items in this state.")
@click.option("--since", type=WHEN, help="Only items finished at or after this (2026-01-31, …T12:00Z, 1.5h, 7d, 1w).")
@click.option("--until", type=WHEN, help="Only items finished before this.")
@click.option("--reviewed/--unreviewed", default=None, help="Only items a human has (or has not) reviewed.")
@click.option(
    "--model",
    "model_version",
    metavar="VERSION",
    help="Only items scored by this model version (its sha256, or a prefix of it).",
)
@click.option(
    "--order",
    type=click.Choice(queries.ORDERS),
    default="score",
    show_default=True,
    help="score: highest first; time: most recently finished first.",
)
@click.option(
    "--limit",
    type=click.IntRange(1, queries.MAX_PAGE_SIZE),
    default=queries.DEFAULT_PAGE_SIZE,
    show_default=True,
    help="Items per page.",
)
@click.option("--after", metavar="CURSOR", help="Continue after the page that printed this cursor.")
@format_option(*LIST_FORMATS)
@pass_app
def results(app: AppContext, /, output_format: str, **options: Any) -> None:
    """List scanned items with the model's verdict and the latest human label, one page at a time.

    \b
    Pages follow a stable order (ties broken by item id), so every item appears exactly once:
    pass the printed cursor to --after for the next page. Items without a score (or not
    finished, for --order time) come after all the others.
    Table, jsonl and csv print the next cursor on stderr; json includes it as "next".
    Items that ended `error` show their reason in an `error` column.
    """
    low, high = options["min_score"], options["max_score"]
    if low is not None and high is not None and low > high:
        raise click.BadParameter("--min-score is above --max-score", param_hint="--min-score")
    if options["since"] is not None and options["until"] is not None and options["since"] >= options["until"]:
        raise click.BadParameter("--since is not before --until", param_hint="--since")
    flt = queries.ResultFilter(**options)
    try:
        with Session(app.engine) as session, session.begin():
            page = queries.list_results(session, flt)
    except queries.InvalidCursorError as exc:
        raise click.BadParameter(str(exc), param_hint="--after") from None
    _print_results(page, output_format)


def _print_results(page: queries.Page, output_format: str) -> None:
    records = [asdict(row) for row in page.rows]
    columns = RESULT_TABLE_WITH_ERRORS if any(r["error"] for r in records) else RESULT_TABLE
    emit_list(
        output_format,
        records,
        fields=queries.RESULT_FIELDS,
        table=lambda: render_table(columns, ([r[name] for name in columns] for r in records)),
        empty="no items match",
        next_cursor=page.next_cursor,
    )


# --- show ----------------------------------------------------------------------------------------


@click.command()
@click.argument("item")
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write the video's score timeline as a PNG here, with the scored face's position and size below it.",
)
@format_option(*RECORD_FORMATS)
@pass_app
def show(app: AppContext, item: str, plot_path: Path | None, output_format: str) -> None:
    """Show one item: its verdict and why. ITEM is an item id, a URL as scanned, or a local path as `scan` takes it.

    For videos: the per-frame scores over time and the time ranges at or above the threshold.
    """
    with Session(app.engine) as session, session.begin():
        detail = queries.find_item(session, item_key(item))
        frames = queries.item_timeline(session, detail.id)
        faces = queries.face_track(session, detail.id) if plot_path is not None else []
    samples = [(f.timestamp_s, f.score) for f in frames]
    threshold = detail.threshold
    strategy = detail.strategy or DEFAULT_VIDEO_STRATEGY
    ranges = timeline.flagged_ranges(samples, threshold, strategy=strategy) if threshold is not None else []
    if plot_path is not None:
        _plot(detail, samples, plot_path, faces)
    if output_format == "json":
        payload = {"item": asdict(detail), "timeline": [asdict(f) for f in frames], "flagged_ranges": ranges}
        click.echo(dump_json(payload))
        return
    click.echo(_describe_item(detail))
    if frames and detail.kind == "video":  # an image's one "frame" is its score, already printed above
        click.echo(_describe_timeline(frames, threshold, ranges))
    if plot_path is not None:
        click.echo(f"timeline plot written to {plot_path}", err=True)


def item_key(item: str) -> str:
    """An item id or URL as given; a local path (as `scan` takes it) becomes the file:// URL scan stored."""
    text = item.strip()
    if text.isdigit() or scheme_of(text):
        return text
    path = Path(text).expanduser()
    return path.resolve().as_uri() if path.exists() else text


def _plot(
    detail: queries.ItemDetail, samples: list[tuple[float, float]], path: Path, faces: list[tuple[float, list[int]]]
) -> None:
    if detail.kind != "video" or not samples:
        raise click.UsageError(f"item {detail.id} has no per-frame timeline to plot (only scanned videos do)")
    if detail.threshold is None:
        raise click.UsageError(f"item {detail.id} has no threshold (its job and model record none)")
    title = f"item {detail.id}: {detail.verdict or detail.status} ({cell(detail.score)}) {detail.url}"
    strategy = detail.strategy or DEFAULT_VIDEO_STRATEGY
    timeline.plot_timeline(samples, detail.threshold, path, title=title[:120], strategy=strategy, faces=faces)


def _undone(r: queries.ReviewView) -> str:
    return r.label if r.undone_at is None else f"{r.label} (undone by {r.undone_by})"


def _describe_item(d: queries.ItemDetail) -> str:
    human = d.human_label
    lines = [
        ("item", d.id),
        ("job", d.job_id),
        ("url", d.url),
        ("kind", d.kind),
        ("status", d.status),
        ("verdict", d.verdict),
        ("score", d.score),
        ("threshold", d.threshold),
        ("human label", f"{human.label} by {human.reviewer}" if human else None),
        ("model version", d.model_version),
        ("strategy", d.strategy),
        ("size", f"{d.width}x{d.height}" if d.width and d.height else None),
        ("duration", f"{d.duration_s:.1f}s" if d.duration_s is not None else None),
        ("frames scanned", d.frames_scanned),
        ("attempts", d.attempts),
        ("finished", d.finished_at),
    ]
    if d.error:
        lines.append(("error", d.error))
    text = render_key_values(lines)
    if d.reviews:
        rows = ([r.created_at, _undone(r), r.reviewer, r.note] for r in d.reviews)
        text += "\n\nreviews:\n" + render_table(("when", "label", "reviewer", "note"), rows)
    return text


def _describe_timeline(
    frames: list[queries.FramePoint], threshold: float | None, ranges: list[tuple[float, float]]
) -> str:
    flagged = ", ".join(f"{a:.2f}s-{b:.2f}s" for a, b in ranges) or "none"
    header = f"\nflagged time ranges (score >= {cell(threshold)}): {flagged}\n\nper-frame timeline:\n"
    marks = ["*" if any(a <= f.timestamp_s <= b for a, b in ranges) else "" for f in frames]
    rows = ([f.frame_index, f"{f.timestamp_s:.2f}", f.score, f.faces, m] for f, m in zip(frames, marks, strict=True))
    return header + render_table(("frame", "time_s", "score", "faces", "flagged"), rows)


# --- review --------------------------------------------------------------------------------------


def _default_reviewer() -> str:
    try:
        return os.environ.get("USER") or getpass.getuser()
    except OSError:  # no login name and no passwd entry (some containers)
        return ""


@click.command("review")
@click.argument("item")
@click.option("--label", type=click.Choice(REVIEW_LABELS), required=True, help="Your decision.")
@click.option("--note", help="Why, for the next reviewer.")
@click.option("--reviewer", default=_default_reviewer, show_default="$USER", help="Who decided.")
@pass_app
def review_command(app: AppContext, item: str, label: str, note: str | None, reviewer: str) -> None:
    """Record a human decision on ITEM (an item id, a URL as scanned, or a local path, as `show` takes it);
    the newest review is the item's human label.

    Results show it beside the model's verdict, and export-training-set prefers it. An item without a
    verdict (it ended `error`, or is not scanned yet) cannot be labelled: exit 1, with the reason.
    """
    try:
        given = review.ReviewInput(label, reviewer, note)
    except InvalidInputError as exc:
        raise click.UsageError(str(exc)) from None
    with Session(app.engine) as session, session.begin():
        found = queries.find_item(session, item_key(item))
        recorded = review.add_review(session, found.id, given)
    model = f"{found.verdict} {cell(found.score)}" if found.verdict else found.status
    click.echo(f"review {recorded.id}: item {found.id} labelled {label} by {recorded.reviewer} (model: {model})")


# --- export --------------------------------------------------------------------------------------


def _fetcher(app: AppContext) -> review.FetchBytes:
    """How the exporter gets an item's bytes: the workers' fetcher (local, HTTP, S3), with the same
    caps and SSRF rules as scanning."""
    from workers.fetch import fetch

    def fetch_bytes(url: str) -> bytes:
        with fetch(url, app.settings) as got:
            if got.data is None:
                raise PermanentError("not an image")
            return got.data

    return fetch_bytes


@contextmanager
def _counting(fetch_bytes: review.FetchBytes, *, enabled: bool) -> Iterator[review.FetchBytes]:
    """`fetch_bytes` that ticks a progress bar (on stderr, only when it is a terminal) per image."""
    from tqdm import tqdm

    with tqdm(desc="exporting", unit="image", disable=not enabled, dynamic_ncols=True, leave=False) as bar:

        def fetch(url: str) -> bytes:
            try:
                return fetch_bytes(url)
            finally:
                bar.update(1)

        yield fetch


@click.command("export-training-set")
@click.argument("out", type=click.Path(file_okay=False, writable=True, path_type=Path))
@click.option("--reviewed-only", is_flag=True, help="Only items a human labelled (fake or real).")
@click.option("--job", "job_id", type=int, help="Only items of this job.")
@pass_app
def export_training_set(app: AppContext, out: Path, reviewed_only: bool, job_id: int | None) -> None:
    """Write labelled images to OUT/real and OUT/fake (what `deepscan train` reads) and OUT/manifest.csv.

    \b
    A human label wins over the model's verdict; `unsure` items are left out. Without
    --reviewed-only, items nobody reviewed are labelled with the model's verdict.
    Videos are left out, and so is any image whose bytes are no longer the ones scanned and
    reviewed (their sha256 differs): its label was given to other content.
    Exits 1 for an unknown --job, 3 when some images could not be fetched (listed on stderr).
    """
    with Session(app.engine) as session, session.begin():
        if job_id is not None:
            queries.job_summary(session, job_id)  # "no job N" (exit 1) rather than an empty folder
        with _counting(_fetcher(app), enabled=app.show_progress()) as fetch_bytes:
            report = review.export_training_set(
                session, out, reviewed_only=reviewed_only, fetch_bytes=fetch_bytes, job_id=job_id
            )
    written = report.written
    wrote = f"{counted(written['fake'], 'fake image')} and {counted(written['real'], 'real image')}"
    click.echo(f"wrote {wrote} to {out} (manifest {report.manifest})")
    if report.skipped_unsure or report.skipped_not_image:
        not_images = counted(report.skipped_not_image, "item that is not an image", "items that are not images")
        click.echo(f"left out: {counted(report.skipped_unsure, 'unsure item')}, {not_images}")
    if report.unverified:
        reasons = "; ".join(f"{count} {why}" for why, count in report.unverified_by_reason.most_common())
        unverified = counted(len(report.unverified), "image that is", "images that are")
        click.echo(f"left out {unverified} not the content scanned: {reasons}")
        for item_id, reason in report.unverified[:20]:
            click.echo(f"item {item_id}: left out: {reason}", err=True)
    for item_id, reason in report.failed[:20]:
        click.echo(f"item {item_id}: {reason}", err=True)
    if report.failed:
        click.echo(f"{counted(len(report.failed), 'image')} could not be fetched: not exported", err=True)
        raise SystemExit(EXIT_ITEM_ERRORS)


# --- stats ---------------------------------------------------------------------------------------

STATS_FIELDS = ("key", "items", "done", "errors", "fakes", "fake_rate", "error_rate", "mean_latency_s")


@click.command()
@click.option("--job", "job_id", type=int, help="Only items of this job.")
@click.option(
    "--by",
    type=click.Choice(queries.STATS_BY),
    default="day",
    show_default=True,
    help="Group by UTC day (of finishing), job or model version.",
)
@format_option(*LIST_FORMATS)
@pass_app
def stats(app: AppContext, job_id: int | None, by: queries.StatsBy, output_format: str) -> None:
    """Items, fake rate (share of verdicts that are fake), error rate by reason, mean latency.

    Latency is the time from enqueueing to the verdict; the error rate is errors over finished items.
    Each item's `key` is the day, job id or model version (--by).
    """
    with Session(app.engine) as session, session.begin():
        rows = queries.stats(session, job_id=job_id, by=by)
    emit_list(
        output_format,
        [asdict(r) for r in rows],
        fields=(*STATS_FIELDS, "errors_by_reason"),
        table=lambda: render_table((by, *STATS_FIELDS[1:], "top errors"), (_stats_cells(r) for r in rows)),
        empty="no items",
    )


def _stats_cells(row: queries.StatsRow) -> list[Any]:
    reasons = list(row.errors_by_reason.items())
    top = "; ".join(f"{why} ({n})" for why, n in reasons[:3]) + (
        f"; +{len(reasons) - 3} more" if len(reasons) > 3 else ""
    )
    return [row.key, row.items, row.done, row.errors, row.fakes, row.fake_rate, row.error_rate, row.mean_latency_s, top]


# --- jobs ----------------------------------------------------------------------------------------

JOB_TABLE = ("id", "name", "status", "total", "queued", "processing", "done", "error", "cancelled", "flagged")


@click.group()
def jobs() -> None:
    """Scan jobs: progress, counts, speed."""


@jobs.command("list")
@click.option(
    "--limit",
    type=click.IntRange(1, 10_000),
    default=DEFAULT_JOBS_LIMIT,
    show_default=True,
    help="How many of the newest jobs.",
)
@format_option(*LIST_FORMATS)
@pass_app
def list_jobs(app: AppContext, limit: int, output_format: str) -> None:
    """The newest jobs with their item counts (flagged = verdict fake), duration and items/s."""
    with Session(app.engine) as session, session.begin():
        summaries = queries.list_jobs(session, limit)
    records = [asdict(s) for s in summaries]
    emit_list(
        output_format,
        records,
        fields=tuple(queries.JobSummary.__dataclass_fields__),
        table=lambda: render_table(
            (*JOB_TABLE, "duration", "items/s"),
            ([*(getattr(s, f) for f in JOB_TABLE), _duration(s.duration_s), s.items_per_s] for s in summaries),
        ),
        empty="no jobs yet: start one with `deepscan scan`",
    )


@jobs.command("show")
@click.argument("job_id", type=int)
@format_option(*RECORD_FORMATS)
@pass_app
def show_job(app: AppContext, job_id: int, output_format: str) -> None:
    """One job's counts by status, flagged items, duration and items/s."""
    with Session(app.engine) as session, session.begin():
        summary = queries.job_summary(session, job_id)
    if output_format == "json":
        click.echo(dump_json(asdict(summary)))
        return
    pairs = [(name, getattr(summary, name)) for name in JOB_TABLE]
    pairs += [("threshold", _applied_threshold(summary)), ("model_version", summary.model_version)]
    pairs += [("created", summary.created_at), ("started", summary.started_at), ("finished", summary.finished_at)]
    pairs += [("duration", _duration(summary.duration_s)), ("items/s", summary.items_per_s)]
    click.echo(render_key_values(pairs))


def _applied_threshold(summary: queries.JobSummary) -> str | None:
    """`0.731 (the checkpoint's)`: the threshold verdicts used, and where it came from."""
    if summary.threshold is None:
        return None
    source = "given with the scan" if summary.threshold_source == "job" else "the checkpoint's"
    return f"{cell(summary.threshold)} ({source})"


COMMANDS: list[click.Command] = [results, show, review_command, export_training_set, stats, jobs]
