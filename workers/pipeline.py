"""Process one chunk of items: claim, analyse in threads, score in cross-item batches, store in one transaction.

This plain function is what the Celery task and the embedded (in-process) mode both call. Each
call is one delivery: it claims the chunk's items under a fresh lease owner (scanner/leases.py),
keeps the leases alive while it works, and writes each item's verdict and frame rows together,
only while it still holds that item's lease. A redelivered or duplicated chunk therefore writes
every item at most once, and a delivery whose items were taken over writes nothing. Items whose
earlier delivery died are tried one at a time, alone in this process, after the chunk's others
(scanner/leases.py, workers/isolation.py): a death during such a try blames that item only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, func, insert, update
from sqlalchemy.orm import Session

from scanner import leases, reuse
from scanner.aggregation import verdict_for
from scanner.deadline import ItemBudget
from scanner.errors import PermanentError, WorkerStoppingError
from scanner.jobs import ScanOptions, finish_job_if_complete
from scanner.mediaurl import scheme_of
from scanner.models import STOPPED_JOB_STATUSES, FrameResult, MediaItem, ScanJob, utcnow
from scanner.settings import Settings
from scanner.thumbnails import encode_thumbnail, replace_thumbnails
from workers import metrics
from workers.analysis import Outcome, Unit, analyse_item
from workers.batching import Batcher
from workers.fetch import item_budget
from workers.inference import ModelInput, Scored
from workers.notify import Deliver, item_flagged_payload, job_finished_notifier
from workers.runtime import WorkerRuntime, local_fetch_threads

log = logging.getLogger(__name__)

DEFAULT_CHUNK_BUDGET_S = 1500.0  # items not started by then are handed back; below the broker's visibility timeout
DEFAULT_HAND_BACK_PAUSES_S = (1.0, 3.0)  # between tries of handing items back after a failure
DEFAULT_ABANDON_GRACE_S = 5.0  # past an item's deadline, stop waiting for a thread stuck in native code
_POLL_S = 1.0


@dataclass
class ChunkReport:
    """Counts for one processed chunk (logged by workers, summed by the embedded runner)."""

    done: int = 0
    error: int = 0
    reused: int = 0
    skipped: int = 0
    lost: int = 0
    inferred_units: int = 0
    job_finished: bool = False
    errors: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class JobContext:
    options: ScanOptions
    threshold: float
    model_version: str
    webhook_url: str | None
    # Whether a fetched item's bytes are looked up for an earlier verdict: not with --rescan, nor
    # when no verdict of this model predates the job (WorkerRuntime.earlier_possible).
    look_for_earlier: bool = True


def process_chunk(
    rt: WorkerRuntime,
    job_id: int,
    items: Sequence[tuple[int, str]],
    *,
    deliver: Deliver | None = None,
    chunk_budget_s: float = DEFAULT_CHUNK_BUDGET_S,
) -> ChunkReport:
    """Scan `items` of `job_id` and store their verdicts, frame scores and errors.

    `skipped` counts items this delivery could not claim (finished, cancelled or held by another
    delivery); `lost` counts items it scored but whose lease was taken over before it could store.
    """
    if rt.stopping.is_set():  # a chunk received while the worker stops is left for another worker
        raise WorkerStoppingError(f"worker stopping: chunk of {len(items)} items not started")
    report = ChunkReport()
    owner = leases.new_owner()
    taken = claim(rt, job_id, [item_id for item_id, _ in items], owner)
    if taken is None:
        report.skipped = len(items)
        return report
    ctx, claimed = taken.context, taken.leased
    report.skipped = len(items) - len(claimed.items) - len(claimed.gave_up)
    report.error += len(claimed.gave_up)
    ordinary, lone = taken.split(items)
    try:
        with leases.kept_alive(rt.engine, owner, claimed.items, rt.settings.lease_s):
            with rt.floor.shared():
                outcomes, stored, unstarted = _analyse_and_store(
                    rt, ordinary, ctx, owner, report, chunk_budget_s=chunk_budget_s
                )
            for pair in lone:  # their delivery died: each is tried alone, so that a death blames one item
                if rt.stopping.is_set():  # not taken up: handed back uncounted, the retry tries it alone
                    leases.hand_back(rt.engine, owner, {pair[0]})
                    report.skipped += 1
                    unstarted.add(pair[0])
                    continue
                more, more_stored, more_unstarted = _try_alone(
                    rt, pair, ctx, owner, report, chunk_budget_s=chunk_budget_s
                )
                outcomes, stored, unstarted = outcomes + more, stored | more_stored, unstarted | more_unstarted
    except Exception:
        _hand_back_quietly(rt, owner, claimed.items)  # so a retry of this chunk can claim them at once
        raise
    report.lost = len(outcomes) - len(stored)
    if unstarted and rt.stopping.is_set():
        # Raised once what was finished is stored: the task retries, and the retry claims the rest.
        raise WorkerStoppingError(f"worker stopping: {len(unstarted)} items of the chunk handed back")
    stored_outcomes = [o for o in outcomes if o.item_id in stored]
    _count(report, job_id, stored_outcomes)
    metrics.record_chunk(rt.engine, report, stored)
    if deliver is not None and ctx.webhook_url:
        for outcome in stored_outcomes:
            if outcome.verdict == "fake" and outcome.score is not None:
                deliver(
                    ctx.webhook_url,
                    item_flagged_payload(job_id, outcome.item_id, outcome.url, outcome.score, ctx.threshold),
                )
    if finish_job_if_complete(rt.engine, job_id):
        report.job_finished = True
        if deliver is not None:
            job_finished_notifier(rt.engine, deliver)(job_id)
    log.info(
        "job %s: chunk of %d stored (%d done, %d error, %d skipped, %d lost to another delivery)",
        job_id, len(items), report.done, report.error, report.skipped, report.lost,
    )  # fmt: skip
    return report


def _analyse_and_store(
    rt: WorkerRuntime,
    items: Sequence[tuple[int, str]],
    ctx: JobContext,
    owner: str,
    report: ChunkReport,
    *,
    chunk_budget_s: float,
    alone: bool = False,
) -> tuple[list[Outcome], set[int], set[int]]:
    """Score `items` and store what `owner` still holds: (outcomes, ids stored, ids handed back).
    Items left unstarted (the chunk's budget ran out, or the worker is stopping) are handed back."""
    if not items:
        return [], set(), set()
    outcomes, unstarted = analyse_and_score(rt, items, ctx, report, chunk_budget_s=chunk_budget_s)
    leases.hand_back(rt.engine, owner, unstarted, alone=alone)
    report.skipped += len(unstarted)
    return outcomes, store(rt, outcomes, ctx, owner), unstarted


def _try_alone(
    rt: WorkerRuntime, pair: tuple[int, str], ctx: JobContext, owner: str, report: ChunkReport, *, chunk_budget_s: float
) -> tuple[list[Outcome], set[int], set[int]]:
    """One lone try of an interrupted item: nothing else in hand in this process, counted before it
    starts (scanner/leases.py). A transient failure hands it back uncounted."""
    with rt.floor.alone():
        if not leases.take_up_alone(rt.engine, owner, pair[0]):
            return [], set(), set()  # another delivery took it over meanwhile
        try:
            return _analyse_and_store(rt, [pair], ctx, owner, report, chunk_budget_s=chunk_budget_s, alone=True)
        except Exception:
            _hand_back_quietly(rt, owner, {pair[0]}, alone=True)
            raise


def _hand_back_quietly(rt: WorkerRuntime, owner: str, item_ids: set[int], *, alone: bool = False) -> None:
    """Hand the items back, trying a few times: the failure that brought us here is often the database
    restarting, and an item not handed back waits for its lease to expire and counts as interrupted."""
    for pause_s in (*DEFAULT_HAND_BACK_PAUSES_S, 0.0):
        try:
            leases.hand_back(rt.engine, owner, item_ids, alone=alone)
            return
        except Exception as exc:
            failure = exc
            time.sleep(pause_s)
    # Still down: the leases expire and the periodic reconcile resends the items.
    log.warning("could not hand back %d items (%s); resent when their leases expire", len(item_ids), failure)


def _count(report: ChunkReport, job_id: int, outcomes: Iterable[Outcome]) -> None:
    for outcome in outcomes:
        if outcome.status == "error":
            report.error += 1
            report.errors[outcome.item_id] = outcome.error or ""
            log.info("job %s item %s: error: %s", job_id, outcome.item_id, outcome.error)
        else:
            report.done += 1
            report.reused += outcome.reused is not None


@dataclass(frozen=True)
class Claim:
    """What a delivery holds of its chunk: the job's context, and the items leased to it."""

    context: JobContext
    leased: leases.Claimed

    def split(self, items: Sequence[tuple[int, str]]) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
        """The leased items in chunk order: those run together, and the interrupted ones, each tried alone."""
        together = self.leased.items - self.leased.interrupted
        return [p for p in items if p[0] in together], [p for p in items if p[0] in self.leased.interrupted]


def claim(rt: WorkerRuntime, job_id: int, item_ids: list[int], owner: str) -> Claim | None:
    """Lease the chunk's claimable items to `owner`; None when the job is gone or cancelled.
    Items that killed their worker too often end `error` here (poison items)."""
    with Session(rt.engine) as session, session.begin():
        job = session.get(ScanJob, job_id)
        if job is None or job.status in STOPPED_JOB_STATUSES:
            return None
        if job.model_version is None:
            job.model_version = rt.scorer.model_version
        threshold = job.threshold if job.threshold is not None else rt.scorer.threshold
        options = ScanOptions.from_json(job.options)
        look = not options.rescan and rt.earlier_possible(session, job, options)
        ctx = JobContext(options, threshold, rt.scorer.model_version, job.webhook_url, look_for_earlier=look)
        claimed = leases.claim(
            session.connection(),
            job_id,
            item_ids,
            owner=owner,
            lease_s=rt.settings.lease_s,
            max_attempts=rt.settings.max_attempts,
        )
    for item_id in sorted(claimed.gave_up):
        log.warning("job %s item %s: %s", job_id, item_id, leases.gave_up_reason(rt.settings.max_attempts))
    return Claim(ctx, claimed)


def analyse_and_score(
    rt: WorkerRuntime,
    items: Sequence[tuple[int, str]],
    ctx: JobContext,
    report: ChunkReport,
    *,
    chunk_budget_s: float = DEFAULT_CHUNK_BUDGET_S,
) -> tuple[list[Outcome], set[int]]:
    """Fetch/decode in threads ahead of the model; each item's units go to the process's batcher
    as soon as they are ready, and are scored in batches formed across items and chunks.

    Returns the outcomes, every unit scored, and the ids of items no thread had started when the
    chunk's budget ran out (the caller hands those back). Each item bounds its own fetch and
    decode by its deadline; should a thread still be stuck past that deadline plus a grace
    period (native code that never returns), the item ends `error` and the chunk goes on without
    waiting for that thread. When the worker is told to stop (`rt.stopping`), the chunk stops
    waiting at once: the items not finished by then are handed back with the unstarted ones.
    """
    outcomes: list[Outcome] = []
    started: set[int] = set()
    decoding: dict[int, ItemBudget] = {}  # items being fetched and decoded, with their deadlines
    unstarted: set[int] = set()
    chunk_ends = time.monotonic() + chunk_budget_s
    batcher = rt.batcher()

    def run(item_id: int, url: str) -> Outcome:
        try:
            started.add(item_id)
            if len(started) == len(items):
                turn.give_back()  # the last item is taken up: the next chunk may start on the free threads
            decoding[item_id] = budget = item_budget(rt.settings)
            outcome = analyse_item(
                rt, item_id, url, ctx.options, ctx.model_version, budget=budget, look_for_earlier=ctx.look_for_earlier
            )
            # Waiting for room in the batcher's queue is not the item's fetch or decode running late.
            del decoding[item_id]
            submit(batcher, outcome)  # blocks while the model is behind: this thread then decodes no further
            return outcome
        finally:
            expected.arrived()

    pool = ThreadPoolExecutor(max_workers=fetch_threads_for(items, rt.settings), thread_name_prefix="fetch")
    expected = batcher.expecting(len(items))  # so partial batches wait for this chunk's next inputs
    turn = DecodeTurn(rt.decode_turns if all_local(items) else None)
    try:
        with turn:
            futures: dict[Future[Outcome], tuple[int, str]] = {pool.submit(run, i, u): (i, u) for i, u in items}
            waiting = set(futures)
            while waiting:
                finished, waiting = wait(waiting, timeout=_POLL_S, return_when=FIRST_COMPLETED)
                outcomes.extend(future.result() for future in finished)
                if rt.stopping.is_set():
                    # An error now may be the stop's own cut-off, not the item's: those are done again.
                    unstarted.update(futures[future][0] for future in waiting)
                    unstarted.update(outcome.item_id for outcome in outcomes if outcome.status == "error")
                    outcomes = [outcome for outcome in outcomes if outcome.item_id not in unstarted]
                    break
                now = time.monotonic()
                for future in list(waiting):
                    item_id, url = futures[future]
                    budget = decoding.get(item_id)
                    if item_id not in started and now >= chunk_ends and future.cancel():
                        unstarted.add(item_id)
                        waiting.discard(future)
                    elif budget is not None and now > budget.current().at + DEFAULT_ABANDON_GRACE_S:
                        log.error("item %s: thread still busy past its deadline; the item ends error", item_id)
                        outcomes.append(Outcome.failed(item_id, url, budget.current().reason("fetching or decoding")))
                        waiting.discard(future)
        expected.close()  # items handed back or abandoned will not come
        outcomes = [collect(outcome, report) for outcome in outcomes]
    except BaseException:
        _cancel_scoring(outcomes)
        raise
    finally:
        expected.close()
        pool.shutdown(wait=False, cancel_futures=True)
    return outcomes, unstarted


def fetch_threads_for(items: Sequence[tuple[int, str]], settings: Settings) -> int:
    """Threads for one chunk's fetch and decode, sized to what they wait on.

    Remote items wait on the network, so a chunk gets `DEEPSCAN_FETCH_THREADS` of them. A chunk of
    local files waits on nothing but the CPU: more threads than cores only take turns at the GIL and
    the cores (docs/performance.md, "Threads sized to the chunk", measured with `bench/datapath.py`).
    """
    return local_fetch_threads(settings) if all_local(items) else settings.fetch_threads


def all_local(items: Sequence[tuple[int, str]]) -> bool:
    return all(scheme_of(url) == "file" for _, url in items)


class DecodeTurn:
    """A chunk of local files' turn at fetching and decoding (`local_decode_turns` chunks at once).

    Chunks held at once otherwise run in lockstep: they decode together, then all wait for their
    last scores and store together while the cores sit idle. With turns, one chunk decodes on all
    the cores while the one before it is scored and stored (docs/performance.md, "Decode turns",
    gives the idle time and images/s with and without them). The turn is given back as soon as the
    chunk's last item is taken up, not when it is done, so one slow item (a long video) holds up
    no other chunk. Remote items wait on the network, not the cores: their chunks take no turn
    (`turns` None).
    """

    def __init__(self, turns: threading.BoundedSemaphore | None) -> None:
        self._turns = turns
        self._held = False
        self._lock = threading.Lock()

    def __enter__(self) -> DecodeTurn:
        if self._turns is not None:
            self._turns.acquire()
            self._held = True
        return self

    def give_back(self) -> None:
        """Let the next chunk start (once; later calls do nothing)."""
        with self._lock:
            if self._held:
                self._held = False
                assert self._turns is not None
                self._turns.release()

    def __exit__(self, *_: object) -> None:
        self.give_back()


def submit(batcher: Batcher[ModelInput, Scored], outcome: Outcome) -> None:
    """Hand the outcome's units to the model; each unit keeps the future of its score."""
    for unit in outcome.units:
        unit.scoring = batcher.submit(unit.model_input())
        unit.tensor = unit.encoded = None  # the batcher holds the input until it is scored


def collect(outcome: Outcome, report: ChunkReport) -> Outcome:
    """Wait for the scores of the outcome's units. An image that no decoder could read (found only
    when the GPU path decodes it) ends `error` with the usual reason; a failed batch raises."""
    scored: list[Scored] = []
    for unit in outcome.units:
        assert unit.scoring is not None, "every unit is submitted when its item is analysed"
        try:
            scored.append(unit.scoring.result())
        except PermanentError as exc:
            _cancel_scoring([outcome])
            return Outcome.failed(outcome.item_id, outcome.url, str(exc), kind=outcome.kind, size=outcome.size,
                                  sha256=outcome.sha256, etag=outcome.etag)  # fmt: skip
    for unit, result in zip(outcome.units, scored, strict=True):
        unit.score, unit.scoring = result.score, None
        if result.preview is not None:
            unit.thumbnail = encode_thumbnail(result.preview)
    report.inferred_units += len(outcome.units)
    return outcome


def _cancel_scoring(outcomes: Iterable[Outcome]) -> None:
    """Withdraw units not yet scored (a chunk that fails stops costing the model time)."""
    for outcome in outcomes:
        for unit in outcome.units:
            if unit.scoring is not None:
                unit.scoring.cancel()


_RESULT_COLUMNS = (
    "status", "error", "kind", "content_sha256", "finished_at", "model_version", "score", "verdict", "strategy",
    "width", "height", "duration_s", "frames_scanned", "reused_from_id", "scoring_key", "precision",
)  # fmt: skip
_ITEMS = cast(Table, MediaItem.__table__)
_STORE_RESULT = (
    update(_ITEMS)
    .where(_ITEMS.c.id == bindparam("item_id"), _ITEMS.c.lease_owner == bindparam("owner"))
    .values(
        {name: bindparam(name) for name in _RESULT_COLUMNS}
        | leases.released_values()
        # What the fetch learnt about the object fills in, never erases, what the listing said.
        | {name: func.coalesce(bindparam(name), _ITEMS.c[name]) for name in ("size", "etag")}
    )
)


def store(rt: WorkerRuntime, outcomes: list[Outcome], ctx: JobContext, owner: str) -> set[int]:
    """Write the outcomes of the items `owner` still holds, in one transaction; returns their ids.

    Verdict (or error) and frame rows of an item are written together: its old frame rows are
    replaced in the same transaction, never on their own. Items whose lease another delivery took
    over (or that were cancelled) are left exactly as they are.
    """
    if not outcomes:
        return set()
    now = utcnow()
    with rt.engine.begin() as conn:
        held = leases.lock_held(conn, owner, [o.item_id for o in outcomes])
        mine = [o for o in outcomes if o.item_id in held]
        if not mine:
            return held
        conn.execute(delete(FrameResult).where(FrameResult.item_id.in_(held)))
        values = [_item_values(o, ctx, now, precision=rt.scorer.precision) | {"owner": owner} for o in mine]
        conn.execute(_STORE_RESULT, values)
        for outcome, row in zip(mine, values, strict=True):
            if outcome.status != "error":  # what was stored is what the item.flagged webhook decides on
                outcome.score, outcome.verdict = row["score"], row["verdict"]
        fresh = [row for o in mine if o.reused is None for row in _frame_rows(o)]
        if fresh:
            conn.execute(insert(FrameResult), fresh)
        reuse.copy_frames(conn, [(o.item_id, o.reused) for o in mine if o.reused is not None])
        fresh_outcomes = [o for o in mine if o.reused is None]
        replace_thumbnails(conn, held, fresh_outcomes, threshold=ctx.threshold, strategy=ctx.options.strategy)
    return held


def _item_values(outcome: Outcome, ctx: JobContext, now: Any, *, precision: str) -> dict[str, Any]:
    """Every column of the bulk UPDATE for one item (the same keys for every item); `precision` is
    what this worker's model ran in, recorded on the verdicts it scored."""
    values: dict[str, Any] = dict.fromkeys(_RESULT_COLUMNS) | {
        "item_id": outcome.item_id,
        "status": outcome.status,
        "error": outcome.error,
        "kind": outcome.kind,
        "content_sha256": outcome.sha256,
        "finished_at": now,
        "model_version": ctx.model_version,
        "size": outcome.size,
        "etag": outcome.etag,
    }
    if outcome.status == "error":
        return values
    values["scoring_key"] = ctx.options.scoring_key(outcome.kind)
    if outcome.reused is not None:
        values.update(outcome.reused.verdict_values(strategy=ctx.options.strategy, threshold=ctx.threshold))
        values.update(kind=outcome.kind, content_sha256=outcome.sha256)
    else:
        scores = ((u.frame_index, _scored(u)) for u in outcome.units)
        score, strategy, frame_count = reuse.item_score(outcome.kind, scores, ctx.options.strategy)
        values.update(score=score, strategy=strategy, frames_scanned=frame_count)
        values.update(width=outcome.width, height=outcome.height, duration_s=outcome.duration_s)
        values.update(verdict=verdict_for(score, ctx.threshold), precision=precision)
    return values


def _scored(unit: Unit) -> float:
    assert unit.score is not None, "every unit is scored before its item is stored"
    return unit.score


def _frame_rows(outcome: Outcome) -> list[dict[str, Any]]:
    if outcome.status == "error":
        return []
    return [
        {
            "item_id": outcome.item_id,
            "frame_index": u.frame_index,
            "timestamp_s": u.timestamp_s,
            "face_index": u.face_index,
            "bbox": u.bbox,
            "landmarks": u.landmarks,
            "score": u.score,
        }
        for u in outcome.units
    ]
