"""A media URL is parsed once, into the parts every other module reads (scanner/mediaurl.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from scanner.mediaurl import InvalidMediaUrlError, MediaUrl, display_name, is_allowed_local_path, scheme_of
from scanner.settings import Settings


def test_each_scheme_parses_into_its_parts() -> None:
    http = MediaUrl.parse("https://User:pw@Example.COM/media/a%20b.jpg?token=s3cret#x")
    assert (http.scheme, http.host, http.port, http.url_path) == ("https", "example.com", 443, "/media/a%20b.jpg")
    assert http.redacted == "https://Example.COM/media/a%20b.jpg"
    assert http.name == "a%20b.jpg"
    assert MediaUrl.parse("http://127.0.0.1:8080/v.mp4").port == 8080

    s3 = MediaUrl.parse("s3://bucket/videos/clip #1.mp4")
    assert (s3.scheme, s3.bucket, s3.key, s3.name, s3.suffix) == (
        "s3",
        "bucket",
        "videos/clip #1.mp4",
        "clip #1.mp4",
        ".mp4",
    )
    assert MediaUrl.parse("s3://bucket").key == ""

    local = MediaUrl.parse("file:///data/caf%C3%A9.png")
    assert (local.scheme, local.path, local.name) == ("file", Path("/data/café.png"), "café.png")
    assert MediaUrl.parse("/data/a.jpg").path == Path("/data/a.jpg")
    assert str(local) == "file:///data/caf%C3%A9.png"  # the text is kept verbatim: it is what is stored and fetched


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("ftp://example.com/a.jpg", "unsupported URL scheme 'ftp'"),
        ("file://otherhost/a.jpg", "file URL names another host (otherhost)"),
        ("file://localhost/relative", None),
        ("http:///a.jpg", "has no host name"),
        ("https://host:99999/a.jpg", "has an invalid port"),
        ("s3:///key", "names no bucket"),
        ("s3://bad bucket!/k", "invalid s3 bucket name 'bad bucket!'"),
        ("a.jpg", "not a URL"),
    ],
)
def test_what_names_no_media_fails_with_one_line(text: str, reason: str | None) -> None:
    if reason is None:
        assert MediaUrl.parse(text).path == Path("/relative")
        return
    with pytest.raises(InvalidMediaUrlError, match=re.escape(reason)):
        MediaUrl.parse(text)


def test_reasons_never_show_a_credential() -> None:
    with pytest.raises(InvalidMediaUrlError) as caught:
        MediaUrl.parse("https://user:hunter2@:99999/a.jpg?token=abc")
    assert "hunter2" not in str(caught.value)
    assert "abc" not in str(caught.value)
    with pytest.raises(InvalidMediaUrlError) as caught:
        MediaUrl.parse("s3://key:hunter2@bad bucket/a")
    assert "hunter2" not in str(caught.value)


def test_local_roots_bound_local_paths(tmp_path: Path) -> None:
    settings = Settings.from_env({"DEEPSCAN_LOCAL_ROOTS": str(tmp_path / "allowed")})
    (tmp_path / "allowed").mkdir()
    inside, outside = MediaUrl.parse((tmp_path / "allowed" / "a.jpg").as_uri()), MediaUrl.parse(tmp_path.as_uri())
    assert inside.path is not None
    assert outside.path is not None
    assert is_allowed_local_path(inside.path, settings)
    assert not is_allowed_local_path(outside.path, settings)
    assert is_allowed_local_path(outside.path, Settings.from_env({}))


def test_scheme_and_display_name_never_raise() -> None:
    assert [scheme_of(t) for t in ("HTTP://x/a", "/a/b.jpg", "**/*.jpg", "@list.txt")] == ["http", "", "", ""]
    assert display_name("s3://bucket/a/b.jpg") == "b.jpg"
    assert display_name("not a url") == "not a url"
    assert display_name("https://user:pw@example.com/?token=x") == "https://example.com/"
