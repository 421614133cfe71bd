"""The console's server-rendered pages: the templates, their filters, and an error as a page.

Its own module because both the console's routes (pages.py) and the error handlers (problems.py)
render through it, and the routes raise the errors the handlers answer.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates

from scanner.mediaurl import display_name

TEMPLATES_DIR = Path(__file__).parent / "templates"


def make_templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(TEMPLATES_DIR))  # autoescapes .html templates
    templates.env.filters["when"] = _when
    templates.env.filters["score"] = lambda v: "—" if v is None else f"{v:.3f}"
    templates.env.filters["pct"] = lambda v: "—" if v is None else f"{100 * v:.1f}%"
    templates.env.filters["filename"] = display_name
    return templates


def _when(value: dt.datetime | None) -> str:
    return "—" if value is None else value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def render(request: Request, name: str, context: Mapping[str, Any], *, status: int = 200) -> HTMLResponse:
    templates: Jinja2Templates = request.app.state.web.templates
    identity = getattr(request.state, "identity", None)
    return templates.TemplateResponse(request, name, {"identity": identity, **context}, status_code=status)


def render_error(request: Request, status: int, detail: str, *, headers: Mapping[str, str] | None = None) -> Response:
    response = render(request, "error.html", {"status": status, "detail": detail}, status=status)
    for key, value in (headers or {}).items():
        if key.lower() != "www-authenticate":
            response.headers[key] = value
    return response
