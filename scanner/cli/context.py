"""What every command shares: the settings, the database, and one-line error reporting."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from scanner import migrate
from scanner.db import check_connection, database_error_message, make_engine
from scanner.errors import DeepscanError
from scanner.redaction import redact_text
from scanner.settings import Settings

EXIT_ITEM_ERRORS = 3


class DeepscanGroup(click.Group):
    """A group that turns deepscan's own errors into one line on stderr (traceback with --debug).

    Every such line is redacted: errors often quote the URL they failed on, with its credentials.
    """

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
    """Lazily built settings and engine, so `--help` and bad options cost nothing."""

    build_settings: Callable[[], Settings]
    debug: bool = False
    _settings: Settings | None = field(default=None, init=False)
    _engine: Engine | None = field(default=None, init=False)

    @classmethod
    def lazy(cls, build_settings: Callable[[], Settings], *, debug: bool) -> AppContext:
        return cls(build_settings=build_settings, debug=debug)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = self.build_settings()
        return self._settings

    @property
    def engine(self) -> Engine:
        """The database engine, connected once to fail early with a clear line."""
        if self._engine is None:
            engine = make_engine(self.settings.database_url)
            check_connection(engine)
            ensure_schema(engine, self.settings.database_url)
            self._engine = engine
        return self._engine

    @property
    def engine_if_open(self) -> Engine | None:
        return self._engine

    def close(self) -> None:
        """Return the engine's connections (called when the command ends)."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def ensure_schema(engine: Engine, url: str) -> None:
    """Migrate an embedded SQLite database on first use; ask for `db upgrade` anywhere else.

    A server database is shared by many processes and is migrated once, on purpose, by its
    operator (`deepscan db upgrade`, the compose `migrate` service).
    """
    current, head = migrate.current_revision(url), migrate.head_revision()
    if current == head:
        return
    if engine.dialect.name == "sqlite":
        migrate.upgrade(url)
        return
    raise DeepscanError(
        f"the database is at revision {current or 'base (empty)'}, not {head}: run `deepscan db upgrade` first"
    )


pass_app = click.make_pass_decorator(AppContext)
