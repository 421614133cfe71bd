"""Fetch one media item's bytes from a local file, HTTP(S) or S3, with every limit a public scanner needs.

`fetch(url, settings)` reads the first bytes, decides from them (never from the name or the
Content-Type) whether the item is an image or a video, then streams the rest under that kind's
byte cap: images into memory, videos into a temporary file (local videos are read in place).
It returns a `Fetched` with the content's sha256, or raises `PermanentError` with a one-line
reason a moderator can act on (`http 404`, `file not found`, `image exceeds 50 MB limit ...`).

Transient failures (connection errors, timeouts, HTTP 429/5xx, S3 throttling) are retried here,
`DEFAULT_FETCH_TRIES` times with exponential backoff from `DEFAULT_RETRY_BACKOFF_S`; when they
persist the item still ends with a PermanentError (`http 503 after 3 tries`), because an item
must end `error` with a reason rather than loop forever.

HTTP safety: redirects are followed here (at most `DEFAULT_MAX_REDIRECTS`), re-checking each hop
with the SSRF guard of `workers.ssrf` (private, loopback, link-local... addresses are refused
unless `settings.allow_private_urls`). Credentials and query strings never appear in log lines
or reasons.

Deadlines: an HTTP or S3 fetch runs under a `workers.cutoff.Cutoff`, so its connection is shut
down when the item's deadline passes, whether the server is slow with its headers, its body or
its first bytes; the fetch then fails with DeadlineExceededError (`image deadline of 30 s exceeded
while fetching`). A video's deadline grows with the bytes it delivers.

Thread use: call `fetch` from many threads; give each thread its own `requests.Session`
(`make_http_session`); one boto3 client may be shared.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import re
import stat
import tempfile
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urljoin

import requests
import urllib3

from scanner.deadline import ItemBudget
from scanner.errors import DeadlineExceededError, PermanentError, TransientError
from scanner.media import MediaKind, sniff_kind
from scanner.mediaurl import InvalidMediaUrlError, MediaUrl, is_allowed_local_path, scheme_of
from scanner.s3 import make_s3_client
from scanner.settings import Settings
from workers.cutoff import Cutoff, watch_s3_connections
from workers.ssrf import check_host, make_http_session

logger = logging.getLogger(__name__)

DEFAULT_FETCH_TRIES = 3  # attempts per item for transient failures, the first included
DEFAULT_RETRY_BACKOFF_S = 0.5  # wait before the first retry; doubles for each further one
DEFAULT_MAX_REDIRECTS = 5
DEFAULT_CHUNK_BYTES = 256 * 1024  # read size while streaming
SNIFF_BYTES = 512  # bytes read before deciding image or video (sniff_kind needs up to 189)

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_S3_NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound"})
_S3_DENIED = frozenset({"AccessDenied", "403", "Forbidden", "AllAccessDisabled"})
_S3_RETRYABLE = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "RequestTimeout", "InternalError"}
    | {"ServiceUnavailable", "500", "502", "503", "504"}
)
_SAFE_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,5}")


@dataclass(eq=False)
class Fetched:
    """One fetched item. Images carry `data`; videos carry `path` (call `close()` or use `with`)."""

    url: str
    kind: MediaKind
    size: int
    sha256: str
    etag: str | None = None
    data: bytes | None = field(default=None, repr=False)
    path: Path | None = None
    owns_path: bool = False  # True when `path` is a temporary copy that `close()` deletes
    _cleanup: weakref.finalize[Any, Any] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.owns_path and self.path is not None:
            # Deleted at close(), or when this object is garbage collected if the caller forgets.
            self._cleanup = weakref.finalize(self, _unlink_quietly, self.path)

    def close(self) -> None:
        """Delete the temporary file this item owns (a no-op for images and local videos)."""
        if self._cleanup is not None:
            self._cleanup()

    def __enter__(self) -> Fetched:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _give_up(exc: TransientError, tries: int) -> PermanentError:
    """The item's final reason once a transient failure outlasted every try."""
    reason = str(exc)
    return PermanentError(
        f"{reason} after {tries} tries" if reason.startswith("http ") else f"{reason} ({tries} tries)"
    )


# --- the entry point ----------------------------------------------------------------------------


def fetch(
    url: MediaUrl | str,
    settings: Settings,
    *,
    s3_client: Any = None,
    http: requests.Session | None = None,
    budget: ItemBudget | None = None,
) -> Fetched:
    """Fetch `url` (file://, http(s)://, s3://) under the settings' caps; PermanentError on failure.

    `budget` bounds the whole fetch, retries included (default: `settings.item_deadline_s`, more
    for videos by size): whatever the server does, the fetch fails with DeadlineExceededError once
    the deadline has passed, its connection cut off.
    """
    try:
        ref = url if isinstance(url, MediaUrl) else MediaUrl.parse(url)
    except InvalidMediaUrlError as exc:
        raise PermanentError(str(exc)) from None
    budget = budget if budget is not None else item_budget(settings)
    if ref.scheme == "file":
        return _fetch_local(ref, settings, budget)
    if ref.scheme in ("http", "https"):
        session = http if http is not None else make_http_session(settings)
        try:
            return _cut_off_at_deadline(ref, budget, lambda: _fetch_http(ref, settings, session, budget))
        finally:
            if http is None:
                session.close()
    if ref.scheme == "s3":
        client = watch_s3_connections(s3_client if s3_client is not None else make_s3_client(settings, attempts=1))
        return _cut_off_at_deadline(ref, budget, lambda: _fetch_s3(ref, settings, client, budget))
    raise PermanentError("not a URL (expected file://, http(s)://, s3://)")


def item_budget(settings: Settings) -> ItemBudget:
    """The time budget of one item's fetch and decode, starting now."""
    return ItemBudget(settings.item_deadline_s, settings.video_deadline_s_per_gb)


def _cut_off_at_deadline(url: MediaUrl, budget: ItemBudget, attempt: Callable[[], Fetched]) -> Fetched:
    """Run the tries of a network fetch with their connections cut off at the item's deadline.

    However the cut shows up (a dropped connection, a TLS error, an incomplete body), the item's
    reason is the deadline. A cut made because the worker is stopping is no deadline: it fails as
    a transient error, and the stopping worker hands the item back.
    """
    with Cutoff(lambda: budget.current().at) as cutoff:
        try:
            return _with_retries(url, budget, attempt, cutoff)
        except DeadlineExceededError:
            raise
        except Exception as exc:
            if budget.current().expired():
                raise DeadlineExceededError(budget.current().reason("fetching")) from None
            if cutoff.fired:
                raise TransientError("fetch cut off: the worker is stopping") from exc
            raise


def _with_retries(url: MediaUrl, budget: ItemBudget, attempt: Callable[[], Fetched], cutoff: Cutoff) -> Fetched:
    tries = DEFAULT_FETCH_TRIES
    for number in range(1, tries + 1):
        try:
            return attempt()
        except TransientError as exc:
            budget.current().check("fetching")  # a timeout caused by the deadline is the deadline's
            if cutoff.fired:
                raise
            if number == tries:
                raise _give_up(exc, tries) from None
            delay_s = DEFAULT_RETRY_BACKOFF_S * 2 ** (number - 1)
            if delay_s >= budget.current().remaining():
                raise DeadlineExceededError(
                    budget.current().reason(f"fetching ({exc}, no time left to retry)")
                ) from None
            logger.info("fetch of %s failed (%s); retry %d in %.1f s", url.redacted, exc, number, delay_s)
            time.sleep(delay_s)
    raise AssertionError("unreachable: the last try returns or raises")


def format_bytes(count: int) -> str:
    """A byte count the way a person writes it: 50 MB, 2 GB, 1.5 KB (binary units)."""
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if count >= size:
            return f"{round(count / size, 1):g} {unit}"
    return f"{count} bytes"


# --- receiving: sniff, cap, hash, store ---------------------------------------------------------


class _Sink(Protocol):
    def write(self, chunk: bytes) -> None: ...
    def finish(self) -> tuple[bytes | None, Path | None, bool]: ...
    def discard(self) -> None: ...


class _MemorySink:
    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def write(self, chunk: bytes) -> None:
        self._chunks.append(chunk)

    def finish(self) -> tuple[bytes | None, Path | None, bool]:
        return b"".join(self._chunks), None, False

    def discard(self) -> None:
        self._chunks.clear()


class _TempFileSink:
    def __init__(self, suffix: str) -> None:
        self._file = tempfile.NamedTemporaryFile(prefix="deepscan-", suffix=suffix, delete=False)  # noqa: SIM115

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)

    def finish(self) -> tuple[bytes | None, Path | None, bool]:
        self._file.close()
        return None, Path(self._file.name), True

    def discard(self) -> None:
        self._file.close()
        _unlink_quietly(Path(self._file.name))


class _InPlaceSink:
    """For local videos: hash the bytes, keep nothing, hand back the file itself."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def write(self, chunk: bytes) -> None:
        pass

    def finish(self) -> tuple[bytes | None, Path | None, bool]:
        return None, self._path, False

    def discard(self) -> None:
        pass


def _unlink_quietly(path: Path) -> None:
    path.unlink(missing_ok=True)


@dataclass(frozen=True)
class _Origin:
    url: MediaUrl
    etag: str | None
    declared_size: int | None
    local_path: Path | None = None  # set for local files: videos are read in place


def _receive(chunks: Iterable[bytes], origin: _Origin, settings: Settings, budget: ItemBudget) -> Fetched:
    """Sniff the kind from the first bytes, then stream the rest under that kind's cap."""
    stream = iter(chunks)
    head = b""
    for chunk in stream:
        head += chunk
        if len(head) >= SNIFF_BYTES:
            break
        budget.current().check("fetching")  # a server may dribble even the first bytes
    if not head:
        raise PermanentError("empty file (0 bytes)")
    kind = sniff_kind(head)
    if kind == "unknown":
        raise PermanentError("not an image or video")
    limit = settings.max_image_bytes if kind == "image" else settings.max_video_bytes
    if origin.declared_size is not None and origin.declared_size > limit:
        raise _too_big(kind, limit)
    sink = _sink_for(kind, origin)
    try:
        size, digest = _drain(itertools.chain((head,), stream), sink, kind, limit, budget)
        data, path, owns = sink.finish()
    except BaseException:
        sink.discard()
        raise
    return Fetched(origin.url.text, kind, size, digest, _clean_etag(origin.etag), data=data, path=path, owns_path=owns)


def _sink_for(kind: MediaKind, origin: _Origin) -> _Sink:
    if kind == "image":
        return _MemorySink()
    if origin.local_path is not None:
        return _InPlaceSink(origin.local_path)
    suffix = origin.url.suffix
    return _TempFileSink(suffix if _SAFE_SUFFIX.fullmatch(suffix) else ".video")


def _drain(chunks: Iterator[bytes], sink: _Sink, kind: MediaKind, limit: int, budget: ItemBudget) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise _too_big(kind, limit)
        budget.learn(kind, size)  # a video earns time by the bytes it delivers
        budget.current().check("fetching")
        digest.update(chunk)
        sink.write(chunk)
    return size, digest.hexdigest()


def _too_big(kind: MediaKind, limit: int) -> PermanentError:
    return PermanentError(f"{kind} exceeds {format_bytes(limit)} limit (DEEPSCAN_MAX_{kind.upper()}_BYTES)")


def _clean_etag(etag: str | None) -> str | None:
    return etag.strip().strip('"') if etag else None


# --- local files --------------------------------------------------------------------------------


def _fetch_local(url: MediaUrl, settings: Settings, budget: ItemBudget) -> Fetched:
    assert url.path is not None  # every parsed file:// URL has one
    # Resolving walks every component of the path (a system call each): only done where the roots
    # are checked, and then the resolved path is the one opened.
    path = url.path.resolve() if settings.local_roots else url.path
    if not is_allowed_local_path(path, settings):
        raise PermanentError("refused: file is outside the allowed local roots (DEEPSCAN_LOCAL_ROOTS)")
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # checked before open(): opening a FIFO would block
            raise PermanentError("not a regular file")
        with path.open("rb") as fh:
            chunks = iter(lambda: fh.read(DEFAULT_CHUNK_BYTES), b"")
            return _receive(chunks, _Origin(url, None, info.st_size, local_path=path), settings, budget)
    except FileNotFoundError:
        raise PermanentError("file not found") from None
    except PermissionError:
        raise PermanentError("permission denied reading file") from None
    except OSError as exc:
        raise PermanentError(f"cannot read file: {exc.strerror or type(exc).__name__}") from None


# --- HTTP(S) ------------------------------------------------------------------------------------


def _fetch_http(url: MediaUrl, settings: Settings, session: requests.Session, budget: ItemBudget) -> Fetched:
    host = url.host
    try:
        response = _open_following_redirects(url, settings, session, budget)
        with response:
            declared = response.headers.get("Content-Length")
            size = int(declared) if declared and declared.isdigit() else None
            origin = _Origin(url, response.headers.get("ETag"), size)
            return _receive(_body_chunks(response.raw, budget, settings), origin, settings, budget)
    except (requests.ReadTimeout, urllib3.exceptions.ReadTimeoutError, TimeoutError):
        raise TransientError(f"timed out after {settings.http_read_timeout_s:g} s") from None
    except urllib3.exceptions.ProtocolError:
        raise TransientError(f"connection to {host} dropped mid-download") from None
    except urllib3.exceptions.DecodeError:
        raise PermanentError("response body is not valid for its Content-Encoding") from None
    except requests.ConnectTimeout:
        raise TransientError(f"connection to {host} timed out after {settings.http_connect_timeout_s:g} s") from None
    except requests.exceptions.SSLError:
        raise PermanentError(f"TLS error with {host} (certificate not trusted?)") from None
    except requests.ConnectionError as exc:
        if _caused_by_read_timeout(exc):
            raise TransientError(f"timed out after {settings.http_read_timeout_s:g} s") from None
        raise TransientError(f"connection to {host} failed") from None
    except requests.exceptions.ChunkedEncodingError:
        raise TransientError(f"connection to {host} dropped mid-download") from None
    except requests.exceptions.ContentDecodingError:
        raise PermanentError("response body is not valid for its Content-Encoding") from None
    except requests.exceptions.InvalidURL:
        raise PermanentError("invalid URL") from None


def _body_chunks(raw: Any, budget: ItemBudget, settings: Settings) -> Iterator[bytes]:
    """The body of a streaming urllib3 response (HTTP or S3) as it arrives: each read returns after
    at most one receive from the socket.

    `iter_content` or botocore's `iter_chunks` would block inside one read until a whole 256 KB chunk
    came in, so a video would earn its time in 256 KB steps and the deadline would be checked that
    rarely. The socket's timeout is also cut to the time left; the connection's cutoff is the backstop.
    """
    while True:
        _limit_socket_wait(raw, min(settings.http_read_timeout_s, budget.current().remaining() + 0.05))
        chunk = raw.read1(DEFAULT_CHUNK_BYTES, decode_content=True)
        if not chunk:
            return
        yield chunk


def _limit_socket_wait(raw: Any, seconds: float) -> None:
    """Set the socket timeout of a streaming urllib3 response, when its socket is reachable."""
    sock = getattr(getattr(raw, "_connection", None), "sock", None)
    if sock is not None:
        sock.settimeout(max(seconds, 0.01))


def _caused_by_read_timeout(exc: requests.ConnectionError) -> bool:
    """requests reports a read timeout while streaming the body as a ConnectionError."""
    return any(isinstance(arg, urllib3.exceptions.ReadTimeoutError) for arg in exc.args)


def _open_following_redirects(
    start: MediaUrl, settings: Settings, session: requests.Session, budget: ItemBudget
) -> requests.Response:
    """GET `start`, following up to DEFAULT_MAX_REDIRECTS redirects, each hop checked like the first."""
    url = start
    for _hop in range(DEFAULT_MAX_REDIRECTS + 1):
        _check_http_url(url, settings)
        # The connect is the one step no cutoff reaches (there is no socket to shut down yet).
        connect_s = max(0.01, min(settings.http_connect_timeout_s, budget.current().remaining()))
        response = session.get(
            url.text, stream=True, allow_redirects=False, timeout=(connect_s, settings.http_read_timeout_s)
        )
        location = response.headers.get("Location")
        if response.status_code in _REDIRECT_STATUSES and location:
            response.close()
            url = _redirect_target(urljoin(url.text, location))
            continue
        _check_status(response)
        return response
    raise PermanentError(f"too many redirects (more than {DEFAULT_MAX_REDIRECTS})")


def _check_status(response: requests.Response) -> None:
    code = response.status_code
    if 200 <= code < 300:
        return
    response.close()
    if code == 429 or code >= 500:
        raise TransientError(f"http {code}")
    raise PermanentError(f"http {code}")


def _redirect_target(text: str) -> MediaUrl:
    """Where a redirect points, refused unless it is an HTTP(S) URL a fetch can follow."""
    scheme = scheme_of(text)
    if scheme not in ("http", "https"):
        raise PermanentError(f"refused: redirect to unsupported URL scheme {scheme!r}")
    try:
        return MediaUrl.parse(text)
    except InvalidMediaUrlError as exc:
        raise PermanentError(f"refused: redirect to an invalid URL ({exc})") from None


def _check_http_url(url: MediaUrl, settings: Settings) -> None:
    """Refuse (unless allowed) hosts that resolve to non-public addresses."""
    if not settings.allow_private_urls:
        assert url.host is not None  # every parsed http(s) URL has a host
        check_host(url.host, url.port or 0)


# --- S3 -----------------------------------------------------------------------------------------


def _fetch_s3(url: MediaUrl, settings: Settings, client: Any, budget: ItemBudget) -> Fetched:
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = url.bucket, url.key
    if not key:
        raise PermanentError("s3 URL names no object key")
    try:
        obj = client.get_object(Bucket=bucket, Key=key)
        body = obj["Body"]
        try:
            origin = _Origin(url, obj.get("ETag"), obj.get("ContentLength"))
            return _receive(_body_chunks(body._raw_stream, budget, settings), origin, settings, budget)
        finally:
            body.close()
    except ClientError as exc:
        raise _s3_client_error(exc) from None
    except (BotoCoreError, urllib3.exceptions.HTTPError) as exc:
        raise _s3_transport_error(exc, settings) from None


def _s3_client_error(exc: Any) -> Exception:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    if code in _S3_NOT_FOUND:
        return PermanentError("s3 object not found")
    if code == "NoSuchBucket":
        return PermanentError("s3 bucket not found")
    if code in _S3_DENIED:
        return PermanentError("s3 access denied (check the worker's AWS credentials and the bucket policy)")
    if code == "InvalidObjectState":
        return PermanentError("s3 object is archived (restore it from Glacier first)")
    if code in _S3_RETRYABLE:
        return TransientError(f"s3 {code}")
    return PermanentError(f"s3 error {code or 'unknown'}")


def _s3_transport_error(exc: Exception, settings: Settings) -> Exception:
    from botocore.exceptions import NoCredentialsError, ParamValidationError, ReadTimeoutError

    if isinstance(exc, ParamValidationError):  # botocore refused the request before sending it
        return PermanentError(f"invalid s3 request: {str(exc).splitlines()[-1].strip()[:200]}")
    if isinstance(exc, NoCredentialsError):
        return PermanentError("no AWS credentials for s3 (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE)")
    if isinstance(exc, ReadTimeoutError | urllib3.exceptions.ReadTimeoutError):
        return TransientError(f"s3 timed out after {settings.http_read_timeout_s:g} s")
    return TransientError(f"s3 unreachable ({type(exc).__name__})")
