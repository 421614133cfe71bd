"""Input the database cannot hold (a 23-digit id, a NUL byte, a date past year 9999 in UTC) is the client's
mistake: a clear 4xx problem, never a 500, on the API and on the console, for the role that can send it."""

from __future__ import annotations

from typing import Any

import pytest

from tests.web.conftest import DEFAULT_REQUEST_TIMEOUT_S, Server, assert_problem, seed_items, seed_job
from tests.web.test_console import form_csrf, sign_in

pytestmark = pytest.mark.postgres

HUGE = "9" * 23  # far past PostgreSQL's bigint
LAST_INSTANT = "9999-12-31T23:59:59-14:00"  # a valid ISO date whose UTC instant is in year 10000

# (method, path, query, json body, role): every way a viewer (or the role the endpoint needs) can send them.
API_CASES: list[tuple[str, str, dict[str, str], dict[str, Any] | None, str]] = [
    ("GET", f"/api/v1/items/{HUGE}", {}, None, "viewer"),
    ("GET", f"/api/v1/items/{HUGE}/thumbnails/0.jpg", {}, None, "viewer"),
    ("GET", f"/api/v1/items/1/thumbnails/{HUGE}.jpg", {}, None, "viewer"),
    ("GET", f"/api/v1/jobs/{HUGE}", {}, None, "viewer"),
    ("GET", "/api/v1/items", {"job": HUGE}, None, "viewer"),
    ("GET", "/api/v1/stats", {"job": HUGE}, None, "viewer"),
    ("GET", "/api/v1/items", {"model": "ab\x00cd"}, None, "viewer"),
    ("GET", "/api/v1/items", {"until": LAST_INSTANT}, None, "viewer"),
    ("GET", "/api/v1/items", {"since": LAST_INSTANT}, None, "viewer"),
    ("GET", "/api/v1/items", {"since": "0001-01-01T00:00:00+14:00"}, None, "viewer"),
    ("GET", "/api/v1/schedules/nightly\x00", {}, None, "viewer"),
    ("POST", f"/api/v1/items/{HUGE}/review", {}, {"label": "fake"}, "reviewer"),
    ("POST", f"/api/v1/jobs/{HUGE}/cancel", {}, None, "admin"),
    ("PATCH", "/api/v1/schedules/a\x00b", {}, {"enabled": False}, "admin"),
    ("DELETE", "/api/v1/schedules/a\x00b", {}, None, "admin"),
    ("POST", "/api/v1/schedules", {}, {"name": "a\x00b", "sources": ["s3://b/"], "cron": "@every 1h"}, "admin"),
]


@pytest.mark.parametrize(("method", "path", "query", "body", "role"), API_CASES)
def test_out_of_range_input_is_a_clear_client_error(
    server: Server, method: str, path: str, query: dict[str, str], body: dict[str, Any] | None, role: str
) -> None:
    response = server.request(method, path, role, params=query, json=body)
    problem = assert_problem(response, response.status_code)
    assert 400 <= response.status_code < 500, (response.status_code, problem)


def test_a_review_note_with_a_nul_byte_is_refused_and_nothing_is_stored(server: Server) -> None:
    job = seed_job(server.database_url)
    (item,) = seed_items(server.database_url, job, [{"score": 0.7}])
    refused = server.post(f"/api/v1/items/{item}/review", "reviewer", json={"label": "fake", "note": "see\x00here"})
    assert 400 <= assert_problem(refused, refused.status_code)["status"] < 500
    assert server.get(f"/api/v1/items/{item}", "viewer").json()["item"]["reviews"] == []


def test_console_pages_answer_out_of_range_input_with_a_4xx_page(server: Server) -> None:
    browser = sign_in(server, "reviewer")
    for path in (
        f"/console/items/{HUGE}",
        f"/console/items/{HUGE}/thumbnails/0.jpg",
        f"/console/queue?job={HUGE}",
        f"/console/queue?until={LAST_INSTANT.replace('+', '%2B')}",
        f"/console/stats?job={HUGE}",
    ):
        page = browser.get(server.base + path, timeout=DEFAULT_REQUEST_TIMEOUT_S)
        assert 400 <= page.status_code < 500, (path, page.status_code, page.text[:300])
    csrf = form_csrf(browser, f"{server.base}/console/queue")
    review = browser.post(
        f"{server.base}/console/items/{HUGE}/review", data={"label": "fake", "csrf": csrf}, timeout=60
    )
    assert 400 <= review.status_code < 500, review.status_code
