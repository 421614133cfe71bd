"""The review console as a moderation team uses it, in a real headless Chromium over a real `deepscan serve`.

Labels are safe (Enter in the note never labels; a label is confirmed and can be undone, and the
undo stays in the history), follow content (one queue row per content; a rescan arrives labelled),
and every page visited passes axe-core with nothing serious or critical. One browser for the module.
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session

from deepscan.cli import cli
from scanner import queries, thumbnails
from scanner.db import make_engine
from scanner.faces import FaceView
from scanner.models import FrameResult, MediaItem, Review
from tests import media_factory
from tests.pipeline_helpers import write_tiny_checkpoint
from tests.web.browser import (
    assert_accessible,
    chromium,
    csp_errors,
    press,
    screenshot,
    sign_in,
    visit,
    wait_until,
)
from tests.web.conftest import DEFAULT_REQUEST_TIMEOUT_S, Server, create_token, seed_items, seed_job
from tests.web.test_console import sign_in as sign_in_over_http

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@dataclass
class Console:
    server: Server
    chrome: Any
    folder: Path
    checkpoint: Path
    faces_checkpoint: Path  # finds faces (HOG) and scores each


@pytest.fixture(scope="module")
def console(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    tmp = tmp_path_factory.mktemp("review-console")
    folder = tmp / "media"
    folder.mkdir()
    with chromium(tmp) as chrome:
        sign_in(chrome, server, server.tokens["reviewer"])
        whole = write_tiny_checkpoint(tmp / "tiny.safetensors")
        faces = write_tiny_checkpoint(tmp / "faces.safetensors", face_view=FaceView(detector="hog", max_faces=4))
        yield Console(server, chrome, folder, whole, faces)


def scan(console: Console, *sources: Path, name: str, faces: bool = False, options: tuple[str, ...] = ()) -> int:
    """`deepscan scan` in-process (no broker) into the server's database; every item flagged (threshold 0)
    unless `options` say otherwise."""
    checkpoint = console.faces_checkpoint if faces else console.checkpoint
    args = ["--database-url", console.server.database_url, "scan", *map(str, sources), "--name", name]
    args += ["--checkpoint", str(checkpoint), "--format", "json"]
    args += [*options] if "--threshold" in options else ["--threshold", "0", *options]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    job_id: int = json.loads(result.output.strip().splitlines()[-1])["job_id"]
    return job_id


def item_ids(server: Server, job_id: int) -> list[int]:
    engine = make_engine(server.database_url)
    with Session(engine) as session:
        ids = list(session.scalars(select(MediaItem.id).where(MediaItem.job_id == job_id).order_by(MediaItem.id)))
    engine.dispose()
    return ids


def labels_of(server: Server, ids: list[int]) -> dict[int, str | None]:
    engine = make_engine(server.database_url)
    with Session(engine) as session:
        found = queries.latest_reviews(session, ids)
    engine.dispose()
    return {i: found[i].label if i in found else None for i in ids}


def history_of(server: Server, item_id: int) -> list[tuple[str, bool]]:
    """(label, undone) of every review given on the item, oldest first."""
    engine = make_engine(server.database_url)
    with Session(engine) as session:
        rows = session.scalars(select(Review).where(Review.item_id == item_id).order_by(Review.id)).all()
        found = [(r.label, r.undone_at is not None) for r in rows]
    engine.dispose()
    return found


def text_of(chrome: Any, selector: str) -> str:
    from selenium.webdriver.common.by import By

    return str(chrome.find_element(By.CSS_SELECTOR, selector).text)


def test_enter_in_the_note_labels_nothing_and_a_label_can_be_undone(console: Console) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    server, chrome = console.server, console.chrome
    job = seed_job(server.database_url, name="enter")
    first, second, _ = seed_items(server.database_url, job, [{"score": 0.95}, {"score": 0.9}, {"score": 0.85}])
    visit(chrome, f"{server.base}/console/items/{first}?job={job}")
    note = chrome.find_element(By.ID, "note")
    note.send_keys("looks like a real studio portrait")
    note.send_keys(Keys.ENTER)
    assert f"/console/items/{first}?" in chrome.current_url  # nothing was submitted
    assert history_of(server, first) == []

    chrome.find_element(By.CSS_SELECTOR, "form.labels.big button[value=real]").click()
    wait_until(chrome, lambda c: f"/console/items/{second}?" in c.current_url)  # on to the next item
    assert f"Labelled item #{first} as real" in text_of(chrome, ".flash")
    visit(chrome, chrome.current_url)  # the page with its confirmation passes axe-core too
    assert labels_of(server, [first]) == {first: "real"}

    chrome.find_element(By.CSS_SELECTOR, ".flash button.undo").click()
    wait_until(chrome, lambda c: "undone=" in c.current_url)
    assert f"item #{first} is no longer labelled real" in text_of(chrome, ".flash")
    assert f"/console/items/{second}?" in chrome.current_url  # still where the moderator was
    assert labels_of(server, [first]) == {first: None}
    assert history_of(server, first) == [("real", True)]  # kept, marked undone

    visit(chrome, f"{server.base}/console/items/{first}")
    assert "not reviewed" in text_of(chrome, "dd.human")
    actions = [row.text for row in chrome.find_elements(By.CSS_SELECTOR, "table.history tbody tr")]
    assert len(actions) == 2
    assert actions[0].split()[2:4] == ["undo", "real"]  # newest first: the undo, then the label
    assert actions[1].split()[2:4] == ["label", "real"]
    assert "looks like a real studio portrait" in actions[1]
    assert csp_errors(chrome) == []


def test_one_row_per_content_and_the_label_follows_it(console: Console) -> None:
    from selenium.webdriver.common.by import By

    server, chrome = console.server, console.chrome
    photo = media_factory.face_photo(console.folder / "portrait.jpg", seed=3)
    other = media_factory.face_photo(console.folder / "other.jpg", seed=4)
    copy = shutil.copy(photo, console.folder / "copy-of-portrait.jpg")
    scans = [scan(console, photo, other, name="first"), scan(console, photo, Path(copy), name="again")]
    ids = [i for job in scans for i in item_ids(server, job)]
    engine = make_engine(server.database_url)
    with Session(engine) as session:
        same = [i for i in ids if session.get(MediaItem, i).url.endswith("portrait.jpg")]  # type: ignore[union-attr]
    engine.dispose()
    assert len(same) == 3  # portrait twice, and its copy under another name

    visit(chrome, f"{server.base}/console/queue?q=portrait")
    rows = chrome.find_elements(By.CSS_SELECTOR, "tr[data-item]")
    assert len(rows) == 1  # one content, one row
    assert "seen 3 times" in rows[0].text
    assert "copy-of-portrait.jpg" in rows[0].text
    screenshot(chrome, "queue-one-content")
    rows[0].find_element(By.CSS_SELECTOR, "button[data-label=fake]").click()
    wait_until(chrome, lambda c: "done=" in c.current_url)
    assert labels_of(server, same) == dict.fromkeys(same, "fake")
    assert chrome.find_elements(By.CSS_SELECTOR, "tr[data-item]") == []  # nothing left to review for it

    fourth = scan(console, photo, name="rescan")
    (rescanned,) = item_ids(server, fourth)
    assert labels_of(server, [rescanned]) == {rescanned: "fake"}
    visit(chrome, f"{server.base}/console/queue?q=portrait&reviewed=any")
    (row,) = chrome.find_elements(By.CSS_SELECTOR, "tr[data-item]")
    assert row.get_dom_attribute("data-item") == str(rescanned)  # the newest scan stands for the content
    assert "seen 4 times" in row.text
    assert row.find_elements(By.CSS_SELECTOR, "td.thumb img")  # its reuse of a reuse still has a face
    visit(chrome, f"{server.base}/console/items/{rescanned}")
    human = text_of(chrome, "dd.human")
    assert "reviewed as fake by reviewer-token on" in human
    assert "the same content" in human
    screenshot(chrome, "labelled-item")


def two_faces_photo(path: Path) -> Path:
    scene = np.full((400, 700, 3), 120, np.uint8)
    scene[20:340, 10:330] = media_factory.face_rgb((320, 320), seed=1)
    scene[150:350, 420:620] = media_factory.face_rgb((200, 200), seed=2)
    path.write_bytes(media_factory.encode_image(scene, "jpeg"))
    return path


def frame_scores(server: Server, item_id: int) -> list[float]:
    engine = make_engine(server.database_url)
    with Session(engine) as session:
        found = [p.score for p in queries.item_timeline(session, item_id)]
    engine.dispose()
    return found


def views_of(server: Server, item_id: int) -> list[thumbnails.ViewInfo]:
    engine = make_engine(server.database_url)
    with Session(engine) as session:
        found = thumbnails.list_views(session, item_id)
    engine.dispose()
    return found


def fetch_status(chrome: Any, url: str) -> str:
    """What the browser gets for `url` with its session: "<status> <content type>"."""
    return str(
        chrome.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "fetch(arguments[0]).then(r => done(r.status + ' ' + r.headers.get('content-type')));",
            url,
        )
    )


def test_a_photo_with_two_faces_shows_the_whole_photo_with_both_boxes_and_scores(console: Console) -> None:
    from selenium.webdriver.common.by import By

    server, chrome = console.server, console.chrome
    photo = two_faces_photo(console.folder / "two-faces.jpg")
    (item,) = item_ids(server, scan(console, photo, name="two faces", faces=True))
    visit(chrome, f"{server.base}/console/items/{item}")
    (view,) = chrome.find_elements(By.CSS_SELECTOR, "svg.view")
    assert view.get_dom_attribute("viewBox") == "0 0 700 400"  # the whole photo, in its own pixels
    assert max(int(view.get_dom_attribute("width") or 0), int(view.get_dom_attribute("height") or 0)) <= 640
    image = view.find_element(By.TAG_NAME, "image").get_dom_attribute("href") or ""
    assert fetch_status(chrome, image) == "200 image/jpeg"
    boxes = view.find_elements(By.CSS_SELECTOR, "rect.box")
    assert len(boxes) == 2
    engine = make_engine(server.database_url)
    with Session(engine) as session:
        scores = sorted(session.scalars(select(FrameResult.score).where(FrameResult.item_id == item)), reverse=True)
    engine.dispose()
    listed = [li.text for li in chrome.find_elements(By.CSS_SELECTOR, "ol.faces li")]
    assert [float(re.findall(r"\d\.\d{3}", text)[0]) for text in listed] == [round(s, 3) for s in scores]
    # The larger face (left) is the bigger box, drawn where the face is.
    left = min(boxes, key=lambda b: float(b.get_dom_attribute("x") or 0))
    assert float(left.get_dom_attribute("x") or 0) < 330
    assert float(left.get_dom_attribute("width") or 0) > 150
    screenshot(chrome, "image-item")

    again = scan(console, photo, name="no evidence", faces=True, options=("--rescan", "--no-thumbnails"))
    (bare,) = item_ids(server, again)
    assert views_of(server, bare) == []  # --no-thumbnails keeps no evidence either


def test_a_video_shows_its_top_frames_and_a_timeline_shaded_as_its_caption(console: Console) -> None:
    from selenium.webdriver.common.by import By

    server, chrome = console.server, console.chrome
    video = media_factory.write_video(console.folder / "talk.mp4", seconds=6.0, fps=5.0, face=True, seed=7)
    (first,) = item_ids(server, scan(console, video, name="talk", options=("--fps", "2")))
    middle = statistics.median(frame_scores(server, first))
    options = ("--fps", "2", "--rescan", "--threshold", f"{middle:.6f}")
    (item,) = item_ids(server, scan(console, video, name="talk at the median", options=options))
    visit(chrome, f"{server.base}/console/items/{item}")
    strip = chrome.find_elements(By.CSS_SELECTOR, ".timeline-and-frames .views figure.view")
    assert 1 <= len(strip) <= thumbnails.DEFAULT_VIEWS_PER_VIDEO
    links = chrome.find_elements(By.CSS_SELECTOR, "svg.timeline a")
    assert links
    for link in links:  # every linked point leads to a frame shown on the page
        target = (link.get_dom_attribute("href") or "").split("#")[-1]
        assert chrome.find_elements(By.ID, target)

    # The shading covers exactly the flagged points, and the caption names the same ranges.
    flagged_x = [
        float(c.get_dom_attribute("cx") or 0)
        for c in chrome.find_elements(By.CSS_SELECTOR, "svg.timeline circle")
        if "(flagged)" in (c.find_element(By.TAG_NAME, "title").get_property("textContent") or "")
    ]
    bands = chrome.find_elements(By.CSS_SELECTOR, "svg.timeline rect.flagged")
    assert bands
    assert flagged_x
    spans = [(float(b.get_dom_attribute("x") or 0), float(b.get_dom_attribute("width") or 0)) for b in bands]
    for x in flagged_x:
        assert any(start - 2 <= x <= start + width + 2 for start, width in spans)
    for start, width in spans:
        inside = [x for x in flagged_x if start - 2 <= x <= start + width + 2]
        assert inside
        if width > 3:  # a range of several points: from the first to the last, no further
            assert start == pytest.approx(min(inside), abs=0.2)
            assert start + width == pytest.approx(max(inside), abs=0.2)
    caption = text_of(chrome, "p.legend")
    titles = [b.find_element(By.TAG_NAME, "title").get_property("textContent") or "" for b in bands]
    for title in titles:
        start_s, end_s = re.findall(r"(\d+\.\d\d)s", title)
        assert f"{start_s}s\u2013{end_s}s" in caption
    screenshot(chrome, "video-item")


def test_a_teammates_claimed_item_is_passed_by(console: Console) -> None:
    from selenium.webdriver.common.by import By

    server, chrome = console.server, console.chrome
    job = seed_job(server.database_url, name="team")
    first, second, third = seed_items(server.database_url, job, [{"score": 0.99}, {"score": 0.98}, {"score": 0.97}])
    server.tokens.setdefault("teammate", create_token(server.database_url, "teammate", "reviewer"))
    teammate = sign_in_over_http(server, "teammate")
    teammate.get(f"{server.base}/console/items/{first}", timeout=DEFAULT_REQUEST_TIMEOUT_S)  # opened: claimed

    visit(chrome, f"{server.base}/console/queue?job={job}")
    claimed = chrome.find_element(By.ID, f"item-{first}")
    assert "being reviewed by teammate" in claimed.text
    assert "selected" in (chrome.find_element(By.ID, f"item-{second}").get_dom_attribute("class") or "")
    press(chrome, "\ue007")  # Enter: open the selected row
    wait_until(chrome, lambda c: f"/console/items/{second}" in c.current_url)
    press(chrome, "j")
    wait_until(chrome, lambda c: f"/console/items/{third}" in c.current_url)
    held = teammate.get(f"{server.base}/console/items/{third}", timeout=DEFAULT_REQUEST_TIMEOUT_S).text
    assert "reviewer-token is reviewing this item" in held  # the teammate sees who holds it


def test_the_queue_keeps_its_place_bulk_labels_ask_first_and_stats_count_each_reviewer(console: Console) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    server, chrome = console.server, console.chrome
    job = seed_job(server.database_url, name="bulk")
    ids = seed_items(server.database_url, job, [{"score": 0.99 - i / 100} for i in range(4)])
    visit(chrome, f"{server.base}/console/queue?job={job}")
    before = int(chrome.find_element(By.CSS_SELECTOR, "p.counts span:nth-child(3) strong").text)

    # A label from the queue: back on the queue, the row after the labelled one is selected.
    chrome.find_element(By.CSS_SELECTOR, f"#item-{ids[1]} button[data-label=unsure]").click()
    wait_until(chrome, lambda c: "done=" in c.current_url)
    assert f"selected={ids[2]}" in chrome.current_url
    assert "selected" in (chrome.find_element(By.ID, f"item-{ids[2]}").get_dom_attribute("class") or "")
    assert f"Labelled item #{ids[1]} as unsure" in text_of(chrome, ".flash")
    assert_accessible(chrome)

    visit(chrome, f"{server.base}/console/queue?verdict=any&reviewed=any")  # everything, for a look
    screenshot(chrome, "queue")
    visit(chrome, f"{server.base}/console/queue?job={job}")
    for item_id in (ids[0], ids[2]):
        chrome.find_element(By.CSS_SELECTOR, f"input[name=item][value='{item_id}']").click()
    Select(chrome.find_element(By.CSS_SELECTOR, "form.bulk select[name=label]")).select_by_value("real")
    chrome.find_element(By.CSS_SELECTOR, "form.bulk button[type=submit]").click()
    wait_until(chrome, lambda c: "/console/reviews/bulk" in c.current_url)
    assert "Label 2 items as real?" in text_of(chrome, "h1")
    assert labels_of(server, [ids[0], ids[2]]) == {ids[0]: None, ids[2]: None}  # nothing yet: it asks first
    assert_accessible(chrome)  # the confirmation page (a POST's answer: checked where it is)
    chrome.find_element(By.CSS_SELECTOR, "form.confirm button[type=submit]").click()
    wait_until(chrome, lambda c: "bulk=2" in c.current_url)
    assert "Labelled 2 items as real" in text_of(chrome, ".flash")
    assert labels_of(server, ids) == {ids[0]: "real", ids[1]: "unsure", ids[2]: "real", ids[3]: None}
    assert int(chrome.find_element(By.CSS_SELECTOR, "p.counts span:nth-child(3) strong").text) == before + 3
    assert_accessible(chrome)

    visit(chrome, f"{server.base}/console/stats")
    row = next(r for r in chrome.find_elements(By.CSS_SELECTOR, "table.stats tr") if "reviewer-token" in r.text)
    cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
    assert cells[0] == "reviewer-token"
    assert int(cells[1]) >= 3  # labels today
    assert int(cells[4]) >= 2  # real
    assert int(cells[5]) >= 1  # unsure
    assert cells[6].isdigit()  # undone labels
    screenshot(chrome, "stats")
    visit(chrome, f"{server.base}/console/jobs")  # the remaining console pages pass axe-core too
    visit(chrome, f"{server.base}/console/items/987654321")
    assert "no item 987654321" in text_of(chrome, "main")
