"""A real headless Debian Chromium for the console's browser tests, and axe-core run on every page.

`visit` loads a page and fails the test when axe-core finds a violation of impact serious or
critical there, so every browser test checks the accessibility of every page it opens.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.web.conftest import Server

DEFAULT_BROWSER_WAIT_S = 30.0  # a hang guard only
SCREENS_DIR = Path("/tmp/deepscan-screens")
REPO = Path(__file__).resolve().parents[2]
AXE_SCRIPT = REPO / ".browser-tools" / "node_modules" / "axe-core" / "axe.min.js"
BLOCKING_IMPACTS = ("serious", "critical")
WINDOW_SIZE = "1366,900"


def _missing(message: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def require_chromium() -> tuple[str, str]:
    """Chromium and chromedriver (and axe-core), installed by scripts/ensure-chromium.sh when missing."""
    if not (shutil.which("chromium") and shutil.which("chromedriver") and AXE_SCRIPT.is_file()):
        subprocess.run(["bash", str(REPO / "scripts" / "ensure-chromium.sh")], check=False)
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if browser is None or driver is None:
        _missing("Chromium is not installed: run scripts/ensure-chromium.sh as root")
    if not AXE_SCRIPT.is_file():
        _missing("axe-core is not installed: run `make chromium` (needs npm)")
    return browser, driver


@contextmanager
def chromium(profile: Path) -> Iterator[Any]:
    """One headless Chromium session, closed on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = require_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument(f"--window-size={WINDOW_SIZE}")
    options.add_argument(f"--user-data-dir={profile / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not try to download anything
    session = webdriver.Chrome(
        service=Service(executable_path=driver, log_output=str(profile / "chromedriver.log")), options=options
    )
    session.set_page_load_timeout(DEFAULT_BROWSER_WAIT_S)
    session.set_script_timeout(DEFAULT_BROWSER_WAIT_S)
    try:
        yield session
    finally:
        session.quit()


def axe_violations(chrome: Any) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page now shown (injected by the driver, not the page:
    the console's CSP allows no inline script, and needs none for this)."""
    if not chrome.execute_script("return typeof window.axe !== 'undefined'"):
        chrome.execute_script(AXE_SCRIPT.read_text(encoding="utf-8"))
    found = chrome.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']})"
        ".then(r => done(r.violations)).catch(e => done([{id: 'axe-error', impact: 'critical', help: String(e)}]));"
    )
    return [
        {"id": v["id"], "impact": v["impact"], "help": v["help"], "nodes": [n["target"] for n in v.get("nodes", [])]}
        for v in found
        if v.get("impact") in BLOCKING_IMPACTS
    ]


def assert_accessible(chrome: Any) -> None:
    violations = axe_violations(chrome)
    assert violations == [], f"axe-core on {chrome.current_url}: {violations}"


def visit(chrome: Any, url: str) -> None:
    """Open `url` and check it with axe-core."""
    chrome.get(url)
    assert_accessible(chrome)


def wait_until(chrome: Any, condition: Any) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(chrome, DEFAULT_BROWSER_WAIT_S).until(condition)


def sign_in(chrome: Any, server: Server, secret: str) -> None:
    """Sign in through the login page (checked with axe-core) and land on the queue."""
    from selenium.webdriver.common.by import By

    visit(chrome, f"{server.base}/console/login")
    chrome.find_element(By.ID, "token").send_keys(secret)
    chrome.find_element(By.CSS_SELECTOR, "section.login button[type=submit]").click()
    wait_until(chrome, lambda c: "/console/queue" in c.current_url)
    assert_accessible(chrome)


def screenshot(chrome: Any, name: str) -> Path:
    """Save the page as /tmp/deepscan-screens/NAME.png (full height) for a person to look at."""
    SCREENS_DIR.mkdir(parents=True, exist_ok=True)
    height = chrome.execute_script("return document.documentElement.scrollHeight")
    width, _ = (int(v) for v in WINDOW_SIZE.split(","))
    chrome.set_window_size(width, max(int(height) + 120, 900))
    path = SCREENS_DIR / f"{name}.png"
    chrome.save_screenshot(str(path))
    chrome.set_window_size(width, 900)
    return path


def csp_errors(chrome: Any) -> list[Any]:
    return [e for e in chrome.get_log("browser") if "Content Security Policy" in e.get("message", "")]


def press(chrome: Any, key: str) -> None:
    """Type a key into the page as a person would (to the focused element, or the document)."""
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(chrome).send_keys(key).perform()
