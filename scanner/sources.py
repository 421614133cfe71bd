"""Turn the SOURCE arguments of `deepscan scan` into a lazy stream of media references.

A SOURCE is a local file, a directory (walked recursively), a glob (`**` spans directories), a
`file://` URL, an `http(s)://` URL, an `s3://bucket/prefix`, or `-` for a URL list on stdin; URL
lists also come from files (`--from-file`). Nothing is held in memory beyond one directory's
listing or one S3 page, so a bucket of millions streams straight into the producer's batches.

Rules a user can rely on:
- Every named source is checked before the first reference comes out (the path exists, the
  bucket exists, the scheme is known), so a typo fails as a usage error before anything is queued.
- Listings (directories, globs, S3 prefixes) keep only media file extensions
  (`DEFAULT_MEDIA_EXTENSIONS`); `include` patterns replace that default, `exclude` patterns apply
  on top. Patterns are fnmatch-style, case-insensitive, matched against the path relative to the
  listed directory (or the S3 key), its file name, and the absolute path.
- Named items are always taken: a file given by name, an S3 key equal to the given prefix, and
  every line of a URL list (lines are items, taken as they are: not listed, not filtered; a
  missing file, or one outside the allowed roots, ends as that item's error from `fetch`
  instead of stopping the job).
- Order is deterministic: sources in the order given, directory entries by name (depth first),
  S3 keys in the bucket's (lexicographic) order. The same file named twice comes out twice.
- Local paths become canonical `file:///abs/path` URLs (symlinks resolved) with size and mtime;
  with `Settings.local_roots` set, paths outside those roots are refused.
- A listing never leaves the listed directory: a symlink inside it whose target lies outside (to
  `/etc/passwd`, to another user's files) is skipped with a warning, whatever `include` says; a
  symlink to a file inside the directory is taken, and symlinked directories are not entered.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, TextIO

from scanner.errors import ConfigError, TransientError
from scanner.mediaurl import FETCHABLE_SCHEMES, InvalidMediaUrlError, MediaUrl, is_allowed_local_path, scheme_of
from scanner.redaction import redact_url
from scanner.s3 import make_s3_client
from scanner.settings import Settings

logger = logging.getLogger(__name__)

DEFAULT_MEDIA_EXTENSIONS = frozenset(
    {"jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif", "mp4", "mov", "m4v", "avi", "mkv", "webm"}
)
DEFAULT_S3_PAGE_SIZE = 1000  # keys per ListObjectsV2 request (the S3 maximum)

_GLOB_MAGIC = re.compile(r"[*?[]")
_S3_MISSING_BUCKET = {"NoSuchBucket", "404", "NotFound"}
_S3_DENIED = {"AccessDenied", "403", "Forbidden", "AllAccessDisabled"}


@dataclass(frozen=True)
class MediaRef:
    """One media item to scan: its URL and what the listing already knew about it."""

    url: str
    size: int | None = None
    etag: str | None = None
    last_modified: datetime | None = None


# --- stored sources ----------------------------------------------------------------------------


def absolute_source(source: str, cwd: Path | None = None) -> str:
    """SOURCE as it means the same from any directory: a relative path (or `@FILE`, or glob) made absolute.

    A source stored for later (a schedule, run by `deepscan beat` from its own directory) must not
    depend on where it was typed; a relative path that does not exist here is refused (ConfigError)
    rather than stored to fail every run. URLs and absolute paths are kept as they are.
    """
    if source == "-":
        raise ConfigError("'-' (a URL list on standard input) cannot be read later: give paths, URLs or @FILE")
    if source.startswith("@"):
        return "@" + absolute_source(source[1:], cwd)
    if scheme_of(source) or Path(source).expanduser().is_absolute():
        return source
    here = cwd or Path.cwd()
    path = here / Path(source).expanduser()
    if _GLOB_MAGIC.search(source) and not path.exists():
        base, _ = _split_glob(source)
        if not (here / base).is_dir():
            raise ConfigError(f"no such directory: {base} (in pattern {source}, relative to {here})")
    elif not path.exists():
        raise ConfigError(f"no such file or directory: {source} (relative to {here}); give an absolute path or URL")
    return os.path.abspath(path)


# --- URL lists ----------------------------------------------------------------------------------


def read_url_list(path_or_dash: str, *, stdin: TextIO | None = None) -> Iterator[str]:
    """The entries of a URL list, one per line; blank lines and `#` comments are skipped.

    `-` reads `stdin` (default `sys.stdin`). A missing file raises ConfigError at once; the lines
    themselves are read lazily.
    """
    if path_or_dash == "-":
        return _list_lines(stdin if stdin is not None else sys.stdin)
    path = Path(path_or_dash).expanduser()
    if not path.is_file():
        raise ConfigError(f"URL list not found: {path_or_dash}")
    return _read_list_file(path)


def _read_list_file(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8-sig") as fh:
        yield from _list_lines(fh)


def _list_lines(stream: TextIO) -> Iterator[str]:
    for raw in stream:
        line = raw.strip()
        if line and not line.startswith("#"):
            yield line


# --- filtering ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Filter:
    include: tuple[str, ...]
    exclude: tuple[str, ...]

    @classmethod
    def build(cls, include: Sequence[str], exclude: Sequence[str]) -> _Filter:
        return cls(tuple(p.lower() for p in include), tuple(p.lower() for p in exclude))

    def accepts(self, name: str, *paths: str) -> bool:
        """Whether a listed item passes, judged on its file name and its relative/absolute paths or key."""
        lowered = [name.lower(), *(p.lower() for p in paths)]
        if self.include:
            taken = any(fnmatchcase(n, p) for n in lowered for p in self.include)
        else:
            stem, dot, extension = lowered[0].rpartition(".")
            taken = bool(stem and dot) and extension in DEFAULT_MEDIA_EXTENSIONS
        return taken and not any(fnmatchcase(n, p) for n in lowered for p in self.exclude)

    def left_out_by_extension(self, name: str, *paths: str) -> bool:
        """Whether only the default extension list kept this file out: no `include` was given, no
        `exclude` names it, and it is not hidden. Such files are reported, never dropped in silence."""
        lowered = [name.lower(), *(p.lower() for p in paths)]
        if self.include or name.startswith(".") or any(fnmatchcase(n, p) for n in lowered for p in self.exclude):
            return False
        return not self.accepts(name, *paths)


@dataclass
class _Context:
    settings: Settings
    filter: _Filter
    stdin: TextIO | None
    s3_client: Any = None

    def s3(self) -> Any:
        if self.s3_client is None:
            self.s3_client = make_s3_client(self.settings)
        return self.s3_client


# --- the entry point ----------------------------------------------------------------------------


def expand_sources(
    sources: Iterable[str],
    settings: Settings,
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    from_files: Sequence[str] = (),
    stdin: TextIO | None = None,
    s3_client: Any = None,
) -> Iterator[MediaRef]:
    """Stream a MediaRef for every item the SOURCE arguments (then the `from_files` URL lists) name.

    Raises ConfigError (a usage error: missing path, unknown bucket or scheme, path outside the
    allowed roots) before the first item if any named source is wrong, and TransientError when
    S3 cannot be reached. See the module docstring for the rules.
    """
    ctx = _Context(settings, _Filter.build(include, exclude), stdin, s3_client)
    plans = [_plan(source, ctx) for source in sources]
    plans += [_list_items(read_url_list(path, stdin=stdin), ctx) for path in from_files]
    for plan in plans:
        yield from plan


def _plan(source: str, ctx: _Context) -> Iterator[MediaRef]:
    """Check one SOURCE now and return the (lazy, not yet started) iterator over its items."""
    if source == "-":
        return _list_items(read_url_list("-", stdin=ctx.stdin), ctx)
    if scheme_of(source):
        try:
            url = MediaUrl.parse(source)
        except InvalidMediaUrlError as exc:
            if scheme_of(source) in FETCHABLE_SCHEMES:
                raise ConfigError(str(exc)) from None
            raise ConfigError(f"{exc} in {redact_url(source)}: use a path, file://, http(s):// or s3://") from None
        if url.scheme == "s3":
            return _plan_s3(url, ctx)
        if url.path is not None:
            return _plan_local(url.path, source, ctx)
        return iter([MediaRef(source)])
    path = Path(source).expanduser()
    if not path.exists() and _GLOB_MAGIC.search(source):
        return _plan_glob(source, ctx)
    return _plan_local(path, source, ctx)


# --- local files, directories, globs ------------------------------------------------------------


def _plan_local(path: Path, source: str, ctx: _Context) -> Iterator[MediaRef]:
    if not path.exists():
        raise ConfigError(f"no such file or directory: {source}")
    resolved = path.resolve()
    if not is_allowed_local_path(resolved, ctx.settings):
        raise ConfigError(f"{source} is outside the allowed local roots (DEEPSCAN_LOCAL_ROOTS)")
    if resolved.is_dir():
        return _listed(resolved, ctx, pattern=None, max_depth=None)
    if not resolved.is_file():
        raise ConfigError(f"not a regular file or directory: {source}")
    return iter([_local_ref(resolved)])


def _plan_glob(pattern: str, ctx: _Context) -> Iterator[MediaRef]:
    base, rest = _split_glob(pattern)
    if not base.is_dir():
        raise ConfigError(f"no such directory: {base} (in pattern {pattern})")
    resolved = base.resolve()
    if not is_allowed_local_path(resolved, ctx.settings):
        raise ConfigError(f"{pattern} is outside the allowed local roots (DEEPSCAN_LOCAL_ROOTS)")
    parts = rest.split("/")
    max_depth = None if "**" in parts else len(parts) - 1
    return _listed(resolved, ctx, pattern=_glob_regex(parts), max_depth=max_depth)


def _split_glob(pattern: str) -> tuple[Path, str]:
    """The longest leading directory without wildcards, and the rest of the pattern (POSIX form)."""
    parts = Path(pattern).expanduser().parts
    first_magic = next(i for i, part in enumerate(parts) if _GLOB_MAGIC.search(part))
    base = Path(*parts[:first_magic]) if first_magic else Path()
    return base, "/".join(parts[first_magic:])


def _glob_regex(parts: list[str]) -> re.Pattern[str]:
    """Compile glob components: `*`, `?` and `[...]` stay within one directory, `**` spans any number."""
    pieces = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            pieces.append(".+" if last else "(?:[^/]+/)*")
        else:
            pieces.append(_glob_component(part) + ("" if last else "/"))
    return re.compile("".join(pieces))


def _glob_component(part: str) -> str:
    out, i = [], 0
    while i < len(part):
        char = part[i]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[" and (end := part.find("]", i + 2)) != -1:
            body = part[i + 1 : end].replace("\\", "\\\\")
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def _listed(root: Path, ctx: _Context, *, pattern: re.Pattern[str] | None, max_depth: int | None) -> Iterator[MediaRef]:
    """The files under `root` that the glob `pattern` (if any) and the filter accept, as MediaRefs.

    Files that only their extension kept out (`notes.txt`, `logo.svg`) are counted and reported in
    one warning once the listing ends, so "28 items" from a folder of 29 files never comes without a word.
    """
    left_out: Counter[str] = Counter()
    for path, rel in _walk(root, "", max_depth):
        if pattern is not None and not pattern.fullmatch(rel):
            continue
        if not ctx.filter.accepts(path.name, rel, str(path)):
            if ctx.filter.left_out_by_extension(path.name, rel, str(path)):
                left_out[_extension(path.name)] += 1
            continue
        if not path.is_relative_to(root):
            logger.warning("skipping %s: it is a symlink to a file outside %s", root / rel, root)
            continue
        try:
            yield _local_ref(path)
        except OSError as exc:  # vanished or unreadable between listing and stat
            logger.warning("skipping %s: %s", path, exc.strerror or exc)
    _report_left_out(str(root), left_out)


def _report_left_out(listing: str, left_out: Counter[str]) -> None:
    """One warning naming how many files of `listing` their extension kept out, by extension."""
    total = left_out.total()
    if not total:
        return
    logger.warning(
        "%s: left out %d %s not an image or video by %s extension (%s); --include '*' scans every file",
        listing,
        total,
        "file that is" if total == 1 else "files that are",
        "its" if total == 1 else "their",
        ", ".join(f"{n} {ext}" for ext, n in left_out.most_common()),
    )


def _extension(name: str) -> str:
    return Path(name).suffix.lower() or "(no extension)"


def _walk(directory: Path, rel: str, depth_left: int | None) -> Iterator[tuple[Path, str]]:
    """Regular files under `directory`, depth first in name order, with their POSIX relative path.

    Symlinked files are resolved; symlinked directories are not followed (no cycles).
    """
    try:
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda entry: entry.name)
    except OSError as exc:
        logger.warning("cannot list %s: %s", directory, exc.strerror or exc)
        return
    for entry in entries:
        child_rel = rel + entry.name
        if entry.is_dir(follow_symlinks=False):
            if depth_left is None or depth_left > 0:
                yield from _walk(Path(entry.path), child_rel + "/", None if depth_left is None else depth_left - 1)
        elif entry.is_file():
            path = Path(entry.path)
            yield (path.resolve() if entry.is_symlink() else path), child_rel


def _local_ref(path: Path) -> MediaRef:
    stat = path.stat()
    return MediaRef(path.as_uri(), size=stat.st_size, last_modified=datetime.fromtimestamp(stat.st_mtime, UTC))


# --- URL lists ----------------------------------------------------------------------------------


def _list_items(lines: Iterator[str], ctx: _Context) -> Iterator[MediaRef]:
    """Each line is one named item, taken as it is; local paths get canonical file URLs."""
    for line in lines:
        if not scheme_of(line):
            yield _listed_file_ref(Path(line).expanduser().absolute())
            continue
        try:
            path = MediaUrl.parse(line).path
        except InvalidMediaUrlError:
            path = None
        # fetch reports a bad URL or a vanished object as the item's error
        yield MediaRef(line) if path is None else _listed_file_ref(path)


def _listed_file_ref(path: Path) -> MediaRef:
    try:
        resolved = path.resolve()
        return _local_ref(resolved) if resolved.is_file() else MediaRef(resolved.as_uri())
    except OSError:
        return MediaRef(path.as_uri())


# --- S3 -----------------------------------------------------------------------------------------


def _plan_s3(url: MediaUrl, ctx: _Context) -> Iterator[MediaRef]:
    bucket, prefix = url.bucket or "", url.key or ""
    client = ctx.s3()
    try:  # a one-key listing needs exactly the permission the real listing needs (HeadBucket may not)
        client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
    except Exception as exc:
        raise _s3_error(exc, bucket) from None
    return _s3_refs(client, bucket, prefix, ctx.filter)


def _s3_refs(client: Any, bucket: str, prefix: str, filt: _Filter) -> Iterator[MediaRef]:
    """Every object under the prefix, one ListObjectsV2 page at a time (page size DEFAULT_S3_PAGE_SIZE)."""
    paginator = client.get_paginator("list_objects_v2")
    pages = paginator.paginate(Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": DEFAULT_S3_PAGE_SIZE})
    left_out: Counter[str] = Counter()
    try:
        for page in pages:
            for obj in page.get("Contents", ()):
                key: str = obj["Key"]
                name = key.rpartition("/")[2]
                if key == prefix or (not key.endswith("/") and filt.accepts(name, key)):
                    yield _s3_ref(bucket, obj)
                elif not key.endswith("/") and filt.left_out_by_extension(name, key):
                    left_out[_extension(name)] += 1
    except Exception as exc:
        raise _s3_error(exc, bucket) from None
    _report_left_out(f"s3://{bucket}/{prefix}", left_out)


def _s3_ref(bucket: str, obj: dict[str, Any]) -> MediaRef:
    etag = obj.get("ETag")
    return MediaRef(
        f"s3://{bucket}/{obj['Key']}",
        size=obj.get("Size"),
        etag=etag.strip('"') if etag else None,
        last_modified=obj.get("LastModified"),
    )


def _s3_error(exc: Exception, bucket: str) -> Exception:
    """Translate a boto3 failure while listing into ConfigError (fix and rerun) or TransientError."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    if isinstance(exc, NoCredentialsError):
        return ConfigError("no AWS credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE")
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _S3_MISSING_BUCKET:
            return ConfigError(f"s3 bucket {bucket!r} does not exist (check the name and --s3-endpoint-url)")
        if code in _S3_DENIED:
            return ConfigError(f"access denied listing s3 bucket {bucket!r}: check the AWS credentials and policy")
        return TransientError(f"s3 listing of bucket {bucket!r} failed: {code or 'error'}")
    if isinstance(exc, BotoCoreError):
        return TransientError(f"cannot reach S3 for bucket {bucket!r}: {exc}")
    return exc
