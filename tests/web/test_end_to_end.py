"""End to end through the web face: a scan submitted to the API is scanned by a real worker process
(Redis, PostgreSQL), its verdicts and thumbnails are read back through the API, and a real headless
Chromium signs in to the console, labels an item with the keyboard and leaves screenshots."""

from __future__ import annotations

import io
import shutil
import statistics
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from scanner.db import make_engine
from scanner.models import Review
from tests import media_factory
from tests.conftest import empty_tables
from tests.pipeline_helpers import deepscan_env, worker_process, write_tiny_checkpoint
from tests.web.browser import SCREENS_DIR, assert_accessible, chromium, press, visit, wait_until
from tests.web.conftest import ROLES, Server, create_token, running_server, seed_items, seed_job

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

DEFAULT_JOB_TIMEOUT_S = 300.0  # a hang guard only


@dataclass
class Scanned:
    server: Server
    folder: Path
    job: dict[str, Any]
    items: list[dict[str, Any]]
    video_job: dict[str, Any]


def wait_for_job(server: Server, job_id: int) -> dict[str, Any]:
    deadline = time.monotonic() + DEFAULT_JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        job: dict[str, Any] = server.get(f"/api/v1/jobs/{job_id}", "viewer").json()
        if job["status"] not in ("pending", "running"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still running after {DEFAULT_JOB_TIMEOUT_S} s")


def submit(server: Server, **body: Any) -> dict[str, Any]:
    response = server.post("/api/v1/scans", "admin", json=body)
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/api/v1/jobs/{response.json()['id']}"
    return wait_for_job(server, response.json()["id"])


def job_items(server: Server, job_id: int) -> list[dict[str, Any]]:
    body = server.get("/api/v1/items", "viewer", params={"job": job_id, "limit": 1000}).json()
    assert body["next"] is None
    items: list[dict[str, Any]] = body["items"]
    return items


@pytest.fixture(scope="module")
def scanned(postgresql_url: str, redis_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scanned]:
    broker_url = redis_server_url
    tmp = tmp_path_factory.mktemp("web-e2e")
    folder = tmp / "media"
    folder.mkdir()
    media_factory.write_mixed_folder(folder, images=6, videos=1)
    media_factory.write_video(folder / "talk.mp4", seconds=12.0, fps=5.0, face=True, seed=7)
    checkpoint = write_tiny_checkpoint(tmp / "tiny.safetensors")
    queue = f"deepscan-web-{uuid.uuid4().hex[:8]}"
    env = {
        "DEEPSCAN_BROKER_URL": broker_url,
        "DEEPSCAN_QUEUE": queue,
        "DEEPSCAN_CHECKPOINT": str(checkpoint),
        "DEEPSCAN_LOCAL_ROOTS": str(folder),
        "DEEPSCAN_FETCH_THREADS": "2",
    }
    empty_tables(postgresql_url)
    with (
        running_server(postgresql_url, tmp / "serve.log", **env) as server,
        worker_process(
            deepscan_env(DEEPSCAN_DATABASE_URL=postgresql_url, DEEPSCAN_HOME=str(tmp / "worker-home"), **env),
            tmp / "worker.log",
            ready_timeout_s=DEFAULT_JOB_TIMEOUT_S,
        ),
    ):
        server.tokens = {role: create_token(postgresql_url, f"{role}-token", role) for role in ROLES}
        job = submit(server, sources=[str(folder)], name="uploads")
        items = job_items(server, job["id"])
        video = next(i for i in items if i["url"].endswith("talk.mp4"))
        frames = server.get(f"/api/v1/items/{video['id']}", "viewer").json()["timeline"]
        middle = statistics.median(f["score"] for f in frames)
        # The same video again at the median of its frame scores: some ranges flagged, some not.
        video_job = submit(server, sources=[str(folder / "talk.mp4")], threshold=middle, rescan=True, name="talk")
        yield Scanned(server, folder, job, items, video_job)
    redis.Redis.from_url(broker_url).delete(queue)
    empty_tables(postgresql_url)


def jpeg(server: Server, url: str) -> Image.Image:
    response = server.get(url, "viewer")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
    assert len(response.content) < 20_000  # a few KB
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return image


def test_a_scan_submitted_through_the_api_is_scanned_and_read_back(scanned: Scanned) -> None:
    ready = scanned.server.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["broker"] == "ok"
    assert scanned.job["status"] == "done"
    assert scanned.job["total"] == 8
    assert scanned.job["done"] == 8
    assert {i["verdict"] for i in scanned.items} <= {"fake", "real"}
    assert all(i["score"] is not None for i in scanned.items)
    for item in scanned.items:
        detail = scanned.server.get(f"/api/v1/items/{item['id']}", "viewer").json()
        assert detail["item"]["status"] == "done"
        assert detail["item"]["model_version"]
        first = detail["thumbnails"][0]
        assert first["position"] == 0
        image = jpeg(scanned.server, first["url"])
        assert max(image.size) <= 160
        assert image.size == (first["width"], first["height"])
        if item["kind"] == "video":
            assert len(detail["timeline"]) >= 3


def test_flagged_video_segments_get_a_thumbnail_each(scanned: Scanned) -> None:
    assert scanned.video_job["status"] == "done"
    (video,) = job_items(scanned.server, scanned.video_job["id"])
    detail = scanned.server.get(f"/api/v1/items/{video['id']}", "viewer").json()
    ranges = detail["flagged_ranges"]
    assert ranges, "the median threshold flags at least the top half of the frames"
    segments = detail["thumbnails"][1:]
    assert [(t["start_s"], t["end_s"]) for t in segments] == [tuple(r) for r in ranges]
    for thumb, (start, end) in zip(segments, ranges, strict=True):
        assert start <= thumb["timestamp_s"] <= end
        assert thumb["score"] >= detail["item"]["threshold"]
        assert max(jpeg(scanned.server, thumb["url"]).size) <= 160


def test_reused_verdicts_share_thumbnails(scanned: Scanned) -> None:
    again = submit(scanned.server, sources=[str(scanned.folder)], name="again")
    assert again["status"] == "done"
    first_by_url = {i["url"]: i["id"] for i in scanned.items}
    for item in job_items(scanned.server, again["id"]):
        shared = scanned.server.get(f"/api/v1/items/{item['id']}/thumbnails/0.jpg", "viewer")
        original = scanned.server.get(f"/api/v1/items/{first_by_url[item['url']]}/thumbnails/0.jpg", "viewer")
        assert shared.status_code == 200
        assert shared.content == original.content


# --- the console in a real browser ---------------------------------------------------------------


@pytest.fixture
def chrome(tmp_path: Path) -> Iterator[Any]:
    with chromium(tmp_path) as session:
        yield session


def screenshot(chrome: Any, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    chrome.save_screenshot(str(path))
    SCREENS_DIR.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, SCREENS_DIR / f"e2e-{path.name}")
    return path


def test_console_in_chromium_labels_with_the_keyboard(scanned: Scanned, chrome: Any, tmp_path: Path) -> None:
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    server = scanned.server
    hostile = seed_items(
        server.database_url,
        seed_job(server.database_url, name="hostile"),
        [{"url": "https://x.example/<script>alert(1)</script>.jpg", "status": "error", "score": None,
          "error": "<img src=x onerror=alert(2)> not an image or video", "kind": "unknown"}],
    )[0]  # fmt: skip
    visit(chrome, f"{server.base}/console/login")
    chrome.find_element(By.ID, "token").send_keys(server.tokens["reviewer"])
    chrome.find_element(By.CSS_SELECTOR, "section.login button[type=submit]").click()
    wait_until(chrome, lambda c: c.current_url.endswith("/console/queue"))
    assert_accessible(chrome)
    visit(chrome, f"{server.base}/console/queue?verdict=any")  # every verdict, flagged first
    rows = chrome.find_elements(By.CSS_SELECTOR, "tr[data-item]")
    assert len(rows) >= 8
    assert "selected" in (rows[0].get_attribute("class") or "")
    press(chrome, "j")
    assert "selected" in (rows[1].get_attribute("class") or "")
    press(chrome, "k")
    assert "selected" in (rows[0].get_attribute("class") or "")
    thumbs = chrome.find_elements(By.CSS_SELECTOR, "td.thumb img")
    assert thumbs
    # The first row's face crop is on screen: it has loaded from the app (lower ones load lazily).
    wait_until(chrome, lambda c: c.execute_script("return arguments[0].naturalWidth", thumbs[0]) > 0)
    screenshot(chrome, tmp_path, "queue")

    image_row = next(r for r in rows if "img_003.jpg" in r.text)  # a photo with a face in it
    image_id = int(image_row.get_attribute("data-item") or 0)
    while "selected" not in (image_row.get_attribute("class") or ""):
        press(chrome, "j")
    press(chrome, Keys.ENTER)
    wait_until(chrome, lambda c: f"/console/items/{image_id}" in c.current_url)
    assert_accessible(chrome)
    face = chrome.find_element(By.CSS_SELECTOR, "figure.face img")
    assert chrome.execute_script("return arguments[0].naturalWidth", face) > 0
    screenshot(chrome, tmp_path, "image-item")
    press(chrome, "f")
    wait_until(chrome, lambda c: f"/console/items/{image_id}" not in c.current_url)

    engine = make_engine(server.database_url)
    with Session(engine) as session:
        reviews = session.scalars(select(Review).where(Review.item_id == image_id)).all()
        assert [(r.label, r.reviewer) for r in reviews] == [("fake", "reviewer-token")]
    engine.dispose()

    (video,) = job_items(server, scanned.video_job["id"])
    visit(chrome, f"{server.base}/console/items/{video['id']}")
    assert chrome.find_elements(By.CSS_SELECTOR, "svg.timeline rect.flagged")
    assert len(chrome.find_elements(By.CSS_SELECTOR, ".segments img")) >= 1
    screenshot(chrome, tmp_path, "video-item")

    visit(chrome, f"{server.base}/console/jobs")
    assert len(chrome.find_elements(By.CSS_SELECTOR, "table.jobs progress")) >= 2
    screenshot(chrome, tmp_path, "jobs")

    visit(chrome, f"{server.base}/console/items/{hostile}")
    with pytest.raises(NoAlertPresentException):
        chrome.switch_to.alert.text  # noqa: B018 (reading it is the check that no alert opened)
    assert "<script>alert(1)</script>" in chrome.find_element(By.CSS_SELECTOR, "dd.url").text
    screenshot(chrome, tmp_path, "hostile-item")
    csp_errors = [e for e in chrome.get_log("browser") if "Content Security Policy" in e.get("message", "")]
    assert csp_errors == [], csp_errors
