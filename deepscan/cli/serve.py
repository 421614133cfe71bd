"""`deepscan serve` (the web API and review console) and `deepscan tokens` (who may use them)."""

from __future__ import annotations

import copy
import os
import socket
from typing import Any

import click
from sqlalchemy.orm import Session

from deepscan.cli.context import AppContext, pass_app
from deepscan.cli.output import LIST_FORMATS, cell, emit_list, format_option, render_table
from scanner.errors import DeepscanError
from scanner.models import TOKEN_ROLES
from scanner.redaction import redact_url

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


@click.command()
@click.option(
    "--host", default=DEFAULT_HOST, show_default=True, help="Address to listen on (0.0.0.0: every interface)."
)
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True, help="TCP port.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Server processes (each with its own database pool).",
)
@click.option(
    "--proxy-headers/--no-proxy-headers",
    default=False,
    show_default=True,
    help="Trust X-Forwarded-Proto/For from a reverse proxy (set it when TLS ends at the proxy).",
)
@click.option("--log-level", default="info", show_default=True, help="uvicorn's log level.")
@pass_app
def serve(app: AppContext, host: str, port: int, workers: int, proxy_headers: bool, log_level: str) -> None:
    """Serve the JSON API (/api/v1, docs at /docs) and the review console (/console) with uvicorn.

    \b
    Configured from the same DEEPSCAN_* settings as every command. Scans submitted through the API
    need DEEPSCAN_BROKER_URL (and workers); everything else works on any database. Health at
    /healthz and /readyz, Prometheus metrics at /metrics. Create a token first:
    `deepscan tokens create NAME --role reviewer`.
    """
    import uvicorn

    _ = app.engine  # fail now, with one line, when the database is unreachable or not migrated
    settings = app.settings
    require_free_port(host, port)
    base = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    click.echo(
        f"deepscan serve: console {base}/console, API {base}/api/v1, database {redact_url(settings.database_url)}"
    )
    # Each uvicorn worker builds its app from the environment: pass on what the command line changed.
    os.environ["DEEPSCAN_DATABASE_URL"] = settings.database_url
    if settings.broker_url:
        os.environ["DEEPSCAN_BROKER_URL"] = settings.broker_url
    app.close()
    uvicorn.run(
        "deepscan.web.app:create_app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        proxy_headers=proxy_headers,
        forwarded_allow_ips="*" if proxy_headers else None,
        log_level=log_level,
        log_config=redacting_log_config(),
        server_header=False,
    )


def redacting_log_config() -> dict[str, Any]:
    """uvicorn's own logging setup with the redaction filter on both of its handlers.

    Its access logger writes through its own handler (not the root's), and request lines carry query
    strings: `?access_token=…` of a console link, `?token=…&X-Amz-Signature=…` pasted by a user.
    """
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"redact": {"()": "scanner.redaction.RedactingFilter"}}
    for handler in config["handlers"].values():
        handler["filters"] = ["redact"]
    return config


def require_free_port(host: str, port: int) -> None:
    """Bind HOST:PORT once, as uvicorn will (SO_REUSEADDR), so a busy port is one line and exit 1,
    not uvicorn's multi-line error and exit 3 (which scripts read as "finished with item errors")."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            why = exc.strerror or str(exc)
            raise DeepscanError(
                f"cannot listen on {host}:{port}: {why} (another server there? choose --port)"
            ) from None


@click.group()
def tokens() -> None:
    """API tokens for `deepscan serve`: viewer reads, reviewer also labels, admin also scans."""


@tokens.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(TOKEN_ROLES), required=True, help="What the token may do.")
@pass_app
def tokens_create(app: AppContext, name: str, role: str) -> None:
    """Create token NAME and print its secret, once: only its hash is stored.

    NAME is recorded as the reviewer of every review made with it.
    """
    from scanner.tokens import create_token

    with Session(app.engine) as session, session.begin():
        info, secret = create_token(session, name, role)
    click.echo(secret)
    click.echo(
        f"token {info.name!r} ({info.role}) created; store the secret above now, it is not shown again", err=True
    )


TOKEN_FIELDS = ("name", "role", "created_at", "last_used_at", "revoked_at")


@tokens.command("list")
@format_option(*LIST_FORMATS)
@pass_app
def tokens_list(app: AppContext, output_format: str) -> None:
    """Tokens by name, with role, creation, last use and revocation (never the secrets)."""
    from scanner.tokens import list_tokens

    with Session(app.engine) as session:
        records = [{name: getattr(t, name) for name in TOKEN_FIELDS} for t in list_tokens(session)]

    def table() -> str:
        rows = (
            [r["name"], r["role"], f"revoked {cell(r['revoked_at'])}" if r["revoked_at"] else "active",
             r["created_at"], r["last_used_at"] or "never"]
            for r in records
        )  # fmt: skip
        return render_table(("name", "role", "state", "created", "last used"), rows)

    emit_list(
        output_format,
        records,
        fields=TOKEN_FIELDS,
        table=table,
        empty="no tokens: create one with `deepscan tokens create NAME --role reviewer`",
    )


@tokens.command("revoke")
@click.argument("name")
@pass_app
def tokens_revoke(app: AppContext, name: str) -> None:
    """Revoke token NAME at once (API calls and console sessions with it stop working)."""
    from scanner.tokens import revoke_token

    with Session(app.engine) as session, session.begin():
        info = revoke_token(session, name)
    click.echo(f"token {info.name!r} revoked")


COMMANDS: list[click.Command] = [serve, tokens]
