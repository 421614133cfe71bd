"""How every command prints: one table renderer (tabulate), one list shape, four formats.

Every command that lists things takes `--format table|json|jsonl|csv`:
- json: one object `{"items": [...], "next": CURSOR_OR_NULL}`, the same shape everywhere;
- jsonl: one item per line; csv: a header row, then one row per item (nested values as JSON);
- table: aligned columns for people.
With jsonl, csv and table a next-page cursor goes to stderr, so stdout stays parseable.
Timestamps are RFC 3339 in UTC ending in `Z` in machine formats (as the API writes them) and
`YYYY-MM-DD HH:MM:SSZ` (no fractions) in tables.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import click

LIST_FORMATS = ("table", "json", "jsonl", "csv")
RECORD_FORMATS = ("table", "json")  # for commands that print one record (show, jobs show)


def format_option(*choices: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`--format` with `choices` (default table); list commands pass LIST_FORMATS."""
    choices = choices or LIST_FORMATS
    return click.option(
        "--format",
        "output_format",
        type=click.Choice(choices),
        default="table",
        show_default=True,
        help="For people (table) or scripts (" + ", ".join(c for c in choices if c != "table") + ").",
    )


def rfc3339(value: dt.datetime) -> str:
    """`2026-03-01T12:00:00.5Z`: UTC with `Z`, as pydantic writes the API's times (naive means UTC)."""
    utc = value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    return utc.isoformat().removesuffix("+00:00") + "Z"


def jsonable(value: Any) -> Any:
    """`value` with datetimes as RFC 3339 strings, recursively."""
    if isinstance(value, dt.datetime):
        return rfc3339(value)
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def dump_json(value: Any) -> str:
    return json.dumps(jsonable(value), indent=2)


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """`1 item`, `2 items`: a count with its noun in the right number (the last word takes the `s`)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def cell(value: Any) -> str:
    """One table cell: `-` for nothing, 3 decimals for floats, whole seconds (UTC) for times."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return str(value)


def render_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Rows under a header line, columns aligned (tabulate's `plain` format: easy to grep and cut)."""
    from tabulate import tabulate  # here: `deepscan scan --format json` and --help start faster without it

    cells = [[cell(v) for v in row] for row in rows]
    return tabulate(cells, headers=list(headers), tablefmt="plain", disable_numparse=True)


def render_key_values(pairs: Iterable[tuple[str, Any]]) -> str:
    """`name: value` lines, values aligned (one record, so no header)."""
    pairs = list(pairs)
    width = max(len(k) for k, _ in pairs)
    return "\n".join(f"{k + ':':<{width + 1}} {cell(v)}" for k, v in pairs)


def csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(jsonable(value), sort_keys=True)
    return str(jsonable(value))


def render_csv(fields: Sequence[str], records: Iterable[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(fields)
    for record in records:
        writer.writerow([csv_cell(record.get(name)) for name in fields])
    return buffer.getvalue()


def emit_list(
    output_format: str,
    records: Sequence[Mapping[str, Any]],
    *,
    fields: Sequence[str],
    table: Callable[[], str],
    empty: str,
    next_cursor: str | None = None,
    next_hint: str = "next page: --after {cursor}",
) -> None:
    """Print a list of records in `output_format`; `table` renders the table (called only when needed)."""
    if output_format == "json":
        click.echo(dump_json({"items": list(records), "next": next_cursor}))
        return
    if output_format == "jsonl":
        for record in records:
            click.echo(json.dumps(jsonable(record)))
    elif output_format == "csv":
        click.echo(render_csv(fields, records), nl=False)
    elif records:
        click.echo(table())
    else:
        click.echo(empty, err=True)
    if next_cursor is not None:
        click.echo(next_hint.format(cursor=next_cursor), err=True)
