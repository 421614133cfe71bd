"""What a worker process loads once and shares between chunks: settings, database, model, clients."""

from __future__ import annotations

import logging
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

import requests
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from scanner import reuse
from scanner.db import make_engine
from scanner.errors import ConfigError
from scanner.faces import detector_for
from scanner.jobs import ScanOptions
from scanner.media import release_decoded_memory_promptly
from scanner.models import ModelRecord, ScanJob
from scanner.s3 import make_s3_client
from scanner.settings import Settings, usable_cores
from workers import cutoff, metrics
from workers.batching import Batcher
from workers.decodebudget import DecodeBudget
from workers.inference import ModelInput, Scored, Scorer
from workers.isolation import Floor
from workers.lookups import EarlierLookups
from workers.ssrf import make_http_session

log = logging.getLogger(__name__)

MAX_REMEMBERED_JOBS = 1024  # jobs whose earlier_possible answer a worker keeps
DEFAULT_SWITCH_INTERVAL_S = 0.001  # sys.setswitchinterval in a worker process (CPython's default: 0.005)


@dataclass
class WorkerRuntime:
    settings: Settings
    engine: Engine
    scorer: Scorer
    _local: threading.local = field(default_factory=threading.local)
    _s3: Any = None
    _batcher: Batcher[ModelInput, Scored] | None = None
    _batcher_lock: threading.Lock = field(default_factory=threading.Lock)
    # Held by a chunk of local files while it takes up its items (workers.pipeline.DecodeTurn).
    decode_turns: threading.BoundedSemaphore = field(init=False)
    # Shared by the chunks in hand, held alone by the lone try of an interrupted item (workers.isolation).
    floor: Floor = field(default_factory=Floor)
    # Decoded image pixels in flight, shared by every fetch thread of every chunk (DEEPSCAN_DECODE_BUDGET_MPIX).
    decode_budget: DecodeBudget = field(init=False)
    # Set when the worker is told to stop: chunks stop waiting and hand their unfinished items back.
    stopping: threading.Event = field(default_factory=threading.Event)

    # Earlier verdicts by content: the lookups of every fetch thread, answered in shared queries.
    earlier: EarlierLookups = field(init=False)
    _earlier_possible: dict[int, bool] = field(default_factory=dict)
    _earlier_lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.decode_turns = threading.BoundedSemaphore(local_decode_turns(self.settings))
        self.decode_budget = DecodeBudget(round(self.settings.decode_budget_mpix * 1_000_000))
        self.earlier = EarlierLookups(self.engine)

    def earlier_possible(self, session: Session, job: ScanJob, options: ScanOptions) -> bool:
        """Whether an earlier verdict of this model can answer the job's items (reuse.any_done_before);
        asked once per job by this process, as the answer for a job never turns from no to yes."""
        with self._earlier_lock:
            known = self._earlier_possible.get(job.id)
        if known is None:
            known = reuse.any_done_before(
                session, self.scorer.model_version, options.scoring_keys().values(), job.created_at
            )
            with self._earlier_lock:
                if len(self._earlier_possible) >= MAX_REMEMBERED_JOBS:
                    self._earlier_possible.clear()
                self._earlier_possible[job.id] = known
        return known

    def stop(self) -> None:
        """Stop soon: running fetches are cut off now, and chunks hand back what they have not finished."""
        self.stopping.set()
        cut = cutoff.cut_all()
        log.info("stopping: %d fetches cut off; unfinished items are handed back", cut)

    def batcher(self) -> Batcher[ModelInput, Scored]:
        """The process's one dynamic batcher: every chunk this process holds feeds the model through it."""
        with self._batcher_lock:
            if self._batcher is None:
                self._batcher = Batcher(
                    self.scorer.score_inputs,
                    batch_size=self.scorer.batch_size,
                    max_wait_s=self.settings.batch_wait_ms / 1000,
                    record=metrics.record_batch,
                )
            return self._batcher

    def http(self) -> requests.Session:
        """One HTTP session per thread (connection reuse without sharing a pool across threads)."""
        session: requests.Session | None = getattr(self._local, "http", None)
        if session is None:
            session = self._local.http = make_http_session(self.settings)
        return session

    def s3(self) -> Any:
        """One S3 client for the process; boto3 clients may be shared between threads."""
        if self._s3 is None:
            self._s3 = make_s3_client(self.settings, attempts=1)  # fetch() does its own retries
        return self._s3


def load_runtime(settings: Settings, engine: Engine | None = None) -> WorkerRuntime:
    """Load the checkpoint (refusing to start without one) and register it in the database."""
    if settings.checkpoint is None:
        raise ConfigError(
            "no checkpoint configured: set DEEPSCAN_CHECKPOINT or pass --checkpoint "
            "(train one with `deepscan train`, or run `deepscan demo` for a demo checkpoint)"
        )
    scorer = Scorer(
        settings.checkpoint,
        device=settings.device,
        batch_size=settings.batch_size,
        gpu_decode=settings.gpu_decode,
        compile_model=settings.compile_model,
        precision=settings.precision,
    )
    if scorer.meta.face_view.finds_faces:  # a missing detector install fails here, not on the first image
        detector_for(scorer.meta.face_view.detector)
    engine = engine if engine is not None else make_engine(settings.database_url)
    register_model(engine, scorer)
    release_decoded_memory_promptly()
    # Fetch threads alternate a query or a read (GIL released) with decoding (GIL held in Python
    # between the C calls). At CPython's default 5 ms switch interval a thread whose answer has come
    # back waits up to 5 ms for a decoding thread to let go: a content lookup then costs 5 ms instead
    # of under 1 (docs/performance.md, "A small job").
    sys.setswitchinterval(DEFAULT_SWITCH_INTERVAL_S)
    return WorkerRuntime(settings=settings, engine=engine, scorer=scorer)


def register_model(engine: Engine, scorer: Scorer) -> None:
    """Record the checkpoint in `models`, so producers and reports know the model version."""
    try:
        with Session(engine) as session, session.begin():
            known = session.get(ModelRecord, scorer.model_version)
            if known is None:
                session.add(
                    ModelRecord(
                        model_version=scorer.model_version,
                        path=str(scorer.path),
                        arch=scorer.meta.arch,
                        threshold=scorer.threshold,
                        metrics=dict(scorer.meta.metrics),
                    )
                )
    except IntegrityError:
        pass  # another worker registered the same checkpoint at the same moment


def local_fetch_threads(settings: Settings) -> int:
    """Fetch/decode threads of a chunk of local files: as many as the cores, within DEEPSCAN_FETCH_THREADS."""
    return max(1, min(settings.fetch_threads, max(2, usable_cores())))


def local_decode_turns(settings: Settings) -> int:
    """How many chunks of local files decode at once: as many as it takes to keep the cores busy."""
    return max(1, usable_cores() // local_fetch_threads(settings))


_runtime: WorkerRuntime | None = None
_runtime_lock = threading.Lock()


def set_runtime(runtime: WorkerRuntime) -> None:
    global _runtime
    with _runtime_lock:
        _runtime = runtime


def loaded_runtime() -> WorkerRuntime | None:
    """The process's runtime if it has been loaded (a stopping worker must not start loading one)."""
    with _runtime_lock:
        return _runtime


def get_runtime() -> WorkerRuntime:
    """The process's runtime, loaded from the environment on first use."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = load_runtime(Settings.from_env())
        return _runtime
