"""`deepscan db …`: create, migrate and check the verdict database."""

from __future__ import annotations

import click

from deepscan.cli.context import AppContext, pass_app, require_database
from scanner import migrate
from scanner.db import describe_url


@click.group()
def db() -> None:
    """Create, migrate and check the verdict database (Alembic migrations)."""


@db.command()
@click.argument("revision", default="head")
@pass_app
def upgrade(app: AppContext, revision: str) -> None:
    """Migrate the database up to REVISION (default: head, the newest).

    Creates the SQLite file and its folder when they do not exist yet.
    """
    url = app.settings.database_url
    migrate.upgrade(url, revision)
    click.echo(f"{describe_url(url)} is at revision {migrate.current_revision(url)}")


@db.command()
@click.argument("revision")
@pass_app
def downgrade(app: AppContext, revision: str) -> None:
    """Migrate the database down to REVISION (`base` drops every deepscan table)."""
    url = app.settings.database_url
    require_database(url)
    migrate.downgrade(url, revision)
    click.echo(f"{describe_url(url)} is at revision {migrate.current_revision(url) or 'base'}")


@db.command()
@pass_app
def current(app: AppContext) -> None:
    """Print the revision the database is at, and whether it is the newest."""
    url = app.settings.database_url
    require_database(url)
    rev = migrate.current_revision(url)
    head = migrate.head_revision()
    state = "up to date" if rev == head else f"behind head {head}: run `deepscan db upgrade`"
    click.echo(f"{rev or 'base (empty)'} ({state})")


@db.command()
@pass_app
def check(app: AppContext) -> None:
    """Fail (exit 1) when the ORM models and the migrations disagree.

    The database must be at head; the check compares it with what the models describe.
    """
    require_database(app.settings.database_url)
    migrate.check(app.settings.database_url)
    click.echo("no drift: models and migrations agree")


COMMANDS: list[click.Command] = [db]
