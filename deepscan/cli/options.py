"""Options and parameter types shared by several commands, defined once."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import click

from scanner.durations import DURATION_EXAMPLES, is_duration, parse_duration
from scanner.errors import ConfigError, InvalidInputError
from scanner.settings import PRECISION_CHOICES, validate_device

NO_CHECKPOINT = (
    "no checkpoint configured: pass --checkpoint FILE or set DEEPSCAN_CHECKPOINT "
    "(`deepscan demo` prints where its demo checkpoint is; `deepscan train` makes a real one)"
)


def _device(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return validate_device(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


class DurationType(click.ParamType[dt.timedelta]):
    """A length of time: 30s, 15m, 1.5h, 7d, 1w (scanner.durations, the one grammar)."""

    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> dt.timedelta:
        if isinstance(value, dt.timedelta):
            return value
        try:
            return parse_duration(str(value))
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


class WhenType(click.ParamType[dt.datetime]):
    """A moment: an ISO 8601 date or time (naive means UTC), or an age such as 30m, 1.5h, 7d, 1w ago."""

    name = "WHEN"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> dt.datetime:
        if isinstance(value, dt.datetime):
            return value
        text = str(value).strip()
        if is_duration(text):
            return dt.datetime.now(dt.UTC) - parse_duration(text)
        try:
            parsed = dt.datetime.fromisoformat(text)
        except ValueError:
            self.fail(
                f"{text!r} is not a date (2026-01-31), a time (2026-01-31T12:00Z) or an age ({DURATION_EXAMPLES})",
                param,
                ctx,
            )
        return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)


DURATION = DurationType()
WHEN = WhenType()


def require_checkpoint(checkpoint: Path | None) -> Path:
    """The checkpoint a command needs; a usage error (exit 2) when none is given or the file is missing.

    Every command that loads a model calls this, so a missing checkpoint exits 2 everywhere.
    """
    if checkpoint is None:
        raise click.UsageError(NO_CHECKPOINT)
    if not checkpoint.is_file():
        raise click.BadParameter(
            f"{checkpoint} does not exist (train one with `deepscan train`, or run `deepscan demo`)",
            param_hint="'--checkpoint' / DEEPSCAN_CHECKPOINT",
        )
    return checkpoint


def _webhook(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Check a webhook URL when it is given (exit 2), and that deliveries can be signed."""
    if value is None:
        return None
    from scanner.webhooks import validate_webhook_url
    from workers.notify import NO_SECRET_HINT

    try:
        url = validate_webhook_url(value)
    except InvalidInputError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None
    from deepscan.cli.context import AppContext

    app = ctx.find_object(AppContext)
    if app is not None and not app.settings.webhook_secret:
        raise click.BadParameter(NO_SECRET_HINT, ctx, param)
    return url


checkpoint_option = click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="DEEPSCAN_CHECKPOINT",
    help="Detector checkpoint (.safetensors) [env DEEPSCAN_CHECKPOINT].",
)
device_option = click.option(
    "--device",
    envvar="DEEPSCAN_DEVICE",
    callback=_device,
    help="auto, cpu, cuda or cuda:N [env DEEPSCAN_DEVICE; default auto].",
)
precision_option = click.option(
    "--precision",
    type=click.Choice(PRECISION_CHOICES),
    envvar="DEEPSCAN_PRECISION",
    default=None,
    help="The model's arithmetic: auto = bf16 where the device runs it natively (CUDA with bf16, CPUs with "
    "AVX-512 BF16 or AMX), fp32 elsewhere [env DEEPSCAN_PRECISION; default auto].",
)
batch_size_option = click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    envvar="DEEPSCAN_BATCH_SIZE",
    help="Images per inference batch [env DEEPSCAN_BATCH_SIZE; default 32].",
)
webhook_option = click.option(
    "--webhook",
    metavar="URL",
    callback=_webhook,
    help="POST signed JSON events here: job.finished, item.flagged (needs DEEPSCAN_WEBHOOK_SECRET; docs/webhooks.md).",
)
