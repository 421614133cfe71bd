"""The exceptions deepscan raises, split by what the caller should do about them.

`PermanentError` means the input itself is bad (a corrupt file, a 404): the item ends `error`
with the message as its reason and is never retried. `TransientError` means the world was
briefly unavailable (network, database, broker): the work is retried with backoff.
Every message is one line a moderator or operator can act on. `is_transient` also knows the
database driver's own errors for a lost or refused connection: a restart of the database during an
item is the world being unavailable, never the item's verdict.
"""

from collections.abc import Collection

from sqlalchemy import exc as sa_exc

# The database went away, refused us or timed out: retrying later can succeed. (An IntegrityError
# or ProgrammingError is a bug or bad data, and is not among them.)
TRANSIENT_DATABASE_ERRORS = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,
)


class DeepscanError(Exception):
    """Root of every error deepscan raises on purpose."""


class ConfigError(DeepscanError):
    """A setting or option is invalid: fix the configuration and run again."""


def check_choice(value: str, choices: Collection[str], what: str) -> None:
    """ConfigError, naming the choices, when `value` is not one of them ("unknown crop mode 'x': use one of ...")."""
    if value not in choices:
        raise ConfigError(f"unknown {what} {value!r}: use one of {', '.join(choices)}")


class NotFoundError(DeepscanError):
    """What a request names does not exist (no such job, item or schedule): nothing was changed;
    the API answers 404, the CLI exits 1."""


class InvalidInputError(DeepscanError):
    """A value a user gave breaks a rule of the core (a webhook URL, a scan option out of range,
    sources with nothing to scan): nothing was done; the API answers 422, the CLI exits 1 (2 where
    it checks the value as an option)."""


class ConflictError(DeepscanError):
    """The request contradicts the state of what it names (labelling an item that has no verdict):
    nothing was changed; the API answers 409, the CLI exits 1."""


class DatabaseUnavailableError(DeepscanError):
    """The database cannot be reached or refused the connection."""


class CheckpointError(DeepscanError):
    """A checkpoint file is missing, not a safetensors file, truncated or tampered with."""


class PermanentError(DeepscanError):
    """The media item itself cannot be scanned; retrying will not help."""


class TransientError(DeepscanError):
    """A temporary failure (network, database, broker); the work should be retried."""


class DeadlineExceededError(PermanentError):
    """An item took longer than its deadline to fetch or decode; it ends `error`, never retried."""


class WorkerStoppingError(TransientError):
    """The worker was told to stop mid-chunk: the unfinished items were handed back for a retry."""


def is_transient(exc: BaseException) -> bool:
    """Whether `exc` is the world briefly unavailable (retry the work later) rather than bad input."""
    if isinstance(exc, (TransientError, *TRANSIENT_DATABASE_ERRORS)):
        return True
    return isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated
