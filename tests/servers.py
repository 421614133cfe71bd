"""Real servers on loopback for tests: an HTTP file server with misbehaving endpoints, and moto's S3.

`http_server(root)` serves the files under `root` and these special paths:

    /_status/<code>              answers <code> with an empty body (404, 500, 503, 429, ...)
    /_html-as-jpeg               an HTML page labelled `Content-Type: image/jpeg`
    /_slow/<seconds>/<file>      waits <seconds> before answering with <file> (read timeouts)
    /_stall/<seconds>/<file>     sends the headers and half of <file>, then waits (timeouts mid-body)
    /_trickle/<seconds>/<file>   sends <file> one byte every <seconds> (no read timeout ever fires)
    /_trickle10/<seconds>/<file> the same as an HTTP/1.0 response (the connection is not kept alive)
    /_trickle-headers/<seconds>/<file>  sends the status line and headers one byte every <seconds>
    /_redirect-loop              redirects to itself forever
    /_redirect/<n>/<file>        <n> redirects in a row, then <file>
    /_redirect-to?url=<url>      one redirect to an arbitrary URL (another host, another scheme)
    /_flaky/<n>/<file>           answers 503 to the first <n> requests for this path, then <file>
    /_no-length/<file>           <file> without a Content-Length (the body ends when the connection closes)

Files are served with `ETag: "<md5 of the bytes>"`, like S3 does for single-part uploads.

`s3_server()` runs moto's S3 on 127.0.0.1 with test credentials in the environment;
`s3_client(endpoint)` and `upload_folder(...)` prepare buckets. `trickling_s3_server(objects, seconds)`
speaks just enough S3 (ListObjectsV2, HeadObject, GetObject) to serve `objects` one byte every
`seconds`, as a hostile or overloaded S3-compatible endpoint would.
"""

from __future__ import annotations

import hashlib
import logging
import mimetypes
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.media_factory import HTML_BYTES

TEST_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a handler still sleeping in /_slow must not block shutdown

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root.resolve()
        self.hits: Counter[str] = Counter()
        self.lock = threading.Lock()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up on a slow endpoint are the point of those tests, not an error."""


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests assert on outcomes, not on the access log."""

    def do_GET(self) -> None:
        path = unquote(urlsplit(self.path).path)
        with self.server.lock:
            self.server.hits[path] += 1
            hits = self.server.hits[path]
        parts = path.strip("/").split("/", 2)
        route = parts[0]
        if route == "_status":
            self._send(int(parts[1]), b"")
        elif route == "_html-as-jpeg":
            self._send(200, HTML_BYTES, "image/jpeg")
        elif route == "_slow":
            time.sleep(float(parts[1]))
            self._send_file(parts[2])
        elif route == "_stall":
            self._send_stalled(float(parts[1]), parts[2])
        elif route == "_trickle":
            self._send_trickled(float(parts[1]), parts[2])
        elif route == "_trickle10":
            self.protocol_version = "HTTP/1.0"
            self._send_trickled(float(parts[1]), parts[2])
        elif route == "_trickle-headers":
            self._send_headers_trickled(float(parts[1]), parts[2])
        elif route == "_redirect-loop":
            self._redirect("/_redirect-loop")
        elif route == "_redirect":
            remaining = int(parts[1])
            self._redirect(f"/_redirect/{remaining - 1}/{parts[2]}" if remaining > 1 else f"/{parts[2]}")
        elif route == "_redirect-to":
            self._redirect(parse_qs(urlsplit(self.path).query)["url"][0])
        elif route == "_flaky":
            if hits <= int(parts[1]):
                self._send(503, b"")
            else:
                self._send_file(parts[2])
        elif route == "_no-length":
            self._send_file("/".join(parts[1:]), with_length=False)
        else:
            self._send_file(path)

    def _send(
        self, code: int, body: bytes, content_type: str = "text/plain", *, with_length: bool = True, etag: str = ""
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        if etag:
            self.send_header("ETag", f'"{etag}"')
        if with_length:
            self.send_header("Content-Length", str(len(body)))
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _file(self, rel: str) -> Path | None:
        target = (self.server.root / rel.lstrip("/")).resolve()
        return target if target.is_file() and target.is_relative_to(self.server.root) else None

    def _send_file(self, rel: str, *, with_length: bool = True) -> None:
        target = self._file(rel)
        if target is None:
            self._send(404, b"not found")
            return
        content_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        body = target.read_bytes()
        self._send(200, body, content_type, with_length=with_length, etag=hashlib.md5(body).hexdigest())

    def _send_stalled(self, seconds: float, rel: str) -> None:
        target = self._file(rel)
        body = target.read_bytes() if target else b"x" * 4096
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        time.sleep(seconds)

    def _send_trickled(self, seconds: float, rel: str) -> None:
        target = self._file(rel)
        body = target.read_bytes() if target else b"x" * 4096
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        trickle(self.wfile, body, seconds)

    def _send_headers_trickled(self, seconds: float, rel: str) -> None:
        target = self._file(rel)
        body = target.read_bytes() if target else b"x" * 4096
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nContent-Type: image/png\r\n\r\n".encode()
        self.close_connection = True
        trickle(self.wfile, head, seconds)


def trickle(out: Any, data: bytes, seconds: float) -> None:
    """Write `data` one byte every `seconds`, until done or the client hangs up."""
    try:
        for i in range(len(data)):
            out.write(data[i : i + 1])
            out.flush()
            time.sleep(seconds)
    except OSError:  # the client gave up: that is what the tests expect
        return


@contextmanager
def http_server(root: Path) -> Iterator[str]:
    """Serve `root` (and the special paths above) on 127.0.0.1; yields the base URL without a trailing slash."""
    server = _Server(root)
    thread = threading.Thread(target=server.serve_forever, name="test-http-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextmanager
def aws_test_env() -> Iterator[None]:
    """Test-only AWS credentials and region in os.environ (restored afterwards); no real profile is read."""
    saved = {name: os.environ.get(name) for name in [*TEST_AWS_ENV, "AWS_PROFILE"]}
    os.environ.update(TEST_AWS_ENV)
    os.environ.pop("AWS_PROFILE", None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def s3_server() -> Iterator[str]:
    """moto's S3 in server mode on 127.0.0.1 (random port), with test credentials set; yields the endpoint URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access log for every S3 call
    with aws_test_env():
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            yield f"http://{host}:{port}"
        finally:
            server.stop()


def s3_client(endpoint_url: str) -> Any:
    """A plain boto3 S3 client on the test endpoint."""
    import boto3

    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, region_name="us-east-1")


def upload_folder(endpoint_url: str, bucket: str, folder: Path | None = None, *, prefix: str = "") -> list[str]:
    """Create `bucket` (if needed) and upload each file under `folder` as `prefix` + its relative path.

    Returns the uploaded keys in order.
    """
    client = s3_client(endpoint_url)
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        client.create_bucket(Bucket=bucket)
    keys: list[str] = []
    if folder is None:
        return keys
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            key = prefix + path.relative_to(folder).as_posix()
            client.upload_file(str(path), bucket, key)
            keys.append(key)
    return keys


class _TricklingS3Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, objects: dict[str, bytes], seconds: float) -> None:
        super().__init__(("127.0.0.1", 0), _TricklingS3Handler)
        self.objects = objects
        self.seconds = seconds

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up on the trickle are the point of the tests."""


class _TricklingS3Handler(BaseHTTPRequestHandler):
    """Path-style S3: GET /bucket?list-type=2 lists every object; HEAD and GET /bucket/key serve one."""

    server: _TricklingS3Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_HEAD(self) -> None:
        self._object(send_body=False)

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if "/" not in parts.path.strip("/"):
            self._list()
        else:
            self._object(send_body=True)

    def _list(self) -> None:
        entries = "".join(
            f"<Contents><Key>{key}</Key><Size>{len(body)}</Size><ETag>&quot;{hashlib.md5(body).hexdigest()}&quot;</ETag>"
            "<LastModified>2026-01-01T00:00:00.000Z</LastModified><StorageClass>STANDARD</StorageClass></Contents>"
            for key, body in sorted(self.server.objects.items())
        )
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f"<Name>bucket</Name><Prefix></Prefix><KeyCount>{len(self.server.objects)}</KeyCount>"
            f"<MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>{entries}</ListBucketResult>"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(xml)))
        self.end_headers()
        self.wfile.write(xml)

    def _object(self, *, send_body: bool) -> None:
        key = unquote(urlsplit(self.path).path).strip("/").split("/", 1)[1]
        body = self.server.objects.get(key)
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", f'"{hashlib.md5(body).hexdigest()}"')
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if send_body:
            self.close_connection = True
            trickle(self.wfile, body, self.server.seconds)


@contextmanager
def trickling_s3_server(objects: dict[str, bytes], seconds: float) -> Iterator[str]:
    """An S3-compatible endpoint on 127.0.0.1 that serves `objects` (key: bytes) of any bucket one byte
    every `seconds`; test credentials are set while it runs. Yields the endpoint URL."""
    server = _TricklingS3Server(objects, seconds)
    thread = threading.Thread(target=server.serve_forever, name="test-s3-trickle", daemon=True)
    thread.start()
    try:
        with aws_test_env():
            yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
