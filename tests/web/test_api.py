"""The JSON API against a real uvicorn process and the machine's PostgreSQL: every endpoint, every role
boundary, problem details, and cursor paging that returns every item exactly once."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from openapi_core import Config, OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from deepscan.cli import cli
from scanner.db import make_engine
from scanner.models import Review
from tests.web.conftest import Server, assert_problem, create_token, free_port, running_server, seed_items, seed_job

pytestmark = pytest.mark.postgres

# (method, path, json body) of every endpoint, with the weakest role that may call it.
ENDPOINTS: list[tuple[str, str, dict[str, Any] | None, str]] = [
    ("GET", "/api/v1/items", None, "viewer"),
    ("GET", "/api/v1/items/1", None, "viewer"),
    ("GET", "/api/v1/items/1/thumbnails/0.jpg", None, "viewer"),
    ("POST", "/api/v1/items/1/review", {"label": "fake"}, "reviewer"),
    ("GET", "/api/v1/jobs", None, "viewer"),
    ("GET", "/api/v1/jobs/1", None, "viewer"),
    ("POST", "/api/v1/jobs/1/cancel", None, "admin"),
    ("POST", "/api/v1/scans", {"sources": ["https://example.invalid/a.jpg"]}, "admin"),
    ("GET", "/api/v1/stats", None, "viewer"),
    ("GET", "/api/v1/schedules", None, "viewer"),
    ("POST", "/api/v1/schedules", {"name": "n", "sources": ["s3://b/"], "cron": "@every 1h"}, "admin"),
    ("GET", "/api/v1/schedules/n", None, "viewer"),
    ("PATCH", "/api/v1/schedules/n", {"enabled": False}, "admin"),
    ("DELETE", "/api/v1/schedules/n", None, "admin"),
]
RANK = {"viewer": 0, "reviewer": 1, "admin": 2}


@pytest.fixture(autouse=True)
def _clean_items(server: Server) -> None:
    """Each test starts without jobs, items and schedules (tokens stay for the module)."""
    engine = make_engine(server.database_url)
    with engine.begin() as conn:
        for table in ("reviews", "thumbnails", "frame_results", "media_items", "scan_jobs", "schedules"):
            conn.exec_driver_sql(f"DELETE FROM {table}")
    engine.dispose()


def test_health_and_readiness(server: Server) -> None:
    assert server.get("/healthz").json() == {"status": "ok"}
    ready = server.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["database"] == "ok"
    assert "embedded" in ready.json()["broker"]


@pytest.mark.parametrize(("method", "path", "body", "_role"), ENDPOINTS)
def test_every_endpoint_needs_a_token(server: Server, method: str, path: str, body: Any, _role: str) -> None:
    missing = server.request(method, path, json=body)
    problem = assert_problem(missing, 401)
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in problem["detail"]
    assert_problem(server.request(method, path, json=body, secret="dsk_not-a-real-token"), 401)


@pytest.mark.parametrize(("method", "path", "body", "needed"), ENDPOINTS)
def test_every_role_boundary(server: Server, method: str, path: str, body: Any, needed: str) -> None:
    for role in ("viewer", "reviewer", "admin"):
        response = server.request(method, path, role, json=body)
        if RANK[role] < RANK[needed]:
            problem = assert_problem(response, 403)
            assert f"has role {role}" in problem["detail"]
            assert needed in problem["detail"]
        else:
            assert response.status_code not in (401, 403), (role, response.text)


def test_revoked_token_is_refused_at_once(server: Server) -> None:
    secret = create_token(server.database_url, "short-lived", "viewer")
    assert server.get("/api/v1/jobs", secret=secret).status_code == 200
    result = CliRunner().invoke(cli, ["--database-url", server.database_url, "tokens", "revoke", "short-lived"])
    assert result.exit_code == 0, result.output
    assert_problem(server.get("/api/v1/jobs", secret=secret), 401)
    listed = CliRunner().invoke(cli, ["--database-url", server.database_url, "tokens", "list", "--format", "json"])
    entry = next(t for t in json.loads(listed.stdout)["items"] if t["name"] == "short-lived")
    assert entry["revoked_at"] is not None
    assert entry["last_used_at"] is not None
    assert secret not in listed.output


def _all_pages(server: Server, **params: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    after = None
    for _ in range(100):
        query = {**params, **({"after": after} if after else {})}
        page = server.get("/api/v1/items", "viewer", params=query)
        assert page.status_code == 200, page.text
        body = page.json()
        rows += body["items"]
        after = body["next"]
        if after is None:
            return rows
    raise AssertionError("paging did not end")


def test_cursor_paging_returns_every_item_exactly_once(server: Server) -> None:
    job = seed_job(server.database_url)
    other = seed_job(server.database_url, name="other")
    scores = [0.9, 0.9, 0.9, 0.7, 0.5, 0.5, 0.5, 0.2, 0.2, 0.1, None, None, 0.0, 0.0, 0.9, 0.5, 0.3]
    ids = seed_items(server.database_url, job, [{"score": s} for s in scores])
    seed_items(server.database_url, other, [{"score": 0.95}, {"score": 0.05}])

    for order in ("score", "time"):
        rows = _all_pages(server, job=job, limit=4, order=order)
        assert sorted(r["id"] for r in rows) == sorted(ids), order
        assert len(rows) == len(ids)
    by_score = _all_pages(server, job=job, limit=3)
    keyed = [r["score"] for r in by_score if r["score"] is not None]
    assert keyed == sorted(keyed, reverse=True)
    assert [r["score"] for r in by_score[-2:]] == [None, None]  # items without a score come last

    fakes = _all_pages(server, verdict="fake", limit=2)
    assert {r["verdict"] for r in fakes} == {"fake"}
    assert len(fakes) == sum(1 for s in scores if s is not None and s >= 0.5) + 1  # + the other job's 0.95


def test_the_api_pages_like_deepscan_results(server: Server) -> None:
    job = seed_job(server.database_url)
    seed_items(server.database_url, job, [{"score": s} for s in (0.9, 0.8, 0.8, 0.3, 0.1)])
    cli_page = CliRunner().invoke(
        cli, ["--database-url", server.database_url, "results", "--job", str(job), "--limit", "2", "--format", "json"]
    )
    api_page = server.get("/api/v1/items", "viewer", params={"job": job, "limit": 2}).json()
    cli_body = json.loads(cli_page.stdout)
    assert [r["id"] for r in api_page["items"]] == [r["id"] for r in cli_body["items"]]
    assert api_page["next"] == cli_body["next"]  # the same cursor: one implementation


def test_bad_cursors_and_filters_are_problems(server: Server) -> None:
    job = seed_job(server.database_url)
    seed_items(server.database_url, job, [{"score": 0.5}] * 3)
    first = server.get("/api/v1/items", "viewer", params={"limit": 1}).json()
    other_query = server.get("/api/v1/items", "viewer", params={"limit": 1, "verdict": "fake", "after": first["next"]})
    assert "different query" in assert_problem(other_query, 400)["detail"]
    assert_problem(server.get("/api/v1/items", "viewer", params={"after": "garbage!"}), 400)
    assert_problem(server.get("/api/v1/items", "viewer", params={"min_score": 0.8, "max_score": 0.2}), 400)
    invalid = assert_problem(server.get("/api/v1/items", "viewer", params={"verdict": "maybe"}), 422)
    assert invalid["detail"].startswith("query.verdict")
    assert_problem(server.get("/api/v1/items/999999", "viewer"), 404)
    assert_problem(server.get("/api/v1/nowhere", "viewer"), 404)
    malformed = server.post(
        "/api/v1/items/1/review", "reviewer", data="{not json", headers={"content-type": "application/json"}
    )
    assert_problem(malformed, 422)


def test_item_detail_has_frame_scores_and_flagged_ranges(server: Server) -> None:
    job = seed_job(server.database_url)
    frames = [(0.0, 0.1), (1.0, 0.2), (2.0, 0.8), (3.0, 0.9), (4.0, 0.1), (5.0, 0.7)]
    (video,) = seed_items(
        server.database_url, job, [{"score": 0.9, "kind": "video", "strategy": "segments", "frames": frames}]
    )
    body = server.get(f"/api/v1/items/{video}", "viewer").json()
    assert body["item"]["id"] == video
    assert body["item"]["threshold"] == 0.5
    assert [p["score"] for p in body["timeline"]] == [s for _, s in frames]
    assert body["flagged_ranges"] == [[2.0, 3.0], [5.0, 5.0]]
    assert body["thumbnails"] == []  # seeded, not scanned: nothing stored, nothing fetched
    assert_problem(server.get(f"/api/v1/items/{video}/thumbnails/0.jpg", "viewer"), 404)


def test_review_records_the_token_name(server: Server) -> None:
    job = seed_job(server.database_url)
    (item,) = seed_items(server.database_url, job, [{"score": 0.7}])
    created = server.post(f"/api/v1/items/{item}/review", "reviewer", json={"label": "real", "note": "a stage prop"})
    assert created.status_code == 201, created.text
    assert created.json()["reviewer"] == "reviewer-token"
    engine = make_engine(server.database_url)
    with Session(engine) as session:
        (review,) = session.scalars(select(Review).where(Review.item_id == item)).all()
    engine.dispose()
    assert (review.label, review.reviewer, review.note) == ("real", "reviewer-token", "a stage prop")
    listed = server.get("/api/v1/items", "viewer", params={"reviewed": "true"}).json()["items"]
    assert [(r["id"], r["review_label"], r["reviewed_by"]) for r in listed] == [(item, "real", "reviewer-token")]
    assert_problem(server.post(f"/api/v1/items/{item}/review", "reviewer", json={"label": "maybe"}), 422)
    assert_problem(server.post("/api/v1/items/999999/review", "reviewer", json={"label": "fake"}), 404)


def test_an_item_without_a_verdict_cannot_be_labelled(server: Server) -> None:
    job = seed_job(server.database_url)
    errored, queued = seed_items(
        server.database_url,
        job,
        [
            {"status": "error", "score": None, "error": "http 404", "kind": "unknown"},
            {"status": "queued", "score": None},
        ],
    )
    refused = assert_problem(server.post(f"/api/v1/items/{errored}/review", "reviewer", json={"label": "fake"}), 409)
    assert f"item {errored} has no verdict to review: it ended error (http 404)" in refused["detail"]
    assert (
        "is queued"
        in assert_problem(server.post(f"/api/v1/items/{queued}/review", "reviewer", json={"label": "real"}), 409)[
            "detail"
        ]
    )
    cli_refused = CliRunner().invoke(
        cli, ["--database-url", server.database_url, "review", str(errored), "--label", "real", "--reviewer", "ann"]
    )
    assert cli_refused.exit_code == 1
    assert "has no verdict to review" in cli_refused.stderr
    assert server.get(f"/api/v1/items/{errored}", "viewer").json()["item"]["reviews"] == []


def test_jobs_progress_and_cancel(server: Server) -> None:
    job = seed_job(server.database_url, status="running")
    seed_items(
        server.database_url,
        job,
        [{"score": 0.9}, {"status": "queued", "score": None}, {"status": "queued", "score": None}],
    )
    listed = server.get("/api/v1/jobs", "viewer").json()["items"]
    assert [(j["id"], j["total"], j["done"], j["queued"], j["flagged"]) for j in listed] == [(job, 3, 1, 2, 1)]
    assert server.get(f"/api/v1/jobs/{job}", "viewer").json()["status"] == "running"
    cancelled = server.post(f"/api/v1/jobs/{job}/cancel", "admin")
    assert cancelled.json() == {"job_id": job, "status": "cancelled", "cancelled": 2, "was_finished": False}
    after = server.get(f"/api/v1/jobs/{job}", "viewer").json()
    assert (after["status"], after["cancelled"], after["queued"]) == ("cancelled", 2, 0)
    assert server.post(f"/api/v1/jobs/{job}/cancel", "admin").json()["was_finished"] is True
    assert_problem(server.get("/api/v1/jobs/999999", "viewer"), 404)
    assert_problem(server.post("/api/v1/jobs/999999/cancel", "admin"), 404)


def test_stats(server: Server) -> None:
    job = seed_job(server.database_url)
    seed_items(
        server.database_url,
        job,
        [{"score": 0.9}, {"score": 0.1}, {"status": "error", "score": None, "error": "http 404", "kind": "unknown"}],
    )
    by_job = server.get("/api/v1/stats", "viewer", params={"by": "job"}).json()
    assert by_job["next"] is None
    (row,) = by_job["items"]
    assert (row["items"], row["done"], row["errors"], row["fakes"]) == (3, 2, 1, 1)
    assert row["errors_by_reason"] == {"http 404": 1}
    assert_problem(server.get("/api/v1/stats", "viewer", params={"by": "week"}), 422)


def test_schedules_crud(server: Server) -> None:
    body = {"name": "nightly", "sources": ["s3://uploads/new/"], "cron": "0 2 * * *", "fps": 2.0}
    created = server.post("/api/v1/schedules", "admin", json=body)
    assert created.status_code == 201, created.text
    assert created.headers["location"] == "/api/v1/schedules/nightly"
    assert created.json()["options"]["fps"] == 2.0
    assert "exists" in assert_problem(server.post("/api/v1/schedules", "admin", json=body), 409)["detail"]
    assert [s["name"] for s in server.get("/api/v1/schedules", "viewer").json()["items"]] == ["nightly"]
    paused = server.request("PATCH", "/api/v1/schedules/nightly", "admin", json={"enabled": False})
    assert paused.json()["enabled"] is False
    assert server.get("/api/v1/schedules/nightly", "viewer").json()["enabled"] is False
    assert server.request("DELETE", "/api/v1/schedules/nightly", "admin").status_code == 204
    assert_problem(server.get("/api/v1/schedules/nightly", "viewer"), 404)
    never = {**body, "name": "never", "cron": "0 0 31 2 *"}
    assert "never fires" in assert_problem(server.post("/api/v1/schedules", "admin", json=never), 400)["detail"]
    local = {**body, "name": "local", "sources": ["/etc"]}
    assert (
        "DEEPSCAN_LOCAL_ROOTS" in assert_problem(server.post("/api/v1/schedules", "admin", json=local), 403)["detail"]
    )


def test_scans_need_a_broker(server: Server) -> None:
    refused = server.post("/api/v1/scans", "admin", json={"sources": ["https://example.invalid/a.jpg"]})
    assert "DEEPSCAN_BROKER_URL" in assert_problem(refused, 503)["detail"]
    invalid = server.post("/api/v1/scans", "admin", json={"sources": []})
    assert_problem(invalid, 422)
    bad_strategy = server.post("/api/v1/scans", "admin", json={"sources": ["s3://b/"], "strategy": "median"})
    assert "strategy" in assert_problem(bad_strategy, 422)["detail"]


def test_openapi_document_and_docs(server: Server) -> None:
    spec = server.get("/api/v1/openapi.json").json()
    paths = set(spec["paths"])
    assert {"/api/v1/items", "/api/v1/items/{item_id}", "/api/v1/scans", "/api/v1/schedules/{name}"} <= paths
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    docs = server.get("/docs")
    assert docs.status_code == 200
    assert "/api/v1/items/{item_id}/review" in docs.text
    assert "cdn" not in docs.text.lower()


def _live_responses(server: Server) -> list[requests.Response]:
    """One answer of each kind a client meets: every list, every record, and each error shape."""
    job = seed_job(server.database_url)
    video, errored = seed_items(
        server.database_url,
        job,
        [
            {"score": 0.9, "kind": "video", "strategy": "segments", "frames": [(0.0, 0.2), (1.0, 0.9)]},
            {"status": "error", "score": None, "error": "http 404", "kind": "unknown"},
        ],
    )
    schedule = {"name": "nightly", "sources": ["s3://uploads/new/"], "cron": "@daily"}
    return [
        server.get("/healthz"),
        server.get("/readyz"),
        server.get("/metrics"),
        server.get("/api/v1/items", "viewer", params={"limit": 1}),
        server.get(f"/api/v1/items/{video}", "viewer"),
        server.get("/api/v1/jobs", "viewer"),
        server.get(f"/api/v1/jobs/{job}", "viewer"),
        server.get("/api/v1/stats", "viewer", params={"by": "job"}),
        server.post("/api/v1/schedules", "admin", json=schedule),
        server.get("/api/v1/schedules", "viewer"),
        server.post(f"/api/v1/items/{video}/review", "reviewer", json={"label": "fake", "note": "seen"}),
        server.post(f"/api/v1/items/{errored}/review", "reviewer", json={"label": "fake"}),  # 409
        server.get("/api/v1/items/999999", "viewer"),  # 404
        server.get("/api/v1/items", "viewer", params={"verdict": "maybe", "limit": 0}),  # 422 with errors
        server.get("/api/v1/jobs"),  # 401
    ]


def test_live_responses_match_the_openapi_document(server: Server) -> None:
    # openapi-core reads plain application/json only: problem details are JSON too
    problem_json: dict[str, Callable[[bytes], Any]] = {"application/problem+json": json.loads}
    spec = OpenAPI.from_dict(
        server.get("/api/v1/openapi.json").json(), config=Config(extra_media_type_deserializers=problem_json)
    )
    answers = _live_responses(server)
    assert [r.status_code for r in answers] == [200] * 8 + [201, 200, 201, 409, 404, 422, 401]
    for answer in answers:
        request = RequestsOpenAPIRequest(answer.request)
        spec.validate_response(request, RequestsOpenAPIResponse(answer))  # raises, naming the mismatch
    assert len(answers[-2].json()["errors"]) == 2
    for answer in (answers[3], answers[5], answers[7], answers[9]):  # items, jobs, stats, schedules
        assert set(answer.json()) == {"items", "next"}, answer.request.url


def test_the_openapi_document_describes_every_parameter_field_and_error(server: Server) -> None:
    spec = server.get("/api/v1/openapi.json").json()
    assert {"/healthz", "/readyz", "/metrics"} <= set(spec["paths"])
    undescribed: list[tuple[str, ...]] = [
        (path, method, param["name"])
        for path, operations in spec["paths"].items()
        for method, operation in operations.items()
        for param in operation.get("parameters", [])
        if not param.get("description")
    ]
    undescribed += [
        (name, field)
        for name, schema in spec["components"]["schemas"].items()
        for field, prop in schema.get("properties", {}).items()
        if not prop.get("description")
    ]
    assert undescribed == []
    error_types = {
        media
        for operations in spec["paths"].values()
        for operation in operations.values()
        for status, response in operation["responses"].items()
        if status >= "400"
        for media in response.get("content", {})
    }
    assert error_types == {"application/problem+json"}
    assert "errors" in spec["components"]["schemas"]["Problem"]["properties"]
    review = spec["paths"]["/api/v1/items/{item_id}/review"]["post"]["responses"]
    assert "409" in review


def test_api_and_cli_json_write_the_same_times(server: Server) -> None:
    job = seed_job(server.database_url)
    seed_items(server.database_url, job, [{"score": 0.7}])
    api_row = server.get("/api/v1/items", "viewer").json()["items"][0]
    cli_page = CliRunner().invoke(cli, ["--database-url", server.database_url, "results", "--format", "json"])
    (cli_row,) = json.loads(cli_page.stdout)["items"]
    assert api_row["finished_at"] == cli_row["finished_at"] == "2026-03-01T12:00:00Z"
    cli_job = CliRunner().invoke(
        cli, ["--database-url", server.database_url, "jobs", "show", str(job), "--format", "json"]
    )
    assert json.loads(cli_job.stdout)["created_at"] == server.get(f"/api/v1/jobs/{job}", "viewer").json()["created_at"]
    assert json.loads(cli_job.stdout)["created_at"].endswith("Z")


def test_metrics_count_requests_by_route_and_status(server: Server) -> None:
    server.get("/api/v1/items/424242", "viewer")
    text = server.get("/metrics").text
    assert 'deepscan_http_requests_total{method="GET",route="/api/v1/items/{item_id}",status="404"}' in text
    assert "deepscan_http_request_duration_seconds_bucket" in text
    assert "424242" not in text  # route templates, not raw paths


def test_tokens_never_reach_the_log(server: Server) -> None:
    server.get("/api/v1/jobs", "admin")
    log = server.log.read_text(errors="replace")
    assert "GET /api/v1/jobs" in log
    for secret in server.tokens.values():
        assert secret not in log


def test_serve_on_a_busy_port_says_so_in_one_line(server: Server) -> None:
    port = server.base.rsplit(":", 1)[1]  # the running server holds it
    busy = CliRunner().invoke(cli, ["--database-url", server.database_url, "serve", "--port", port])
    assert busy.exit_code == 1
    assert (
        busy.stderr
        == f"Error: cannot listen on 127.0.0.1:{port}: Address already in use (another server there? choose --port)\n"
    )
    assert busy.stdout == ""


def test_an_unreachable_broker_makes_the_server_unready_and_scans_fail_clearly(
    server: Server, tmp_path_factory: pytest.TempPathFactory
) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    log = tmp_path_factory.mktemp("serve-no-broker") / "serve.log"
    user, rest = server.database_url.split("@", 1)
    with_password = f"{user}:hunter2@{rest}"  # the local server trusts loopback: the password is not checked
    with running_server(with_password, log, DEEPSCAN_BROKER_URL=closed) as down:
        base = down.base
        started = f"deepscan serve: console {base}/console, API {base}/api/v1, database {user}:***@{rest}"
        assert started in log.read_text()
        assert "hunter2" not in log.read_text()
        down.tokens = server.tokens
        assert "cannot reach the broker" in assert_problem(down.get("/readyz"), 503)["detail"]
        failed = down.post("/api/v1/scans", "admin", json={"sources": ["https://example.invalid/a.jpg"]})
        problem = assert_problem(failed, 503)
        assert "broker unreachable" in problem["detail"]
        job = server.get(f"/api/v1/jobs/{problem['job_id']}", "viewer").json()
        assert (job["status"], job["total"]) == ("failed", 1)  # the item is recorded; the job says it failed
