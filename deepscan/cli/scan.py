"""`deepscan scan` (the producer) and `deepscan worker` (a Celery worker process)."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import click

from deepscan.cli.context import EXIT_FAILURE, EXIT_ITEM_ERRORS, AppContext, pass_app
from deepscan.cli.options import (
    batch_size_option,
    checkpoint_option,
    device_option,
    precision_option,
    require_checkpoint,
    webhook_option,
)
from deepscan.cli.output import RECORD_FORMATS, counted, format_option
from scanner.aggregation import DEFAULT_VIDEO_STRATEGY, validate_strategy
from scanner.errors import ConfigError
from scanner.jobs import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_FPS,
    DEFAULT_LOCAL_CHUNK_SIZE,
    DEFAULT_MAX_FRAMES,
    JobCounts,
    ScanOptions,
)
from scanner.settings import Settings
from workers.metrics import DEFAULT_METRICS_HOST


def _strategy(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    try:
        return validate_strategy(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _finite(_ctx: click.Context, _param: click.Parameter, value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):  # FloatRange lets nan through
        raise click.BadParameter(f"{value} is not a number between 0 and 1")
    return value


_SCAN_OPTIONS = (
    click.option(
        "--threshold",
        type=click.FloatRange(0, 1),
        callback=_finite,
        help="Override the checkpoint's calibrated threshold.",
    ),
    click.option(
        "--fps",
        type=click.FloatRange(min=0, min_open=True),
        default=DEFAULT_FPS,
        show_default=True,
        help="Video frames sampled per second.",
    ),
    click.option(
        "--max-frames",
        type=click.IntRange(min=1),
        default=DEFAULT_MAX_FRAMES,
        show_default=True,
        help="At most this many frames per video, spread over its whole duration.",
    ),
    click.option(
        "--faces/--no-faces",
        default=True,
        show_default=True,
        help="Show the model faces the way its checkpoint's face view was trained (see `deepscan train "
        "--face-view`); --no-faces scores whole images instead, and warns when the checkpoint was trained on faces.",
    ),
    click.option(
        "--thumbnails/--no-thumbnails",
        default=True,
        show_default=True,
        help="Keep a small JPEG (at most 160 px) of each item's top-scoring face, one per flagged video "
        "segment, and the evidence (the whole image, or a video's top frames, at most 640 px) for the review "
        "console (`deepscan serve`), which never fetches a source itself.",
    ),
    click.option(
        "--strategy",
        default=DEFAULT_VIDEO_STRATEGY,
        show_default=True,
        callback=_strategy,
        help=(
            "How frame scores become a video score: segments (fake exactly when the timeline has a "
            "flagged range), segmentsN (runs of at least N samples), mean, max or topK_mean."
        ),
    ),
    click.option(
        "--chunk-size",
        type=click.IntRange(min=1),
        default=None,
        help=(
            f"Items per task message [default: {DEFAULT_LOCAL_CHUNK_SIZE} when every item is a local file, "
            f"{DEFAULT_CHUNK_SIZE} otherwise]."
        ),
    ),
    click.option("--include", multiple=True, metavar="GLOB", help="Only paths/keys matching GLOB (repeatable)."),
    click.option("--exclude", multiple=True, metavar="GLOB", help="Skip paths/keys matching GLOB (repeatable)."),
    click.option("--rescan", is_flag=True, help="Score again even when an earlier verdict for the same bytes exists."),
)


def scan_option_decorators(command: Any) -> Any:
    """The options that describe how to scan, shared by `scan` and `schedule add`."""
    for decorator in reversed(_SCAN_OPTIONS):
        command = decorator(command)
    return command


SCAN_OPTION_NAMES = (
    "threshold",
    "fps",
    "max_frames",
    "faces",
    "strategy",
    "chunk_size",
    "include",
    "exclude",
    "rescan",
    "thumbnails",
)


def scan_options_from(params: dict[str, Any]) -> ScanOptions:
    """Pop the scan options out of a command's parameters."""
    values = {name: params.pop(name) for name in SCAN_OPTION_NAMES}
    values["include"], values["exclude"] = tuple(values["include"]), tuple(values["exclude"])
    return ScanOptions(**values)


@click.command()
@click.argument("sources", nargs=-1)
@click.option("--from-file", "from_file", metavar="FILE", help="Read URLs from FILE, one per line (`-` for stdin).")
@click.option(
    "--name", help="A name for the job, redacted and cut to 200 characters [default: the first source, redacted]."
)
@checkpoint_option
@device_option
@precision_option
@batch_size_option
@scan_option_decorators
@click.option(
    "--wait/--no-wait",
    default=False,
    help="With a broker, wait until the workers finish the job (embedded mode always waits).",
)
@click.option(
    "--s3-endpoint-url",
    envvar="DEEPSCAN_S3_ENDPOINT_URL",
    metavar="URL",
    help="S3-compatible endpoint [env DEEPSCAN_S3_ENDPOINT_URL].",
)
@webhook_option
@format_option(*RECORD_FORMATS)
@pass_app
def scan(app: AppContext, /, sources: tuple[str, ...], from_file: str | None, name: str | None, **opts: Any) -> None:
    """Scan SOURCES for manipulated faces and store a verdict for every item.

    \b
    SOURCES may be local files, folders (recursive) and globs, file://, http(s):// URLs,
    s3://bucket/prefix, or `-` to read URLs from stdin. Without a broker the scan runs in this
    process against the embedded database (created on first use); with DEEPSCAN_BROKER_URL it
    enqueues work for `deepscan worker` processes.

    \b
    Sources are checked before the model loads: a missing path or an unknown URL scheme is a
    usage error (exit 2), and sources with no media at all fail (exit 1) without creating a job.
    Exit codes: 0 every item done, 3 done with item errors, 1 the job failed (or had nothing to
    scan), 2 usage error (a bad source, no checkpoint).
    """
    from scanner.launch import check_sources, launch_scan
    from scanner.producer import ScanRequest

    if not sources and not from_file:
        raise click.UsageError("give at least one SOURCE or --from-file FILE")
    settings = app.settings.with_overrides(
        checkpoint=opts.pop("checkpoint"),
        device=opts.pop("device"),
        precision=opts.pop("precision"),
        batch_size=opts.pop("batch_size"),
        s3_endpoint_url=opts.pop("s3_endpoint_url"),
    )
    output_format, wait, webhook = opts.pop("output_format"), opts.pop("wait"), opts.pop("webhook")
    options = scan_options_from(opts)
    all_sources = list(sources) + ([f"@{from_file}"] if from_file else [])
    request = ScanRequest(all_sources, options, name=name, webhook=webhook)
    try:
        check_sources(settings, request)  # before any model loads or job exists; nothing to scan: exit 1
    except ConfigError as exc:  # a missing path, an unknown bucket or URL scheme: the command line is wrong
        raise click.UsageError(str(exc)) from None
    if settings.embedded:
        require_checkpoint(settings.checkpoint)
    _warn_on_face_view_override(settings, options)
    from workers.backend import scan_backend

    try:
        result = launch_scan(
            settings,
            app.engine,
            request,
            scan_backend(settings, app.engine),
            wait=wait or settings.embedded,
            stdin=sys.stdin,
            progress=app.show_progress(output_format),
        )
    except ConfigError as exc:  # a missing path, an unknown bucket: the command line is wrong
        raise click.UsageError(str(exc)) from None
    _print_summary(result.job_id, result.status, result.counts, result.elapsed_s, output_format, result.error)
    if result.status == "failed":
        sys.exit(EXIT_FAILURE)
    if result.counts.error:
        sys.exit(EXIT_ITEM_ERRORS)


def _warn_on_face_view_override(settings: Settings, options: ScanOptions) -> None:
    """`--no-faces` against a checkpoint trained on faces: its scores are not what evaluate measured."""
    if options.faces or settings.checkpoint is None or not settings.checkpoint.is_file():
        return
    from scanner.checkpoint_header import read_header_metadata  # the header alone: no torch in a producer
    from scanner.errors import CheckpointError, ConfigError
    from scanner.faces import FaceView

    try:
        view = FaceView.from_metadata(read_header_metadata(settings.checkpoint))
    except (CheckpointError, ConfigError):
        return  # the runtime reports a bad checkpoint with its own message
    if view.finds_faces:
        click.echo(
            f"warning: --no-faces scores whole images, but {settings.checkpoint.name} was trained on "
            f"{view.describe()}: scores will differ from what `deepscan evaluate` measured",
            err=True,
        )


def _print_summary(
    job_id: int, status: str, counts: JobCounts, elapsed_s: float, output_format: str, error: str | None
) -> None:
    rate = counts.scanned / elapsed_s if elapsed_s > 0 else 0.0
    if output_format == "json":
        click.echo(
            json.dumps(
                {
                    "job_id": job_id,
                    "status": status,
                    "error": error,
                    "total": counts.total,
                    "queued": counts.queued,
                    "processing": counts.processing,
                    "done": counts.done,
                    "errors": counts.error,
                    "flagged": counts.flagged,
                    "reused": counts.reused,
                    "elapsed_s": round(elapsed_s, 3),
                    "items_per_s": round(rate, 2),
                }
            )
        )
        return
    click.echo(f"job {job_id}: {status}")
    if error:
        click.echo(f"  error: {error}")
    click.echo(
        f"  {counted(counts.total, 'item')}: {counts.done} done ({counts.flagged} flagged fake, "
        f"{counted(counts.reused, 'reused earlier verdict')}), {counted(counts.error, 'error')}, "
        f"{counts.queued + counts.processing} pending; "
        f"{elapsed_s:.1f} s, {rate:.1f} items/s"
    )
    if counts.scanned:
        click.echo(f"  see: deepscan results --job {job_id}  (--verdict fake: flagged; --status error: errors)")


@click.command()
@checkpoint_option
@device_option
@precision_option
@batch_size_option
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    envvar="DEEPSCAN_WORKER_CONCURRENCY",
    help="Chunks held and processed at once by threads sharing one loaded model and one batcher: with 2, "
    "one chunk decodes while the other is scored and stored; 1 uses the solo pool "
    "[env DEEPSCAN_WORKER_CONCURRENCY; default 2].",
)
@click.option(
    "--gpu-decode/--no-gpu-decode",
    default=None,
    help="On CUDA, decode JPEGs of jobs without face detection on the GPU (nvJPEG) "
    "[env DEEPSCAN_GPU_DECODE; default on].",
)
@click.option(
    "--compile",
    "compile_model",
    is_flag=True,
    default=None,
    help="torch.compile the model before taking work: faster batches, at a start-up cost of tens of seconds "
    "to minutes (logged) paid by every worker start [env DEEPSCAN_COMPILE; default off].",
)
@click.option("--queue", envvar="DEEPSCAN_QUEUE", help="Queue to consume [env DEEPSCAN_QUEUE; default deepscan].")
@click.option("--loglevel", default="INFO", show_default=True, help="Celery log level.")
@click.option(
    "--metrics-port",
    type=click.IntRange(min=1, max=65535),
    default=None,
    help="Serve Prometheus metrics (items by outcome, errors by reason, batch sizes, inference latency, "
    "time from enqueue to verdict) on this port at /metrics [default: off].",
)
@click.option(
    "--node-name",
    envvar="DEEPSCAN_WORKER_NAME",
    metavar="NAME@%h",
    help="This worker's Celery node name (%h: this host's name) [env DEEPSCAN_WORKER_NAME; "
    "default deepscan-QUEUE-PID@%h: one node per process, so `celery inspect ping` sees every worker].",
)
@click.option(
    "--metrics-host",
    envvar="DEEPSCAN_METRICS_HOST",
    default=DEFAULT_METRICS_HOST,
    show_default=True,
    help="Address the metrics port listens on; 0.0.0.0 for a scraper on another host [env DEEPSCAN_METRICS_HOST].",
)
@pass_app
def worker(
    app: AppContext,
    checkpoint: Path | None,
    device: str | None,
    precision: str | None,
    batch_size: int | None,
    concurrency: int | None,
    gpu_decode: bool | None,
    compile_model: bool | None,
    queue: str | None,
    loglevel: str,
    metrics_port: int | None,
    node_name: str | None,
    metrics_host: str,
) -> None:
    """Run a Celery worker that scans chunks from the queue (one process per GPU).

    The checkpoint is loaded once, before any work is taken; without a usable checkpoint the
    worker refuses to start. Runs Celery's threads pool (the solo pool with --concurrency 1): no
    forked children, so CUDA is safe. Every chunk the process holds feeds one dynamic batcher
    (workers/batching.py). `celery -A workers.app worker` works too, configured from the
    environment.
    """
    from workers.app import app as celery_app
    from workers.app import configure
    from workers.runtime import load_runtime, set_runtime

    settings = app.settings.with_overrides(
        checkpoint=checkpoint,
        device=device,
        precision=precision,
        batch_size=batch_size,
        queue=queue,
        worker_concurrency=concurrency,
        gpu_decode=gpu_decode,
        compile_model=compile_model,
    )
    if settings.broker_url is None:
        raise ConfigError("a worker needs a broker: set DEEPSCAN_BROKER_URL (e.g. redis://127.0.0.1:6379/0)")
    require_checkpoint(settings.checkpoint)
    set_runtime(load_runtime(settings))
    configure(settings)
    if metrics_port is not None:
        from workers.metrics import start_metrics_server

        start_metrics_server(metrics_port, metrics_host)
    celery_app.Worker(
        pool="solo" if settings.worker_concurrency == 1 else "threads",
        concurrency=settings.worker_concurrency,
        queues=[settings.queue],
        loglevel=loglevel,
        hostname=worker_node_name(settings.queue, node_name),
    ).start()


def worker_node_name(queue: str, pattern: str | None = None) -> str:
    """This worker's Celery node name: `pattern` (e.g. `deepscan-worker@%h`, one worker per container),
    else `deepscan-QUEUE-PID@HOST`, one per process, so `celery inspect` sees every worker of a host.
    `celery worker -n` expands `%h`; a Worker built in code does not, so it is expanded here."""
    from celery.utils.nodenames import host_format

    return str(host_format(pattern or f"deepscan-{queue}-{os.getpid()}@%h"))


COMMANDS: list[click.Command] = [scan, worker]
