"""SOURCE arguments expand into the media a user expects: local trees, globs, URL lists, S3 prefixes."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

import scanner.mediaurl
import scanner.sources
from scanner.errors import ConfigError
from scanner.settings import Settings
from scanner.sources import MediaRef, absolute_source, expand_sources, read_url_list
from tests import media_factory as mf
from tests.servers import s3_client, s3_server, upload_folder


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", database_url="sqlite://")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """photos/ with media at several depths, upper-case extensions, and files that are not media."""
    root = tmp_path / "photos"
    for rel in ["b.jpg", "a.PNG", "sub/c.webp", "sub/deeper/d.mp4", "z/e.gif", "notes.txt", "sub/.DS_Store"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x" * (len(rel) + 1))
    return root


def urls(refs: Iterator[MediaRef] | list[MediaRef]) -> list[str]:
    return [ref.url for ref in refs]


def rels(refs: Iterator[MediaRef], root: Path) -> list[str]:
    return [ref.url.removeprefix(root.resolve().as_uri() + "/") for ref in refs]


# --- local files and directories ----------------------------------------------------------------


def test_a_directory_expands_recursively_in_name_order_keeping_only_media(tree: Path, settings: Settings) -> None:
    refs = list(expand_sources([str(tree)], settings))

    assert rels(iter(refs), tree) == ["a.PNG", "b.jpg", "sub/c.webp", "sub/deeper/d.mp4", "z/e.gif"]
    first = refs[0]
    assert first.url == (tree / "a.PNG").resolve().as_uri()
    assert first.size == (tree / "a.PNG").stat().st_size
    assert isinstance(first.last_modified, datetime)
    assert first.last_modified.timestamp() == pytest.approx((tree / "a.PNG").stat().st_mtime)
    assert first.etag is None


def test_files_left_out_by_their_extension_are_reported(
    tree: Path, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    (tree / "sub" / "logo.svg").write_bytes(b"<svg/>")

    with caplog.at_level(logging.WARNING, logger="scanner.sources"):
        refs = list(expand_sources([str(tree)], settings))

    assert len(refs) == 5  # 8 files: 5 media, notes.txt, logo.svg, and the hidden .DS_Store
    (warning,) = [r.getMessage() for r in caplog.records]
    assert warning.startswith(f"{tree}: left out 2 files that are not an image or video by their extension")
    assert "(1 .svg, 1 .txt)" in warning or "(1 .txt, 1 .svg)" in warning
    assert "--include '*'" in warning
    caplog.clear()
    list(expand_sources([str(tree)], settings, exclude=["*.txt", "*.svg"]))  # left out on purpose: no word
    list(expand_sources([str(tree)], settings, include=["*.jpg"]))
    assert not caplog.records


def test_the_same_tree_expands_identically_every_time(tree: Path, settings: Settings) -> None:
    assert urls(expand_sources([str(tree)], settings)) == urls(expand_sources([str(tree)], settings))


def test_a_named_file_is_taken_whatever_its_extension(tree: Path, settings: Settings) -> None:
    refs = list(expand_sources([str(tree / "notes.txt"), str(tree / "b.jpg")], settings))

    assert rels(iter(refs), tree) == ["notes.txt", "b.jpg"]


def test_include_replaces_the_media_filter_and_exclude_applies_on_top(tree: Path, settings: Settings) -> None:
    only_text = expand_sources([str(tree)], settings, include=["*.txt"])
    no_sub = expand_sources([str(tree)], settings, exclude=["sub/*"])
    no_jpegs_anywhere = expand_sources([str(tree)], settings, exclude=["*.JPG", "*.mp4"])

    assert rels(only_text, tree) == ["notes.txt"]
    assert rels(no_sub, tree) == ["a.PNG", "b.jpg", "z/e.gif"]
    assert rels(no_jpegs_anywhere, tree) == ["a.PNG", "sub/c.webp", "z/e.gif"]


def test_relative_paths_and_odd_names_become_canonical_file_urls(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    odd = tmp_path / "a dir#1" / "100% real?.jpg"
    odd.parent.mkdir()
    odd.write_bytes(b"x")
    monkeypatch.chdir(odd.parent)

    [ref] = expand_sources(["100% real?.jpg"], settings)

    assert ref.url.startswith("file:///")
    assert ref.url == odd.resolve().as_uri()
    assert "%20" in ref.url
    assert "%23" in ref.url
    assert "%25" in ref.url
    assert scanner.mediaurl.MediaUrl.parse(ref.url).path == odd.resolve()


def test_file_urls_are_sources_like_paths(tree: Path, settings: Settings) -> None:
    assert urls(expand_sources([tree.resolve().as_uri()], settings)) == urls(expand_sources([str(tree)], settings))


def test_the_walk_is_lazy(tree: Path, settings: Settings) -> None:
    refs = expand_sources([str(tree)], settings)
    assert next(refs).url.endswith("/a.PNG")

    (tree / "z" / "late.jpg").write_bytes(b"added while the producer was busy")

    assert rels(refs, tree)[-1] == "z/late.jpg"


# --- globs --------------------------------------------------------------------------------------


def test_globs_match_within_one_directory_and_doublestar_spans_directories(tree: Path, settings: Settings) -> None:
    top_level = expand_sources([str(tree / "*.jpg")], settings)
    everywhere = expand_sources([str(tree / "**" / "*.webp"), str(tree / "**" / "*.mp4")], settings)
    one_level_down = expand_sources([str(tree / "*" / "*")], settings)

    assert rels(top_level, tree) == ["b.jpg"]
    assert rels(everywhere, tree) == ["sub/c.webp", "sub/deeper/d.mp4"]
    assert rels(one_level_down, tree) == ["sub/c.webp", "z/e.gif"]  # .DS_Store is not media


def test_character_classes_in_globs(tree: Path, settings: Settings) -> None:
    assert rels(expand_sources([str(tree / "[ab].*")], settings), tree) == ["a.PNG", "b.jpg"]
    assert rels(expand_sources([str(tree / "[!a].*")], settings), tree) == ["b.jpg"]


# --- mistakes are usage errors, found before anything is queued ---------------------------------


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{tmp}/missing.jpg", "no such file or directory: {tmp}/missing.jpg"),
        ("{tmp}/missing/*.jpg", "no such directory: {tmp}/missing"),
        ("ftp://example.com/a.jpg", "unsupported URL scheme 'ftp'"),
        ("file://otherhost/a.jpg", "file URL names another host (otherhost)"),
        ("http:///a.jpg", "has no host name"),
        ("s3:///key", "names no bucket"),
    ],
)
def test_a_bad_source_is_a_one_line_config_error_before_any_item(
    tree: Path, settings: Settings, tmp_path: Path, source: str, message: str
) -> None:
    refs = expand_sources([str(tree), source.format(tmp=tmp_path)], settings)

    with pytest.raises(ConfigError) as caught:
        next(refs)  # the good directory comes first, yet nothing is yielded

    assert message.format(tmp=tmp_path) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_paths_outside_the_allowed_roots_are_refused(tree: Path, settings: Settings, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.jpg"
    outside.write_bytes(b"x")
    (tree / "escape.jpg").symlink_to(outside)
    confined = settings.with_overrides(local_roots=(tree.resolve(),))

    with pytest.raises(ConfigError, match="outside the allowed local roots"):
        next(expand_sources([str(outside)], confined))
    listed = rels(expand_sources([str(tree)], confined), tree)

    assert "escape.jpg" not in " ".join(listed)  # a symlink out of the root is skipped
    assert "b.jpg" in listed


def test_symlinks_out_of_a_scanned_folder_are_not_followed(
    tree: Path, settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "passwd").write_bytes(b"root:x:0:0")
    (secret / "private.jpg").write_bytes(b"x")
    (tree / "passwd").symlink_to(secret / "passwd")
    (tree / "sub" / "leak.jpg").symlink_to(secret / "private.jpg")
    (tree / "alias.jpg").symlink_to(tree / "sub" / "c.webp")  # inside the folder: fine

    listed = urls(expand_sources([str(tree)], settings, include=["*"]))
    globbed = urls(expand_sources([str(tree / "**")], settings, include=["*"]))

    for refs in (listed, globbed):
        assert not any("secret" in url for url in refs)
        assert (tree / "sub" / "c.webp").resolve().as_uri() in refs
        assert (tree / "b.jpg").resolve().as_uri() in refs
    assert refs.count((tree / "sub" / "c.webp").resolve().as_uri()) == 2  # the file and its in-folder alias
    assert "skipping" in caplog.text
    assert "leak.jpg" in caplog.text


# --- URL lists ----------------------------------------------------------------------------------


def test_stdin_lists_one_item_per_line_taken_as_is(tree: Path, settings: Settings, tmp_path: Path) -> None:
    stdin = io.StringIO(
        "# exported from the moderation queue\n"
        f"{tree / 'b.jpg'}\n"
        "\n"
        "https://cdn.example.com/u/1.jpg?sig=abc\n"
        f"  {tree / 'notes.txt'}  \n"
        f"{tmp_path / 'deleted.jpg'}\n"
        "s3://bucket/key with spaces.jpg\n"
    )

    refs = list(expand_sources(["-"], settings, stdin=stdin))

    assert urls(refs) == [
        (tree / "b.jpg").resolve().as_uri(),
        "https://cdn.example.com/u/1.jpg?sig=abc",
        (tree / "notes.txt").resolve().as_uri(),  # named, so not filtered
        (tmp_path / "deleted.jpg").as_uri(),  # a vanished file stays an item; fetch reports "file not found"
        "s3://bucket/key with spaces.jpg",
    ]
    assert refs[0].size == (tree / "b.jpg").stat().st_size
    assert refs[3].size is None


def test_from_files_follow_the_sources(tree: Path, settings: Settings, tmp_path: Path) -> None:
    listing = tmp_path / "urls.txt"
    listing.write_text("\ufeffhttps://example.com/a.jpg\n# skip\nhttps://example.com/b.mp4\n", encoding="utf-8")

    refs = expand_sources(["https://example.com/first.png"], settings, from_files=[str(listing)])

    assert urls(refs) == ["https://example.com/first.png", "https://example.com/a.jpg", "https://example.com/b.mp4"]


def test_a_missing_url_list_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"URL list not found: .*nope\.txt"):
        read_url_list(str(tmp_path / "nope.txt"))


# --- S3 -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with s3_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def bucket(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("bucket")
    for rel in [
        "2024/a.jpg",
        "2024/b.png",
        "2024/c.mp4",
        "2024/d.JPEG",
        "2024/e.webp",
        "2024/readme.txt",
        "2025/f.jpg",
    ]:
        mf.write_image(folder / f"{rel}.tmp.png", fmt="png", seed=len(rel)).rename(folder / rel)
    upload_folder(s3_endpoint, "media-bucket", folder)
    s3_client(s3_endpoint).put_object(Bucket="media-bucket", Key="2024/folder-marker/", Body=b"")
    return "media-bucket"


def s3_settings(settings: Settings, endpoint: str) -> Settings:
    return settings.with_overrides(s3_endpoint_url=endpoint)


def test_an_s3_prefix_lists_media_over_several_pages_with_etag_size_and_date(
    s3_endpoint: str, bucket: str, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scanner.sources, "DEFAULT_S3_PAGE_SIZE", 2)
    client = s3_client(s3_endpoint)
    list_calls: list[Any] = []
    client.meta.events.register("before-call.s3.ListObjectsV2", lambda **kw: list_calls.append(kw))

    refs = list(expand_sources([f"s3://{bucket}/2024/"], settings, s3_client=client))

    assert urls(refs) == [f"s3://{bucket}/2024/{name}" for name in ["a.jpg", "b.png", "c.mp4", "d.JPEG", "e.webp"]]
    assert len(list_calls) >= 1 + 4  # the up-front check, then 8 keys under the prefix at 2 per page
    head = client.head_object(Bucket=bucket, Key="2024/a.jpg")
    assert refs[0].etag == head["ETag"].strip('"')
    assert refs[0].size == head["ContentLength"]
    assert refs[0].last_modified is not None


def test_s3_uses_the_configured_endpoint_and_filters(s3_endpoint: str, bucket: str, settings: Settings) -> None:
    refs = expand_sources([f"s3://{bucket}"], s3_settings(settings, s3_endpoint), include=["2025/*", "*.txt"])

    assert urls(refs) == [f"s3://{bucket}/2024/readme.txt", f"s3://{bucket}/2025/f.jpg"]


def test_s3_keys_left_out_by_their_extension_are_reported(
    s3_endpoint: str, bucket: str, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="scanner.sources"):
        list(expand_sources([f"s3://{bucket}/2024/"], s3_settings(settings, s3_endpoint)))

    assert any(f"s3://{bucket}/2024/: left out" in r.getMessage() and ".txt" in r.getMessage() for r in caplog.records)


def test_an_s3_key_named_exactly_is_taken_whatever_its_extension(
    s3_endpoint: str, bucket: str, settings: Settings
) -> None:
    refs = expand_sources([f"s3://{bucket}/2024/readme.txt"], s3_settings(settings, s3_endpoint))

    assert urls(refs) == [f"s3://{bucket}/2024/readme.txt"]


def test_a_missing_bucket_is_a_config_error(s3_endpoint: str, bucket: str, settings: Settings) -> None:
    refs = expand_sources(
        [f"s3://{bucket}/2024/", "s3://no-such-bucket/x/"], s3_settings(settings, s3_endpoint), exclude=["*"]
    )

    with pytest.raises(ConfigError, match="s3 bucket 'no-such-bucket' does not exist"):
        next(refs)


def test_a_malformed_bucket_name_is_a_config_error_naming_it(settings: Settings) -> None:
    with pytest.raises(ConfigError, match=r"^invalid s3 bucket name 'my bucket!'"):
        list(expand_sources(["s3://my bucket!/photos/"], settings))


# --- sources stored for later (schedules) -------------------------------------------------------


def test_absolute_source_anchors_relative_paths_and_refuses_missing_ones(tmp_path: Path) -> None:
    (tmp_path / "media" / "2026").mkdir(parents=True)
    (tmp_path / "urls.txt").write_text("")
    assert absolute_source("media", tmp_path) == str(tmp_path / "media")
    assert absolute_source("./media/../media/2026", tmp_path) == str(tmp_path / "media" / "2026")
    assert absolute_source("@urls.txt", tmp_path) == f"@{tmp_path / 'urls.txt'}"
    assert absolute_source("media/**/*.jpg", tmp_path) == str(tmp_path / "media" / "**" / "*.jpg")
    for kept in ("/srv/not-yet-mounted", "s3://b/new/", "https://example.org/a.jpg", "file:///srv/a.jpg"):
        assert absolute_source(kept, tmp_path) == kept
    for refused in ("nope", "@nope.txt", "nope/*.jpg", "-"):
        with pytest.raises(ConfigError):
            absolute_source(refused, tmp_path)
