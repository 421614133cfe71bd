"""Fetching from local files, a real HTTP server and a real S3 server gives bytes or a reason a moderator can act on."""

from __future__ import annotations

import hashlib
import logging
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import workers.fetch
import workers.ssrf
from scanner.errors import PermanentError
from scanner.media import decode_image
from scanner.s3 import make_s3_client
from scanner.settings import Settings
from tests import media_factory as mf
from tests.servers import http_server, s3_client, s3_server, upload_folder
from workers.fetch import Fetched, fetch, format_bytes
from workers.frames import sample_frames
from workers.ssrf import is_public_address, make_http_session


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers.fetch, "DEFAULT_RETRY_BACKOFF_S", 0.0)


@pytest.fixture(autouse=True)
def temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Temporary video copies land in a folder each test can inspect for leftovers."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("media")
    mf.write_image(root / "photo.jpg", size=(120, 90), seed=5)
    mf.write_video(root / "clip.mp4", seconds=2.0, fps=10.0)
    mf.write_bad_inputs(root / "bad")
    return root


@pytest.fixture(scope="module")
def base_url(media: Path) -> Iterator[str]:
    with http_server(media) as url:
        yield url


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Loopback allowed (the test servers live there), short timeouts."""
    return Settings(
        home=tmp_path / "home",
        database_url="sqlite://",
        allow_private_urls=True,
        http_connect_timeout_s=1.0,
        http_read_timeout_s=0.2,
    )


def reason(url: str, settings: Settings, **kwargs: object) -> str:
    with pytest.raises(PermanentError) as caught:
        fetch(url, settings, **kwargs)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "\n" not in message
    return message


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- local files --------------------------------------------------------------------------------


def test_a_local_image_is_read_into_memory_with_its_sha256(media: Path, settings: Settings) -> None:
    path = media / "photo.jpg"

    item = fetch(path.as_uri(), settings)

    assert (item.kind, item.size, item.path) == ("image", path.stat().st_size, None)
    assert item.data == path.read_bytes()
    assert item.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert decode_image(item.data).shape == (90, 120, 3)


def test_a_local_video_is_used_in_place_and_never_deleted(media: Path, settings: Settings) -> None:
    path = media / "clip.mp4"

    with fetch(path.as_uri(), settings) as item:
        assert (item.kind, item.path, item.data, item.owns_path) == ("video", path.resolve(), None, False)
        assert item.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()

    assert path.exists()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("bad/empty.jpg", "empty file (0 bytes)"),
        ("bad/notes.jpg", "not an image or video"),
        ("bad/page.jpg", "not an image or video"),
        ("missing.jpg", "file not found"),
        ("bad", "not a regular file"),
    ],
)
def test_bad_local_files_fail_with_their_reason(media: Path, settings: Settings, name: str, expected: str) -> None:
    assert reason((media / name).as_uri(), settings) == expected


def test_every_bad_input_ends_with_its_reason_after_fetch_and_decode(media: Path, settings: Settings) -> None:
    """Issue 4, item 7: each bad file's scan ends with a one-line reason, whichever stage finds it."""

    def scan(url: str) -> None:
        with fetch(url, settings) as item:
            if item.data is not None:
                decode_image(item.data)
            elif item.path is not None:
                sample_frames(item.path)

    for bad in mf.write_bad_inputs(media / "bad-again"):
        with pytest.raises(PermanentError) as caught:
            scan(bad.path.as_uri())
        assert str(caught.value).startswith(bad.reason), bad.path.name


def test_local_files_outside_the_allowed_roots_are_refused(media: Path, settings: Settings, tmp_path: Path) -> None:
    confined = settings.with_overrides(local_roots=(tmp_path.resolve(),))

    assert reason((media / "photo.jpg").as_uri(), confined) == (
        "refused: file is outside the allowed local roots (DEEPSCAN_LOCAL_ROOTS)"
    )


# --- HTTP ---------------------------------------------------------------------------------------


def test_an_http_image_comes_back_with_its_etag(base_url: str, media: Path, settings: Settings) -> None:
    body = (media / "photo.jpg").read_bytes()

    item = fetch(f"{base_url}/photo.jpg", settings)

    assert (item.kind, item.data, item.etag) == ("image", body, hashlib.md5(body).hexdigest())


def test_an_http_video_streams_to_a_temp_file_that_close_removes(
    base_url: str, media: Path, settings: Settings, temp_dir: Path
) -> None:
    item = fetch(f"{base_url}/clip.mp4", settings)
    assert item.kind == "video"
    assert item.owns_path
    assert item.path is not None
    assert item.path.read_bytes() == (media / "clip.mp4").read_bytes()
    assert len(sample_frames(item.path).frames) == 2

    item.close()

    assert leftovers(temp_dir) == []


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/nope.jpg", "http 404"),
        ("/_status/403", "http 403"),
        ("/_status/503", "http 503 after 3 tries"),
        ("/_status/429", "http 429 after 3 tries"),
        ("/_html-as-jpeg", "not an image or video"),
        ("/bad/empty.jpg", "empty file (0 bytes)"),
        ("/_slow/2/photo.jpg", "timed out after 0.2 s (3 tries)"),
        ("/_stall/2/clip.mp4", "timed out after 0.2 s (3 tries)"),
        ("/_redirect-loop", "too many redirects (more than 5)"),
        ("/_redirect/6/photo.jpg", "too many redirects (more than 5)"),
        ("/_redirect-to?url=file:///etc/passwd", "refused: redirect to unsupported URL scheme 'file'"),
    ],
)
def test_http_failures_give_a_reason_a_moderator_can_act_on(
    base_url: str, settings: Settings, temp_dir: Path, path: str, expected: str
) -> None:
    assert reason(base_url + path, settings) == expected
    assert leftovers(temp_dir) == []


def test_up_to_five_redirects_are_followed(base_url: str, media: Path, settings: Settings) -> None:
    url = f"{base_url}/_redirect/5/photo.jpg"

    item = fetch(url, settings)

    assert (item.url, item.data) == (url, (media / "photo.jpg").read_bytes())  # the item keeps the URL it was given


def test_transient_http_failures_are_retried(base_url: str, settings: Settings) -> None:
    assert fetch(f"{base_url}/_flaky/2/photo.jpg", settings).kind == "image"  # 503, 503, then 200


def test_connection_refused_is_retried_then_reported(settings: Settings) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again below: nothing listens there

    assert reason(f"http://127.0.0.1:{port}/a.jpg", settings) == "connection to 127.0.0.1 failed (3 tries)"


def test_credentials_in_urls_never_reach_reasons_or_logs(
    base_url: str, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="workers.fetch")
    url = base_url.replace("http://", "http://alice:hunter2@") + "/_status/503?token=s3cr3t"

    message = reason(url, settings)

    assert message == "http 503 after 3 tries"
    assert "retry" in caplog.text
    assert "hunter2" not in caplog.text
    assert "s3cr3t" not in caplog.text


# --- byte caps ----------------------------------------------------------------------------------


def test_images_over_the_cap_are_refused(base_url: str, media: Path, settings: Settings) -> None:
    capped = settings.with_overrides(max_image_bytes=1000)
    too_big = "image exceeds 1000 bytes limit (DEEPSCAN_MAX_IMAGE_BYTES)"

    assert reason((media / "photo.jpg").as_uri(), capped) == too_big
    assert reason(f"{base_url}/photo.jpg", capped) == too_big
    assert reason(f"{base_url}/_no-length/photo.jpg", capped) == too_big  # enforced while streaming


def test_videos_over_the_cap_are_refused_and_leave_no_temp_file(
    base_url: str, settings: Settings, temp_dir: Path
) -> None:
    capped = settings.with_overrides(max_video_bytes=4096)

    assert reason(f"{base_url}/_no-length/clip.mp4", capped) == "video exceeds 4 KB limit (DEEPSCAN_MAX_VIDEO_BYTES)"
    assert leftovers(temp_dir) == []


def test_the_video_cap_does_not_apply_to_images(base_url: str, settings: Settings) -> None:
    assert fetch(f"{base_url}/photo.jpg", settings.with_overrides(max_video_bytes=10)).kind == "image"


def test_limits_read_the_way_people_write_them() -> None:
    assert [format_bytes(n) for n in (50 << 20, 2 << 30, 1536, 999)] == ["50 MB", "2 GB", "1.5 KB", "999 bytes"]


# --- SSRF guard ---------------------------------------------------------------------------------


def test_urls_resolving_to_private_addresses_are_refused(base_url: str, settings: Settings) -> None:
    public_only = settings.with_overrides(allow_private_urls=False)
    refusal = "refused: host resolves to private address 127.0.0.1 (set DEEPSCAN_ALLOW_PRIVATE_URLS=1 to allow)"
    port = base_url.rsplit(":", 1)[1]

    assert reason(f"{base_url}/photo.jpg", public_only) == refusal
    assert reason(f"http://localhost:{port}/photo.jpg", public_only) in {refusal, refusal.replace("127.0.0.1", "::1")}


def test_every_redirect_hop_is_checked(base_url: str, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    # Let the test server's loopback address pass, so the redirect target is the thing refused.
    monkeypatch.setattr(workers.ssrf, "is_public_address", lambda address: not address.startswith("169.254."))
    public_only = settings.with_overrides(allow_private_urls=False)
    metadata_service = "http://169.254.169.254/latest/meta-data/"

    message = reason(f"{base_url}/_redirect-to?url={metadata_service}", public_only)

    assert message.startswith("refused: host resolves to private address 169.254.169.254")


def test_dns_rebinding_is_caught_at_connect_time(
    base_url: str, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The name check sees a public address; the connection then lands on loopback.
    monkeypatch.setattr(workers.ssrf, "_resolve", lambda host, port: ["93.184.216.34"])
    public_only = settings.with_overrides(allow_private_urls=False)

    with make_http_session(public_only) as session:
        message = reason(f"{base_url}/photo.jpg", public_only, http=session)

    assert message.startswith("refused: host resolves to private address 127.0.0.1")


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("127.0.0.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fe80::1%eth0", False),
        ("fd00::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:8.8.8.8", True),
        # IPv6 forms that carry an IPv4 address are judged by that address (translators, tunnels).
        ("64:ff9b::7f00:1", False),  # NAT64 of 127.0.0.1
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 of 169.254.169.254 (the metadata service)
        ("64:ff9b::808:808", True),  # NAT64 of 8.8.8.8
        ("64:ff9b:1::808:808", False),  # local-use NAT64 prefix
        ("2002:a00:1::1", False),  # 6to4 of 10.0.0.1
        ("2002:7f00:1::", False),  # 6to4 of 127.0.0.1
        ("2002:808:808::1", True),  # 6to4 of 8.8.8.8
        ("::127.0.0.1", False),  # IPv4-compatible
        ("::c0a8:101", False),  # IPv4-compatible 192.168.1.1
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", False),  # Teredo, client 127.0.0.1
        ("::ffff:0:7f00:1", False),  # IPv4-translated (SIIT) 127.0.0.1
        ("::ffff:0:a9fe:a9fe", False),  # IPv4-translated 169.254.169.254
        ("::ffff:0:808:808", True),  # IPv4-translated 8.8.8.8
        # Ranges that Python 3.11's `is_global` still calls global.
        ("fec0::1", False),  # site-local
        ("192.0.0.8", False),  # IPv4 dummy address
        ("192.0.0.170", False),  # NAT64 discovery
        ("3fff::1", False),  # documentation
    ],
)
def test_which_addresses_count_as_public(address: str, public: bool) -> None:
    assert is_public_address(address) is public


def test_a_host_resolving_to_nat64_loopback_is_refused(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    # A DNS answer in 64:ff9b::/96 reaches 127.0.0.1 through any NAT64 gateway on the worker's network.
    monkeypatch.setattr(workers.ssrf, "_resolve", lambda host, port: ["64:ff9b::7f00:1"])

    message = reason("http://rebind.example/a.jpg", settings.with_overrides(allow_private_urls=False))

    assert message.startswith("refused: host resolves to private address 64:ff9b::7f00:1")


def test_an_unknown_host_is_reported(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_such_name(host: str, *_: object, **__: object) -> list[object]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_name)  # the resolver's answer, without asking a DNS server
    assert reason("http://no-such-host.invalid/a.jpg", settings.with_overrides(allow_private_urls=False)) == (
        "unknown host no-such-host.invalid"
    )


def test_unsupported_schemes_are_reported(settings: Settings) -> None:
    assert reason("ftp://example.com/a.jpg", settings) == "unsupported URL scheme 'ftp'"


# --- S3 -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint(media: Path) -> Iterator[str]:
    with s3_server() as endpoint:
        upload_folder(endpoint, "scan-bucket", media)
        yield endpoint


@pytest.fixture
def s3_settings(settings: Settings, s3_endpoint: str) -> Settings:
    return settings.with_overrides(s3_endpoint_url=s3_endpoint)


def test_s3_objects_are_fetched_with_their_etag(s3_settings: Settings, s3_endpoint: str, media: Path) -> None:
    image = fetch("s3://scan-bucket/photo.jpg", s3_settings)
    with fetch("s3://scan-bucket/clip.mp4", s3_settings) as video:
        assert video.path is not None
        assert video.path.read_bytes() == (media / "clip.mp4").read_bytes()

    assert image.data == (media / "photo.jpg").read_bytes()
    head = s3_client(s3_endpoint).head_object(Bucket="scan-bucket", Key="photo.jpg")
    assert image.etag == head["ETag"].strip('"')
    assert video.path is not None
    assert not video.path.exists()


def test_a_vanished_s3_key_is_reported(s3_settings: Settings, s3_endpoint: str, media: Path) -> None:
    client = s3_client(s3_endpoint)
    client.upload_file(str(media / "photo.jpg"), "scan-bucket", "soon-gone.jpg")
    client.delete_object(Bucket="scan-bucket", Key="soon-gone.jpg")  # listed by the producer, deleted since

    assert reason("s3://scan-bucket/soon-gone.jpg", s3_settings, s3_client=client) == "s3 object not found"
    assert reason("s3://no-such-bucket/a.jpg", s3_settings) == "s3 bucket not found"


def test_bad_s3_objects_fail_like_bad_files(s3_settings: Settings) -> None:
    assert reason("s3://scan-bucket/bad/empty.jpg", s3_settings) == "empty file (0 bytes)"
    assert reason("s3://scan-bucket/bad/page.jpg", s3_settings) == "not an image or video"
    capped = s3_settings.with_overrides(max_image_bytes=100)
    assert reason("s3://scan-bucket/photo.jpg", capped) == "image exceeds 100 bytes limit (DEEPSCAN_MAX_IMAGE_BYTES)"


def test_a_malformed_bucket_name_is_one_permanent_line_naming_it(s3_settings: Settings) -> None:
    client = make_s3_client(s3_settings, attempts=1)
    calls: list[object] = []
    client.meta.events.register("before-parameter-build.s3.*", lambda **kw: calls.append(kw))

    message = reason("s3://bad bucket!/a.jpg", s3_settings, s3_client=client)

    assert message.startswith("invalid s3 bucket name 'bad bucket!'")
    assert "tries" not in message
    assert calls == []  # refused before any request: nothing to retry


def test_an_unreachable_s3_endpoint_is_retried_then_reported(settings: Settings) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    unreachable = settings.with_overrides(s3_endpoint_url=f"http://127.0.0.1:{port}")

    assert reason("s3://scan-bucket/photo.jpg", unreachable) == "s3 unreachable (EndpointConnectionError) (3 tries)"


def test_fetched_temp_files_are_removed_even_when_close_is_forgotten(
    base_url: str, settings: Settings, temp_dir: Path
) -> None:
    item: Fetched | None = fetch(f"{base_url}/clip.mp4", settings)
    assert leftovers(temp_dir) != []

    item = None  # dropped without close(): the finalizer still deletes the copy
    del item

    assert leftovers(temp_dir) == []
