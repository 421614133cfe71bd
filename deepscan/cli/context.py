"""What every command shares: the settings, the database, the global options, exit codes and one-line errors."""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from scanner import revisions
from scanner.db import check_connection, database_error_message, make_engine
from scanner.errors import DeepscanError
from scanner.redaction import redact_text
from scanner.settings import Settings

EXIT_FAILURE = 1  # the command failed (one line on stderr saying why)
EXIT_USAGE = 2  # the command line is wrong (Click's own code for usage errors)
EXIT_ITEM_ERRORS = 3  # the work finished, but some items ended `error`
EXIT_CODES_HELP = "Exit codes: 0 success, 1 failure, 2 usage error, 3 finished with item errors."
# Only these commands create an embedded SQLite file that does not exist yet (`db upgrade` too,
# through Alembic); every other command says "no database at …" instead of creating an empty one.
DATABASE_CREATING_COMMANDS = frozenset({"scan", "demo"})


class DeepscanGroup(click.Group):
    """A group that turns deepscan's own errors into one line on stderr (traceback with --debug).

    Every such line is redacted: errors often quote the URL they failed on, with its credentials.
    """

    def __init__(self, *args: Any, lazy_commands: Mapping[str, Sequence[str]] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands or {})  # command name -> the modules that define it

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """A lazy command's modules are imported the first time it is asked for (Click's lazy-loading pattern)."""
        if cmd_name not in self.commands and cmd_name in self.lazy_commands:
            modules = [importlib.import_module(name) for name in self.lazy_commands[cmd_name]]
            command = next(c for c in modules[0].COMMANDS if c.name == cmd_name)
            add_global_options(command)
            self.add_command(command)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (DeepscanError, DBAPIError) as exc:
            app = ctx.obj if isinstance(ctx.obj, AppContext) else None
            if app is not None and app.debug:
                raise
            if isinstance(exc, DBAPIError):
                message = database_error_message(app.engine_if_open if app is not None else None, exc)
            else:
                message = redact_text(str(exc))
            raise click.ClickException(message) from None


@dataclass
class AppContext:
    """Lazily built settings and engine, so `--help` and bad options cost nothing.

    Global options given after the subcommand land in `overrides` before anything is built.
    """

    build_settings: Callable[[], Settings]
    debug: bool = False
    progress: bool = True
    overrides: dict[str, Any] = field(default_factory=dict)
    _settings: Settings | None = field(default=None, init=False)
    _engine: Engine | None = field(default=None, init=False)

    @classmethod
    def lazy(cls, build_settings: Callable[[], Settings], *, debug: bool, progress: bool = True) -> AppContext:
        return cls(build_settings=build_settings, debug=debug, progress=progress)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = self.build_settings().with_overrides(**self.overrides)
        return self._settings

    def override(self, **changes: Any) -> None:
        """Settings given as global options after the subcommand (None leaves a setting alone)."""
        self.overrides.update({k: v for k, v in changes.items() if v is not None})
        self._settings = None

    @property
    def engine(self) -> Engine:
        """The database engine, connected once to fail early with a clear line."""
        if self._engine is None:
            if not _current_command_creates_database():
                require_database(self.settings.database_url)
            engine = make_engine(self.settings.database_url)
            check_connection(engine)
            ensure_schema(engine, self.settings.database_url)
            self._engine = engine
        return self._engine

    @property
    def engine_if_open(self) -> Engine | None:
        return self._engine

    def show_progress(self, output_format: str = "table") -> bool:
        """Progress bars only for people: table output, stderr a terminal, no --no-progress."""
        return self.progress and output_format == "table" and sys.stderr.isatty()

    def close(self) -> None:
        """Finish webhook deliveries still in flight, then return the engine's connections."""
        notify = sys.modules.get("workers.notify")  # loaded only by commands that may deliver
        if notify is not None:
            left = notify.drain_background_deliveries()
            if left:
                click.echo(f"warning: {left} webhook deliveries were still being retried and are dropped", err=True)
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def sqlite_path(url: str) -> Path | None:
    """The file an SQLite URL names; None for other databases, in-memory ones and unparsable URLs."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return None  # make_engine reports it in its own words
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    if parsed.database.startswith("file:"):
        return None
    return Path(parsed.database).expanduser()


def require_database(url: str) -> None:
    """Refuse (exit 1) to open an SQLite file that does not exist, rather than create an empty one."""
    path = sqlite_path(url)
    if path is not None and not path.exists():
        raise DeepscanError(
            f"no database at {path}: `deepscan scan` or `deepscan db upgrade` creates it; "
            "or check --database-url, DEEPSCAN_DATABASE_URL and DEEPSCAN_HOME"
        )


def _current_command_creates_database() -> bool:
    ctx = click.get_current_context(silent=True)
    return ctx is not None and ctx.find_root().invoked_subcommand in DATABASE_CREATING_COMMANDS


def ensure_schema(engine: Engine, url: str) -> None:
    """Migrate an embedded SQLite database on first use; ask for `db upgrade` anywhere else.

    A server database is shared by many processes and is migrated once, on purpose, by its
    operator (`deepscan db upgrade`, the compose `migrate` service).
    """
    current, head = revisions.database_revision(engine), revisions.newest_revision()
    if current == head:
        return
    from scanner import migrate  # Alembic: 0.1-0.2 s to import, needed only when the schema is behind

    if engine.dialect.name == "sqlite":
        migrate.upgrade(url)
        return
    raise DeepscanError(
        f"the database is at revision {current or 'base (empty)'}, not {head}: run `deepscan db upgrade` first"
    )


pass_app = click.make_pass_decorator(AppContext)


# --- global options: accepted before or after the subcommand ------------------------------------


def configure_logging(*, debug: bool, verbose: bool, again: bool = False) -> None:
    """Log to stderr at WARNING, INFO (-v) or DEBUG (--debug); `again` raises the level set before."""
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if again:  # a flag given after the subcommand, once the root group configured logging
        logging.getLogger().setLevel(level)


def _app_of(ctx: click.Context) -> AppContext | None:
    return ctx.find_object(AppContext)


def _set_setting(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    app = _app_of(ctx)
    if app is not None and value is not None and param.name is not None:
        app.override(**{param.name: value})


def _set_debug(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    app = _app_of(ctx)
    if app is not None and value:
        app.debug = True
        configure_logging(debug=True, verbose=False, again=True)


def _set_verbose(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    app = _app_of(ctx)
    if app is not None and value and not app.debug:
        configure_logging(debug=False, verbose=True, again=True)


def _set_no_progress(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    app = _app_of(ctx)
    if app is not None and value:
        app.progress = False


GLOBAL_OPTION_HELP = {
    "database_url": (
        "SQLAlchemy URL of the verdict database [env DEEPSCAN_DATABASE_URL; default: SQLite in DEEPSCAN_HOME]."
    ),
    "broker_url": "Celery broker (redis://…); unset runs scans in-process [env DEEPSCAN_BROKER_URL].",
    "debug": "Show full tracebacks and debug logs.",
    "verbose": "Log progress details to stderr.",
    "no_progress": "Never draw progress bars (they are drawn only when stderr is a terminal).",
}


def global_options_for_subcommand() -> list[click.Option]:
    """The root group's options again, for a subcommand: `deepscan results --database-url URL` works too.

    They take no environment variables (the root's do) and only override what is given.
    """
    return [
        click.Option(
            ["--database-url"],
            metavar="URL",
            expose_value=False,
            callback=_set_setting,
            help=GLOBAL_OPTION_HELP["database_url"],
        ),
        click.Option(
            ["--broker-url"],
            metavar="URL",
            expose_value=False,
            callback=_set_setting,
            help=GLOBAL_OPTION_HELP["broker_url"],
        ),
        click.Option(
            ["--debug"], is_flag=True, expose_value=False, callback=_set_debug, help=GLOBAL_OPTION_HELP["debug"]
        ),
        click.Option(
            ["-v", "--verbose"],
            is_flag=True,
            expose_value=False,
            callback=_set_verbose,
            help=GLOBAL_OPTION_HELP["verbose"],
        ),
        click.Option(
            ["--no-progress"],
            is_flag=True,
            expose_value=False,
            callback=_set_no_progress,
            help=GLOBAL_OPTION_HELP["no_progress"],
        ),
    ]


def add_global_options(command: click.Command) -> None:
    """Give `command` (and, for a group, every command under it) the global options and the exit codes in --help."""
    taken = {opt for param in command.params for opt in getattr(param, "opts", [])}
    command.params.extend(o for o in global_options_for_subcommand() if not taken & set(o.opts))
    if not command.epilog:
        command.epilog = EXIT_CODES_HELP
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            add_global_options(sub)
