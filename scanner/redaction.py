"""The one redaction helper: what deepscan logs, prints, stores as a job name or sends in a webhook
never carries a credential.

Media URLs and webhook URLs often hold secrets: `https://user:password@host/…`, presigned S3
links (`?X-Amz-Signature=…`), webhook tokens (`?token=…`); database and broker URLs hold
passwords (`postgresql://user:pass@host/db`, `redis://:pass@host`). The URL itself must stay
intact where it is used (fetching, delivering); everywhere it is shown, it goes through here:

- `redact_url`: one URL made safe to show;
- `redact_text`: every URL (and `password=…`-style pair) inside free text, e.g. an exception message;
- `RedactingFilter` / `install_log_redaction`: the same for every log record a handler writes;
- `job_name`: the name stored for a job, redacted and cut to the database column.

Nothing here raises on odd input: a redactor that fails would hide the real error.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

MAX_JOB_NAME_CHARS = 200  # scan_jobs.name is VARCHAR(200)
ELLIPSIS = "…"
MASK = "***"

_URL_START = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# Userinfo the way database and broker clients read it (SQLAlchemy's own pattern): a user name
# without `:` or `/`, then an optional `:password` that runs to the `@`.
_DSN_USERINFO = re.compile(r"^([^:/@?#]*)(?::[^@]*)?@")
# In free text: a URL runs to whitespace, a quote or an angle bracket; a bare absolute path with a
# query string (urllib3's request lines: `"GET /a.jpg?token=… HTTP/1.1"`) loses its query too.
_IN_TEXT = re.compile(
    r"(?P<url>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+)"
    r"|(?P<path>(?<![^\s'\"(=])/[^\s?'\"<>`]*\?[^\s'\"<>`]*)"
    r"|(?P<pair>(?<![A-Za-z0-9])(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key)=)"
    r"(?P<value>[^\s&'\",;]+)",
    re.IGNORECASE,
)


def redact_url(url: str) -> str:
    """`url` safe to log, print or store where a person may read it.

    http(s): user info, query string and fragment are dropped (a presigned or tokenised link
    loses its signature). Other URLs with user info (database and broker DSNs, `s3://key:secret@…`)
    keep the user name but not the password, and lose their query string (a `?password=` too);
    s3:// and file:// URLs are otherwise kept as they are, since bucket, key and path are what a
    moderator needs. Plain paths come back unchanged.
    """
    match = _URL_START.match(url)
    if match is None:
        return url
    scheme, rest = match.group(1).lower(), url[match.end() :]
    if scheme in ("http", "https"):
        return f"{match.group(1)}://{_http_without_secrets(rest)}"
    user = ""
    userinfo = _DSN_USERINFO.match(rest)  # before the query is cut: a password may hold a raw `?` or `#`
    if userinfo is not None:
        has_password = len(userinfo.group(0)) > len(userinfo.group(1)) + 1
        user = userinfo.group(1) + (f":{MASK}" if has_password else "") + "@"
        rest = rest[userinfo.end() :]
    if scheme != "s3":
        rest = rest.split("#", 1)[0]  # S3 keys may hold `#`; elsewhere it starts a fragment
    return f"{match.group(1)}://{user}{rest.split('?', 1)[0]}"


def _http_without_secrets(rest: str) -> str:
    """`host[:port]/path` of what follows `http(s)://`: the authority ends at the first `/`, `?` or `#`."""
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    host = rest[:end].rpartition("@")[2]
    path = re.split(r"[?#]", rest[end:], maxsplit=1)[0]
    return host + path


def redact_text(text: str) -> str:
    """`text` with every URL in it redacted (see `redact_url`), the query string of any bare
    `/path?…` dropped, and the value of `password=`, `token=`, `secret=`… pairs masked."""
    return _IN_TEXT.sub(_redact_match, text)


def _redact_match(match: re.Match[str]) -> str:
    if match.group("url") is not None:
        return redact_url(match.group("url"))
    if match.group("path") is not None:
        return match.group("path").split("?", 1)[0]
    return match.group("pair") + MASK


def truncate(text: str, limit: int = MAX_JOB_NAME_CHARS) -> str:
    """`text` cut to at most `limit` characters, ending in an ellipsis when something was cut."""
    if len(text) <= limit:
        return text
    return text[: max(limit - len(ELLIPSIS), 0)] + ELLIPSIS


def job_name(sources: Sequence[str], name: str | None = None) -> str:
    """The name stored for a job: `name`, else its first source; redacted, then cut to the column.

    An explicit name is redacted too: a pasted presigned URL is as secret there as anywhere.
    Redaction comes first, so a cut can never leave half a password behind.
    """
    chosen = name if name else (sources[0] if sources else "scan")
    return truncate(redact_text(chosen), MAX_JOB_NAME_CHARS)


# --- logging ------------------------------------------------------------------------------------


def redact_record(record: logging.LogRecord) -> None:
    """Redact a log record in place: its formatted message, traceback text and stack text.

    The message is formatted here (args merged in) because a secret usually arrives as an
    argument (`log.info("fetching %s", url)`) or inside an exception's text. String arguments are
    redacted in place first, keeping their tuple: some formatters read the arguments themselves
    (uvicorn's access formatter unpacks `(client, method, path, version, status)`), and the
    arguments are merged into the message only when a secret hides elsewhere.
    """
    if isinstance(record.args, tuple):
        record.args = tuple(redact_text(a) if isinstance(a, str) else a for a in record.args)
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: the handler reports it when it formats the record
        return
    redacted = redact_text(message)
    if redacted != message:
        record.msg, record.args = redacted, ()
    if record.exc_info and record.exc_text is None:
        traceback_text = logging.Formatter().formatException(record.exc_info)
        if (safe := redact_text(traceback_text)) != traceback_text:
            record.exc_text = safe  # formatters reuse exc_text instead of formatting the traceback again
    if record.stack_info:
        record.stack_info = redact_text(record.stack_info)


class RedactingFilter(logging.Filter):
    """A handler filter that redacts every record before it is written (it never drops one).

    Install it on handlers (`handler.addFilter(RedactingFilter())`, or `()` in a dictConfig); a
    filter on a logger would miss records propagated from its children.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Put a RedactingFilter on every handler of `logger` (default: the root logger), once each.

    Called where the CLI configures logging, for every command (`deepscan worker` included:
    its Celery app keeps the root logger's handlers, `worker_hijack_root_logger=False`).
    """
    target = logger if logger is not None else logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
