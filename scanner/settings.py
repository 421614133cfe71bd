"""One typed settings object, built from `DEEPSCAN_*` environment variables.

Nothing reads the environment at import time: a process calls `Settings.from_env()` once at
start (the CLI does it in its root group) and passes the object down. CLI options mirror these
variables through Click's `envvar=`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from scanner.errors import ConfigError

DEFAULT_BATCH_SIZE = 32
DEFAULT_FETCH_THREADS = 8
DEFAULT_BATCH_WAIT_MS = 10.0  # longest a model input waits for others to fill its batch before a partial batch runs
DEFAULT_WORKER_CONCURRENCY = 2  # chunks a `deepscan worker` process holds at once (threads sharing one model)
DEFAULT_MAX_IMAGE_BYTES = 50 * 1024 * 1024
DEFAULT_MAX_VIDEO_BYTES = 2 * 1024 * 1024 * 1024
DEFAULT_HTTP_CONNECT_TIMEOUT_S = 5.0
DEFAULT_HTTP_READ_TIMEOUT_S = 30.0
DEFAULT_QUEUE = "deepscan"
DEFAULT_ITEM_DEADLINE_S = 30.0  # fetch + decode of one image; videos get more, by size
DEFAULT_VIDEO_DEADLINE_S_PER_GB = 300.0  # extra fetch + decode time a video earns per GiB
DEFAULT_DECODE_BUDGET_MPIX = 128.0  # megapixels of images one worker process decodes at once (~7 bytes each)
DEFAULT_LEASE_S = 120.0  # how long a claimed item stays another worker's before it may be taken over
DEFAULT_MAX_ATTEMPTS = 3  # claims of one item before it ends `error` ("gave up after 3 attempts")
DEFAULT_RECONCILE_INTERVAL_S = 60.0  # how often `deepscan beat` re-enqueues expired and lost items
# A queued item this much older than the oldest chunk waiting in the queue (or than now, when none
# waits) lost its message: a worker took it and died before claiming it (workers/broker.py).
DEFAULT_REQUEUE_AFTER_S = 120.0
DEVICE_CHOICES = ("auto", "cpu", "cuda")
# The model's arithmetic: auto = bf16 where the device runs it natively, else fp32 (scanner/precision.py).
PRECISION_CHOICES = ("auto", "fp32", "bf16")
DEFAULT_PRECISION = "auto"


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_home(env: Mapping[str, str]) -> Path:
    """Where deepscan keeps its embedded database and demo files when nothing else is said."""
    if env.get("DEEPSCAN_HOME"):
        return Path(env["DEEPSCAN_HOME"]).expanduser()
    xdg = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "deepscan"


def validate_device(device: str) -> str:
    """Accept auto, cpu, cuda or cuda:N; raise ConfigError for anything else."""
    base, _, index = device.partition(":")
    if base not in DEVICE_CHOICES or (index and (base != "cuda" or not index.isdigit())):
        raise ConfigError(f"invalid device {device!r}: use auto, cpu, cuda or cuda:N")
    return device


def validate_precision(precision: str) -> str:
    """Accept auto, fp32 or bf16; raise ConfigError for anything else."""
    if precision not in PRECISION_CHOICES:
        raise ConfigError(f"invalid precision {precision!r}: use {', '.join(PRECISION_CHOICES)}")
    return precision


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    value = _float(env, name, default)
    if not value > 0:
        raise ConfigError(f"{name}={env.get(name)!r} must be a positive number of seconds")
    return value


def _non_negative(env: Mapping[str, str], name: str, default: float) -> float:
    value = _float(env, name, default)
    if value < 0:
        raise ConfigError(f"{name}={env.get(name)!r} must be zero or a positive number")
    return value


def _positive_mpix(env: Mapping[str, str]) -> float:
    name = "DEEPSCAN_DECODE_BUDGET_MPIX"
    value = _float(env, name, DEFAULT_DECODE_BUDGET_MPIX)
    if not value > 0:
        raise ConfigError(f"{name}={env.get(name)!r} must be a positive number of megapixels")
    return value


def _at_least_one(env: Mapping[str, str], name: str, default: int) -> int:
    value = _int(env, name, default)
    if value < 1:
        raise ConfigError(f"{name}={env.get(name)!r} must be 1 or more")
    return value


def _flag(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    """1/true/yes/on and 0/false/no/off; unset or empty gives `default`."""
    raw = env.get(name, "").strip().lower()
    if default:
        return raw not in {"0", "false", "no", "off"}
    return raw in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    """Everything a deepscan process needs to know about its environment."""

    home: Path
    database_url: str
    broker_url: str | None = None
    checkpoint: Path | None = None
    device: str = "auto"
    precision: str = DEFAULT_PRECISION
    s3_endpoint_url: str | None = None
    queue: str = DEFAULT_QUEUE
    batch_size: int = DEFAULT_BATCH_SIZE
    fetch_threads: int = DEFAULT_FETCH_THREADS
    batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS
    # JPEGs decoded by nvJPEG on the GPU when the device is CUDA (workers/gpudecode.py); off: every
    # image decodes on the CPU as on a CPU-only machine.
    gpu_decode: bool = True
    compile_model: bool = False  # torch.compile the model at start (minutes of start-up, faster batches)
    worker_concurrency: int = DEFAULT_WORKER_CONCURRENCY
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    max_video_bytes: int = DEFAULT_MAX_VIDEO_BYTES
    http_connect_timeout_s: float = DEFAULT_HTTP_CONNECT_TIMEOUT_S
    http_read_timeout_s: float = DEFAULT_HTTP_READ_TIMEOUT_S
    allow_private_urls: bool = False
    local_roots: tuple[Path, ...] = field(default_factory=tuple)
    item_deadline_s: float = DEFAULT_ITEM_DEADLINE_S
    video_deadline_s_per_gb: float = DEFAULT_VIDEO_DEADLINE_S_PER_GB
    decode_budget_mpix: float = DEFAULT_DECODE_BUDGET_MPIX
    lease_s: float = DEFAULT_LEASE_S
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    reconcile_interval_s: float = DEFAULT_RECONCILE_INTERVAL_S
    requeue_after_s: float = DEFAULT_REQUEUE_AFTER_S
    # Signs every webhook delivery (HMAC-SHA256); kept out of repr so logging the settings never shows it.
    webhook_secret: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build the settings from `env` (default: `os.environ`)."""
        env = os.environ if env is None else env
        home = default_home(env)
        checkpoint = env.get("DEEPSCAN_CHECKPOINT")
        roots = env.get("DEEPSCAN_LOCAL_ROOTS", "")
        return cls(
            home=home,
            database_url=env.get("DEEPSCAN_DATABASE_URL") or f"sqlite:///{home / 'deepscan.db'}",
            broker_url=env.get("DEEPSCAN_BROKER_URL") or None,
            checkpoint=Path(checkpoint).expanduser() if checkpoint else None,
            device=validate_device(env.get("DEEPSCAN_DEVICE") or "auto"),
            precision=validate_precision(env.get("DEEPSCAN_PRECISION") or DEFAULT_PRECISION),
            s3_endpoint_url=env.get("DEEPSCAN_S3_ENDPOINT_URL") or None,
            queue=env.get("DEEPSCAN_QUEUE") or DEFAULT_QUEUE,
            batch_size=_int(env, "DEEPSCAN_BATCH_SIZE", DEFAULT_BATCH_SIZE),
            fetch_threads=_int(env, "DEEPSCAN_FETCH_THREADS", DEFAULT_FETCH_THREADS),
            batch_wait_ms=_non_negative(env, "DEEPSCAN_BATCH_WAIT_MS", DEFAULT_BATCH_WAIT_MS),
            gpu_decode=_flag(env, "DEEPSCAN_GPU_DECODE", default=True),
            compile_model=_flag(env, "DEEPSCAN_COMPILE"),
            worker_concurrency=_at_least_one(env, "DEEPSCAN_WORKER_CONCURRENCY", DEFAULT_WORKER_CONCURRENCY),
            max_image_bytes=_int(env, "DEEPSCAN_MAX_IMAGE_BYTES", DEFAULT_MAX_IMAGE_BYTES),
            max_video_bytes=_int(env, "DEEPSCAN_MAX_VIDEO_BYTES", DEFAULT_MAX_VIDEO_BYTES),
            http_connect_timeout_s=_float(env, "DEEPSCAN_HTTP_CONNECT_TIMEOUT_S", DEFAULT_HTTP_CONNECT_TIMEOUT_S),
            http_read_timeout_s=_float(env, "DEEPSCAN_HTTP_READ_TIMEOUT_S", DEFAULT_HTTP_READ_TIMEOUT_S),
            allow_private_urls=_flag(env, "DEEPSCAN_ALLOW_PRIVATE_URLS"),
            local_roots=tuple(Path(p).expanduser().resolve() for p in roots.split(os.pathsep) if p),
            item_deadline_s=_positive(env, "DEEPSCAN_ITEM_DEADLINE_S", DEFAULT_ITEM_DEADLINE_S),
            video_deadline_s_per_gb=_float(env, "DEEPSCAN_VIDEO_DEADLINE_S_PER_GB", DEFAULT_VIDEO_DEADLINE_S_PER_GB),
            decode_budget_mpix=_positive_mpix(env),
            lease_s=_positive(env, "DEEPSCAN_LEASE_S", DEFAULT_LEASE_S),
            max_attempts=max(1, _int(env, "DEEPSCAN_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS)),
            reconcile_interval_s=_positive(env, "DEEPSCAN_RECONCILE_INTERVAL_S", DEFAULT_RECONCILE_INTERVAL_S),
            requeue_after_s=_positive(env, "DEEPSCAN_REQUEUE_AFTER_S", DEFAULT_REQUEUE_AFTER_S),
            webhook_secret=env.get("DEEPSCAN_WEBHOOK_SECRET") or None,
        )

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with the given fields replaced; `None` values leave a field as it is."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[arg-type]

    @property
    def embedded(self) -> bool:
        """True when no broker is configured: scans run in-process."""
        return self.broker_url is None
