"""A media item's URL, parsed once into what each part of deepscan needs of it.

An item is named by a string (`file:///data/a.jpg`, `https://host/a.jpg`, `s3://bucket/key`), and
that string is what the database stores, the queue carries and the fetch uses. Everything that
must *understand* it (which fetcher, which bucket and key, which host to check against the SSRF
guard, which local path to check against the allowed roots, the file name a moderator sees, the
form that is safe to print) asks a `MediaUrl`, parsed here and nowhere else, as kombu keeps its
broker URLs in `kombu.utils.url`. A string that no fetch could ever read fails to parse with
`InvalidMediaUrlError` (a ValueError) and a one-line reason; the caller decides whether that is a
usage error (a SOURCE typed wrong) or one item's error (a line of a URL list).

SOURCE arguments are wider than media URLs (plain paths, globs, `@list`, `-`): `scheme_of` tells
a URL from a path without parsing further, and the sources module parses the URLs among them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote_to_bytes, urlsplit

from scanner.redaction import redact_url
from scanner.settings import Settings

FETCHABLE_SCHEMES = ("file", "http", "https", "s3")
REMOTE_SCHEMES = frozenset({"http", "https", "s3"})
DEFAULT_PORTS = {"http": 80, "https": 443}

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_S3_BUCKET_NAME = re.compile(r"[a-zA-Z0-9.\-_]{1,255}")  # what botocore sends (access-point ARNs aside)


class InvalidMediaUrlError(ValueError):
    """A string that names no item deepscan can fetch; its message is the one-line reason."""


def scheme_of(text: str) -> str:
    """The lower-cased scheme of `text` (`""` for a plain path, a glob or anything not `scheme://`)."""
    match = _SCHEME.match(text)
    return match.group(1).lower() if match else ""


@dataclass(frozen=True)
class MediaUrl:
    """One item's URL and its parts. `text` is kept verbatim: it is what is stored and fetched."""

    text: str
    scheme: str  # "file", "http", "https", "s3", or "" for a plain absolute path
    host: str | None = None  # http(s): the host name, lower-cased
    port: int | None = None  # http(s): the port, the scheme's default when none is written
    bucket: str | None = None  # s3
    key: str | None = None  # s3: verbatim (S3 keys are not URL-encoded); "" for a whole bucket
    path: Path | None = None  # file:// or a plain path: the absolute local path
    url_path: str = ""  # http(s): the path part, still %-encoded

    @classmethod
    def parse(cls, text: str) -> MediaUrl:
        """Parse `text`; InvalidMediaUrlError, its reason free of credentials, when it cannot name media."""
        scheme = scheme_of(text)
        if scheme in ("http", "https"):
            return cls._parse_http(text, scheme)
        if scheme == "s3":
            return cls._parse_s3(text)
        if scheme == "file":
            return cls._parse_file(text)
        if scheme:
            raise InvalidMediaUrlError(f"unsupported URL scheme {scheme!r}")
        if not Path(text).is_absolute():
            raise InvalidMediaUrlError("not a URL (expected file://, http(s)://, s3://)")
        return cls(text, "", path=Path(text))

    @classmethod
    def _parse_http(cls, text: str, scheme: str) -> MediaUrl:
        parts = urlsplit(text)
        if not parts.hostname:
            raise InvalidMediaUrlError(f"{redact_url(text)!r} has no host name")
        try:
            port = parts.port or DEFAULT_PORTS[scheme]
        except ValueError:
            raise InvalidMediaUrlError(f"{redact_url(text)!r} has an invalid port") from None
        return cls(text, scheme, host=parts.hostname, port=port, url_path=parts.path)

    @classmethod
    def _parse_s3(cls, text: str) -> MediaUrl:
        bucket, _, key = _SCHEME.sub("", text, count=1).partition("/")
        if not bucket:
            raise InvalidMediaUrlError(f"{redact_url(text)!r} names no bucket: use s3://BUCKET/PREFIX")
        if not _S3_BUCKET_NAME.fullmatch(bucket) and not bucket.startswith("arn:"):
            # a ParamValidationError from botocore would only come at the request, looking like a network failure
            shown = bucket.rpartition("@")[2]  # never echo user info pasted into the wrong place
            raise InvalidMediaUrlError(
                f"invalid s3 bucket name {shown!r}: use letters, digits, '.', '-' and '_' (at most 255)"
            )
        return cls(text, "s3", bucket=bucket, key=key)

    @classmethod
    def _parse_file(cls, text: str) -> MediaUrl:
        parts = urlsplit(text)
        if parts.netloc not in ("", "localhost"):
            host = parts.netloc.rpartition("@")[2]  # never echo user info
            raise InvalidMediaUrlError(f"file URL names another host ({host}): only local files can be read")
        path = Path(os.fsdecode(unquote_to_bytes(parts.path)))
        if not path.is_absolute():
            raise InvalidMediaUrlError("file URL must hold an absolute path, like file:///data/a.jpg")
        return cls(text, "file", path=path)

    @property
    def redacted(self) -> str:
        """The form safe to log, print or store where a person may read it (scanner.redaction)."""
        return redact_url(self.text)

    @property
    def name(self) -> str:
        """The item's file name, as a moderator would call it (the whole URL when it has none)."""
        if self.path is not None:
            whole = str(self.path)
        elif self.key is not None:
            whole = self.key
        else:
            whole = self.url_path
        return whole.rstrip("/").rpartition("/")[2] or self.redacted

    @property
    def suffix(self) -> str:
        """The file name's extension with its dot (`.mp4`), or ""."""
        return Path(self.name).suffix

    def __str__(self) -> str:
        return self.text


def is_allowed_local_path(path: Path, settings: Settings) -> bool:
    """True unless `settings.local_roots` is set and the resolved `path` lies outside every root."""
    if not settings.local_roots:
        return True
    resolved = path.resolve()
    return any(resolved.is_relative_to(root) for root in settings.local_roots)


def display_name(text: str) -> str:
    """The file name of a stored item URL for display; never raises (the URL itself when it cannot be parsed)."""
    try:
        return MediaUrl.parse(text).name
    except ValueError:
        return text
