"""The review console over HTTP: sign-in, session cookie, CSRF on every form, CSP, and escaping."""

from __future__ import annotations

import datetime as dt
import re
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from sqlalchemy import select
from sqlalchemy.orm import Session

from scanner import claims
from scanner.db import make_engine
from scanner.models import Review
from tests.web.conftest import DEFAULT_REQUEST_TIMEOUT_S, Server, create_token, seed_items, seed_job

pytestmark = pytest.mark.postgres
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
HOSTILE_URL = 'https://evil.example/<script>alert("url")</script>.jpg'
HOSTILE_ERROR = "<script>alert('error')</script> not an image or video"


def sign_in(server: Server, role: str) -> requests.Session:
    browser = requests.Session()
    page = browser.get(f"{server.base}/console/login", timeout=DEFAULT_REQUEST_TIMEOUT_S)
    csrf = _CSRF.search(page.text)
    assert csrf is not None
    done = browser.post(
        f"{server.base}/console/login",
        data={"token": server.tokens[role], "csrf": csrf.group(1)},
        allow_redirects=False,
        timeout=DEFAULT_REQUEST_TIMEOUT_S,
    )
    assert done.status_code == 303, done.text
    assert done.headers["location"] == "/console/queue"
    return browser


def form_csrf(browser: requests.Session, url: str) -> str:
    found = _CSRF.search(browser.get(url, timeout=DEFAULT_REQUEST_TIMEOUT_S).text)
    assert found is not None
    return found.group(1)


def reviews_of(server: Server, item_id: int) -> list[tuple[str, str]]:
    engine = make_engine(server.database_url)
    with Session(engine) as session:
        rows = session.scalars(select(Review).where(Review.item_id == item_id).order_by(Review.id)).all()
        found = [(r.label, r.reviewer) for r in rows]
    engine.dispose()
    return found


def test_pages_need_a_session(server: Server) -> None:
    for path in ("/console/queue", "/console/items/1", "/console/jobs", "/console/stats"):
        response = requests.get(server.base + path, allow_redirects=False, timeout=DEFAULT_REQUEST_TIMEOUT_S)
        assert response.status_code == 303
        assert response.headers["location"] == "/console/login"
    # A bearer token is for the API: it does not open console pages.
    bearer = server.get("/console/queue", "admin", allow_redirects=False)
    assert bearer.status_code == 303


def test_sign_in_sets_a_strict_httponly_cookie(server: Server) -> None:
    browser = requests.Session()
    page = browser.get(f"{server.base}/console/login", timeout=DEFAULT_REQUEST_TIMEOUT_S)
    csrf = _CSRF.search(page.text)
    assert csrf is not None
    wrong = browser.post(
        f"{server.base}/console/login",
        data={"token": server.tokens["viewer"], "csrf": "forged"},
        allow_redirects=False,
        timeout=DEFAULT_REQUEST_TIMEOUT_S,
    )
    assert wrong.status_code == 403
    assert "deepscan_session" not in wrong.headers.get("set-cookie", "")
    bad_token = browser.post(
        f"{server.base}/console/login",
        data={"token": "dsk_nope", "csrf": csrf.group(1)},
        allow_redirects=False,
        timeout=DEFAULT_REQUEST_TIMEOUT_S,
    )
    assert bad_token.status_code == 401
    assert "unknown or revoked token" in bad_token.text
    good = browser.post(
        f"{server.base}/console/login",
        data={"token": server.tokens["viewer"], "csrf": csrf.group(1)},
        allow_redirects=False,
        timeout=DEFAULT_REQUEST_TIMEOUT_S,
    )
    cookie = good.headers["set-cookie"]
    assert "deepscan_session=" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
    assert server.tokens["viewer"] not in cookie
    queue = browser.get(f"{server.base}/console/queue", timeout=DEFAULT_REQUEST_TIMEOUT_S)
    assert queue.status_code == 200
    assert "viewer-token" in queue.text


def test_every_page_has_a_strict_csp(server: Server) -> None:
    browser = sign_in(server, "viewer")
    for path in ("/console/login", "/console/queue", "/console/jobs", "/console/stats", "/docs"):
        response = browser.get(server.base + path, timeout=DEFAULT_REQUEST_TIMEOUT_S)
        assert response.status_code == 200, path
        csp = response.headers["content-security-policy"]
        assert "default-src 'none'" in csp
        assert "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert "<script>" not in response.text  # scripts only from /static
        assert "style=" not in response.text


def test_label_from_the_queue_records_the_token_name(server: Server) -> None:
    job = seed_job(server.database_url)
    first, second = seed_items(server.database_url, job, [{"score": 0.97}, {"score": 0.4}])
    browser = sign_in(server, "reviewer")
    queue = browser.get(f"{server.base}/console/queue?job={job}&verdict=any", timeout=DEFAULT_REQUEST_TIMEOUT_S).text
    assert queue.index(f'data-item="{first}"') < queue.index(f'data-item="{second}"')  # highest score first
    flagged_only = browser.get(f"{server.base}/console/queue?job={job}", timeout=DEFAULT_REQUEST_TIMEOUT_S).text
    assert f'data-item="{first}"' in flagged_only  # by default: flagged (fake) items nobody reviewed
    assert f'data-item="{second}"' not in flagged_only
    csrf = form_csrf(browser, f"{server.base}/console/queue")
    posted = browser.post(
        f"{server.base}/console/items/{first}/review",
        data={"label": "fake", "csrf": csrf, "next": f"/console/queue?job={job}&verdict=any"},
        allow_redirects=False,
        timeout=DEFAULT_REQUEST_TIMEOUT_S,
    )
    assert posted.status_code == 303
    assert posted.headers["location"].startswith(f"/console/queue?job={job}&verdict=any&done=")  # + a confirmation
    assert reviews_of(server, first) == [("fake", "reviewer-token")]
    after = browser.get(f"{server.base}/console/queue?job={job}&verdict=any", timeout=DEFAULT_REQUEST_TIMEOUT_S).text
    assert f'data-item="{first}"' not in after  # reviewed: out of the queue
    assert f'data-item="{second}"' in after


def test_forms_without_the_csrf_secret_are_refused(server: Server) -> None:
    job = seed_job(server.database_url)
    (item,) = seed_items(server.database_url, job, [{"score": 0.8}])
    browser = sign_in(server, "reviewer")
    csrf = form_csrf(browser, f"{server.base}/console/queue")
    url = f"{server.base}/console/items/{item}/review"
    missing = browser.post(url, data={"label": "fake"}, allow_redirects=False, timeout=DEFAULT_REQUEST_TIMEOUT_S)
    assert missing.status_code == 403
    assert "CSRF" in missing.text
    wrong = browser.post(url, data={"label": "fake", "csrf": csrf[:-2] + "xx"}, timeout=DEFAULT_REQUEST_TIMEOUT_S)
    assert wrong.status_code == 403
    cross_site = browser.post(
        url,
        data={"label": "fake", "csrf": csrf},
        headers={"Origin": "https://evil.example"},
        timeout=DEFAULT_REQUEST_TIMEOUT_S,
    )
    assert cross_site.status_code == 403
    other = sign_in(server, "admin")  # another session's secret does not fit this one
    foreign = form_csrf(other, f"{server.base}/console/queue")
    assert (
        browser.post(url, data={"label": "fake", "csrf": foreign}, timeout=DEFAULT_REQUEST_TIMEOUT_S).status_code == 403
    )
    assert reviews_of(server, item) == []


def test_viewers_see_no_label_buttons_and_cannot_label(server: Server) -> None:
    job = seed_job(server.database_url)
    (item,) = seed_items(server.database_url, job, [{"score": 0.8}])
    browser = sign_in(server, "viewer")
    page = browser.get(f"{server.base}/console/items/{item}", timeout=DEFAULT_REQUEST_TIMEOUT_S).text
    assert 'data-shortcut="f"' not in page
    csrf = form_csrf(browser, f"{server.base}/console/queue")
    refused = browser.post(
        f"{server.base}/console/items/{item}/review",
        data={"label": "fake", "csrf": csrf},
        timeout=DEFAULT_REQUEST_TIMEOUT_S,
    )
    assert refused.status_code == 403
    assert "needs reviewer" in refused.text


def test_script_in_url_and_error_renders_inert(server: Server) -> None:
    job = seed_job(server.database_url, name="<script>alert('job')</script>")
    (item,) = seed_items(
        server.database_url,
        job,
        [{"url": HOSTILE_URL, "status": "error", "error": HOSTILE_ERROR, "score": None, "kind": "unknown"}],
    )
    browser = sign_in(server, "reviewer")
    pages = [
        browser.get(f"{server.base}/console/items/{item}", timeout=DEFAULT_REQUEST_TIMEOUT_S).text,
        browser.get(f"{server.base}/console/queue?status=error&verdict=any", timeout=DEFAULT_REQUEST_TIMEOUT_S).text,
        browser.get(f"{server.base}/console/jobs", timeout=DEFAULT_REQUEST_TIMEOUT_S).text,
    ]
    for html in pages:
        assert "<script>alert" not in html
        assert "&lt;script&gt;alert" in html
    assert "&lt;script&gt;alert(&#34;url&#34;)&lt;/script&gt;.jpg" in pages[0]
    assert "not an image or video" in pages[0]


def test_item_page_shows_the_video_timeline_with_flagged_ranges(server: Server) -> None:
    job = seed_job(server.database_url)
    frames = [(0.0, 0.1), (1.0, 0.2), (2.0, 0.8), (3.0, 0.9), (4.0, 0.1)]
    (video,) = seed_items(
        server.database_url, job, [{"score": 0.9, "kind": "video", "strategy": "segments", "frames": frames}]
    )
    page = sign_in(server, "viewer").get(f"{server.base}/console/items/{video}", timeout=DEFAULT_REQUEST_TIMEOUT_S).text
    assert '<svg class="timeline"' in page
    assert page.count('<rect class="flagged"') == 1
    assert "2.00s\u20133.00s" in page  # the flagged range, in the legend
    assert page.count("<circle") == len(frames)


def test_next_item_follows_the_queue_order(server: Server) -> None:
    job = seed_job(server.database_url)
    high, middle, low = seed_items(server.database_url, job, [{"score": 0.9}, {"score": 0.6}, {"score": 0.3}])
    browser = sign_in(server, "reviewer")
    page = browser.get(f"{server.base}/console/items/{high}?job={job}", timeout=DEFAULT_REQUEST_TIMEOUT_S).text
    assert f'href="/console/next?job={job}&amp;from={high}" data-shortcut="j"' in page
    onward = browser.get(
        f"{server.base}/console/next?job={job}&from={high}", allow_redirects=False, timeout=DEFAULT_REQUEST_TIMEOUT_S
    )
    assert onward.headers["location"] == f"/console/items/{middle}?job={job}&prev={high}"
    csrf = form_csrf(browser, f"{server.base}/console/queue")
    labelled = browser.post(
        f"{server.base}/console/items/{middle}/review",
        data={"label": "real", "csrf": csrf, "next": f"/console/items/{low}?job={job}&prev={middle}"},
        allow_redirects=False,
        timeout=DEFAULT_REQUEST_TIMEOUT_S,
    )
    assert labelled.headers["location"].startswith(f"/console/items/{low}?job={job}&prev={middle}&done=")
    escaped = browser.post(
        f"{server.base}/console/items/{low}/review",
        data={"label": "real", "csrf": csrf, "next": "https://evil.example/"},
        allow_redirects=False,
        timeout=DEFAULT_REQUEST_TIMEOUT_S,
    )
    assert escaped.headers["location"].startswith(f"/console/items/{low}?done=")  # never an open redirect


def test_sign_out_ends_the_session(server: Server) -> None:
    browser = sign_in(server, "viewer")
    csrf = form_csrf(browser, f"{server.base}/console/queue")
    out = browser.post(
        f"{server.base}/console/logout", data={"csrf": csrf}, allow_redirects=False, timeout=DEFAULT_REQUEST_TIMEOUT_S
    )
    assert out.status_code == 303
    again = browser.get(f"{server.base}/console/queue", allow_redirects=False, timeout=DEFAULT_REQUEST_TIMEOUT_S)
    assert again.headers["location"] == "/console/login"


def test_two_moderators_racing_for_the_next_item_never_get_the_same_one(server: Server) -> None:
    job = seed_job(server.database_url)
    start, *rest = seed_items(server.database_url, job, [{"score": 0.99 - i / 100} for i in range(4)])
    server.tokens.setdefault("second", create_token(server.database_url, "second-reviewer", "reviewer"))
    first, second = sign_in(server, "reviewer"), sign_in(server, "second")

    def onward(browser: requests.Session) -> int:
        got = browser.get(
            f"{server.base}/console/next?job={job}&from={start}",
            allow_redirects=False,
            timeout=DEFAULT_REQUEST_TIMEOUT_S,
        )
        return int(got.headers["location"].split("?")[0].rsplit("/", 1)[-1])

    with ThreadPoolExecutor(max_workers=4) as pool:  # both at once, twice each
        taken = list(pool.map(onward, [first, second] * 2))
    mine, theirs = set(taken[0::2]), set(taken[1::2])
    assert len(mine) == 1  # asking again keeps one's own item
    assert len(theirs) == 1
    assert mine != theirs  # never the same item
    assert mine | theirs == set(rest[:2])  # the next two in the queue's order
    queue = first.get(f"{server.base}/console/queue?job={job}", timeout=DEFAULT_REQUEST_TIMEOUT_S).text
    assert queue.count('data-claimed="other"') == 1  # the other moderator's, visible to this one
    assert f'id="item-{theirs.pop()}" data-item' in queue


def test_a_claim_lapses_and_a_label_releases_it(server: Server) -> None:
    job = seed_job(server.database_url)
    (item,) = seed_items(server.database_url, job, [{"score": 0.9}])
    engine = make_engine(server.database_url)
    now = dt.datetime.now(dt.UTC)
    with Session(engine) as session, session.begin():
        assert claims.claim(session, item, "ann", now=now).reviewer == "ann"
        assert claims.claim(session, item, "bob", now=now + dt.timedelta(seconds=60)).reviewer == "ann"
        later = now + dt.timedelta(seconds=claims.DEFAULT_CLAIM_S + 1)
        assert claims.claim(session, item, "bob", now=later).reviewer == "bob"  # ann's claim lapsed
    browser = sign_in(server, "reviewer")
    browser.get(f"{server.base}/console/items/{item}", timeout=DEFAULT_REQUEST_TIMEOUT_S)  # bob holds it still
    csrf = form_csrf(browser, f"{server.base}/console/queue")
    browser.post(
        f"{server.base}/console/items/{item}/review",
        data={"label": "real", "csrf": csrf},
        timeout=DEFAULT_REQUEST_TIMEOUT_S,
    )
    with Session(engine) as session:
        assert claims.live_claims(session, [item], now=later) == {}  # labelled: released
    engine.dispose()
