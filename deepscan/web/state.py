"""What the app keeps for its lifetime, on `app.state`: settings, engine, templates, metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request
from sqlalchemy import Engine

from scanner.producer import ScanBackend
from scanner.settings import Settings

if TYPE_CHECKING:
    from fastapi.templating import Jinja2Templates


@dataclass
class WebState:
    settings: Settings
    engine: Engine
    templates: Jinja2Templates
    scan_backend: ScanBackend | None = None  # built on the first scan submitted


def state_of(request: Request) -> WebState:
    state: WebState = request.app.state.web
    return state


def engine_of(request: Request) -> Engine:
    return state_of(request).engine
