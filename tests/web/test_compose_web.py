"""The compose `web` service: `deepscan serve` behind a readiness healthcheck, reachable on loopback only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_the_web_service_serves_and_is_checked_for_readiness() -> None:
    compose: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    web = compose["services"]["web"]
    assert web["command"][:2] == ["deepscan", "serve"]
    assert "/readyz" in " ".join(web["healthcheck"]["test"])
    assert all(str(port).startswith("127.0.0.1:") for port in web["ports"])
    assert web["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert web["environment"]["DEEPSCAN_LOCAL_ROOTS"] == "/media"
    media = next(m for m in web["volumes"] if m["target"] == "/media")
    assert media["read_only"] is True


def test_the_console_assets_ship_in_the_package() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"web/templates/*.html", "web/static/*"' in pyproject
    assert (ROOT / "deepscan" / "web" / "templates" / "queue.html").is_file()
    assert (ROOT / "deepscan" / "web" / "static" / "console.js").is_file()
