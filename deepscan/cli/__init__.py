"""The `deepscan` command line: the one face of the product that imports everything.

Commands parse, validate and print; the work is done by plain functions in `scanner`,
`workers` and `training`, imported inside each command so `deepscan --help` stays fast.

Global options (`--database-url`, `--broker-url`, `--debug`, `-v`, `--no-progress`) go before or
after the subcommand. Exit codes: 0 success, 1 failure (one line on stderr), 2 usage error, 3 the
work finished with item errors.
"""

from __future__ import annotations

import click

from deepscan.cli.context import (
    EXIT_CODES_HELP,
    GLOBAL_OPTION_HELP,
    AppContext,
    DeepscanGroup,
    configure_logging,
)
from scanner import __version__
from scanner.redaction import install_log_redaction
from scanner.settings import Settings

HELP = """deepscan finds manipulated (deepfake) faces in images and videos at bucket scale.

\b
Point it at local folders, http(s) URLs, s3:// buckets or URL lists; it scores the faces in
every image and sampled video frame with a detector you train (`deepscan train`; none ships)
and stores each verdict, per-frame score and error in a SQL database that moderators query,
review and export.

\b
Without DEEPSCAN_BROKER_URL everything runs in this process against an embedded SQLite
database; with it, `deepscan scan` enqueues work for `deepscan worker` processes.

\b
Start with `deepscan demo`: it trains a demo checkpoint and prints the `deepscan scan`
command that uses it. The options below also work after the subcommand.
"""


# Which module defines each command (its COMMANDS list; tested): a command's module is imported only
# when that command runs or `--help` lists it, so `deepscan scan` loads neither training, nor the web
# app, nor plotting. `jobs` gains `cancel` and `reconcile` from the operations module.
COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "scan": ("deepscan.cli.scan",),
    "worker": ("deepscan.cli.scan",),
    "results": ("deepscan.cli.moderation",),
    "show": ("deepscan.cli.moderation",),
    "review": ("deepscan.cli.moderation",),
    "export-training-set": ("deepscan.cli.moderation",),
    "stats": ("deepscan.cli.moderation",),
    "jobs": ("deepscan.cli.moderation", "deepscan.cli.operations"),
    "schedule": ("deepscan.cli.operations",),
    "beat": ("deepscan.cli.operations",),
    "train": ("deepscan.cli.detector",),
    "evaluate": ("deepscan.cli.detector",),
    "calibrate": ("deepscan.cli.detector",),
    "demo-data": ("deepscan.cli.detector",),
    "demo": ("deepscan.cli.demo",),
    "db": ("deepscan.cli.db",),
    "serve": ("deepscan.cli.serve",),
    "tokens": ("deepscan.cli.serve",),
}


@click.group(
    cls=DeepscanGroup,
    lazy_commands=COMMAND_MODULES,
    help=HELP,
    epilog=EXIT_CODES_HELP,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, "--version", prog_name="deepscan")
@click.option("--database-url", envvar="DEEPSCAN_DATABASE_URL", metavar="URL", help=GLOBAL_OPTION_HELP["database_url"])
@click.option("--broker-url", envvar="DEEPSCAN_BROKER_URL", metavar="URL", help=GLOBAL_OPTION_HELP["broker_url"])
@click.option("--debug", is_flag=True, help=GLOBAL_OPTION_HELP["debug"])
@click.option("-v", "--verbose", is_flag=True, help=GLOBAL_OPTION_HELP["verbose"])
@click.option("--no-progress", is_flag=True, help=GLOBAL_OPTION_HELP["no_progress"])
@click.pass_context
def cli(
    ctx: click.Context, database_url: str | None, broker_url: str | None, debug: bool, verbose: bool, no_progress: bool
) -> None:
    configure_logging(debug=debug, verbose=verbose)
    install_log_redaction()  # every command, `deepscan worker` included: no credential in any log line
    ctx.obj = app = AppContext.lazy(
        lambda: Settings.from_env().with_overrides(database_url=database_url, broker_url=broker_url),
        debug=debug,
        progress=not no_progress,
    )
    ctx.call_on_close(app.close)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="deepscan")
