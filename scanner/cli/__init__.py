"""The `deepscan` command line: the one face of the product that imports everything.

Commands parse, validate and print; the work is done by plain functions in `scanner`,
`workers` and `training`, imported inside each command so `deepscan --help` stays fast.

Exit codes: 0 success, 1 failure (one line on stderr), 2 usage error, 3 a scan finished with
item errors.
"""

from __future__ import annotations

import logging
import sys

import click

from scanner import __version__
from scanner.cli.context import AppContext, DeepscanGroup
from scanner.redaction import install_log_redaction
from scanner.settings import Settings

HELP = """deepscan finds manipulated (deepfake) faces in images and videos at bucket scale.

\b
Point it at local folders, http(s) URLs, s3:// buckets or URL lists; it scores every image
and sampled video frame with a fine-tuned ResNet50 and stores each verdict, per-frame score
and error in a SQL database that moderators query, review and export.

\b
Without DEEPSCAN_BROKER_URL everything runs in this process against an embedded SQLite
database; with it, `deepscan scan` enqueues work for `deepscan worker` processes.

\b
Start with `deepscan demo`, then `deepscan scan PATH`.
"""


@click.group(cls=DeepscanGroup, help=HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="deepscan")
@click.option(
    "--database-url",
    envvar="DEEPSCAN_DATABASE_URL",
    metavar="URL",
    help="SQLAlchemy URL of the verdict database [env DEEPSCAN_DATABASE_URL; default: SQLite in DEEPSCAN_HOME].",
)
@click.option(
    "--broker-url",
    envvar="DEEPSCAN_BROKER_URL",
    metavar="URL",
    help="Celery broker (redis://…); unset runs scans in-process [env DEEPSCAN_BROKER_URL].",
)
@click.option("--debug", is_flag=True, help="Show full tracebacks and debug logs.")
@click.option("-v", "--verbose", is_flag=True, help="Log progress details to stderr.")
@click.pass_context
def cli(ctx: click.Context, database_url: str | None, broker_url: str | None, debug: bool, verbose: bool) -> None:
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    install_log_redaction()  # every command, `deepscan worker` included: no credential in any log line
    ctx.obj = app = AppContext.lazy(
        lambda: Settings.from_env().with_overrides(database_url=database_url, broker_url=broker_url), debug=debug
    )
    ctx.call_on_close(app.close)


def _register() -> None:
    from scanner.cli import db, demo, detector, moderation, operations, scan

    for module in (db, demo, detector, scan, moderation, operations):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="deepscan")
