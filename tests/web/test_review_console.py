"""The review console as a moderation team uses it, in a real headless Chromium over a real `deepscan serve`.

Labels are safe (Enter in the note never labels; a label is confirmed and can be undone, and the
undo stays in the history), follow content (one queue row per content; a rescan arrives labelled),
and every page visited passes axe-core with nothing serious or critical. One browser for the module.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session

from scanner import queries
from scanner.cli import cli
from scanner.db import make_engine
from scanner.models import MediaItem, Review
from tests import media_factory
from tests.pipeline_helpers import write_tiny_checkpoint
from tests.web.browser import chromium, csp_errors, screenshot, sign_in, visit, wait_until
from tests.web.conftest import Server, seed_items, seed_job

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@dataclass
class Console:
    server: Server
    chrome: Any
    folder: Path
    checkpoint: Path


@pytest.fixture(scope="module")
def console(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    tmp = tmp_path_factory.mktemp("review-console")
    folder = tmp / "media"
    folder.mkdir()
    with chromium(tmp) as chrome:
        sign_in(chrome, server, server.tokens["reviewer"])
        yield Console(server, chrome, folder, write_tiny_checkpoint(tmp / "tiny.safetensors"))


def scan(console: Console, *sources: Path, name: str) -> int:
    """`deepscan scan` in-process (no broker) into the server's database; every item flagged (threshold 0)."""
    args = ["--database-url", console.server.database_url, "scan", *map(str, sources), "--name", name]
    args += ["--checkpoint", str(console.checkpoint), "--threshold", "0", "--format", "json"]
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
    screenshot(chrome, "queue")
    rows[0].find_element(By.CSS_SELECTOR, "button[data-label=fake]").click()
    wait_until(chrome, lambda c: "done=" in c.current_url)
    assert labels_of(server, same) == dict.fromkeys(same, "fake")
    assert chrome.find_elements(By.CSS_SELECTOR, "tr[data-item]") == []  # nothing left to review for it

    fourth = scan(console, photo, name="rescan")
    (rescanned,) = item_ids(server, fourth)
    assert labels_of(server, [rescanned]) == {rescanned: "fake"}
    visit(chrome, f"{server.base}/console/items/{rescanned}")
    human = text_of(chrome, "dd.human")
    assert "reviewed as fake by reviewer-token on" in human
    assert "the same content" in human
    screenshot(chrome, "labelled-item")
