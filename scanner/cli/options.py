"""Options shared by several commands, defined once."""

from __future__ import annotations

from pathlib import Path

import click

from scanner.errors import ConfigError
from scanner.settings import validate_device


def _device(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return validate_device(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


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
batch_size_option = click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    envvar="DEEPSCAN_BATCH_SIZE",
    help="Images per inference batch [env DEEPSCAN_BATCH_SIZE; default 32].",
)
format_option = click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Output for people (table) or scripts (json).",
)
