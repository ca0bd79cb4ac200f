"""Browser fixtures: Playwright driving Chromium (Debian's /usr/bin/chromium when present,
otherwise the one `playwright install chromium` fetched) against a live server.

On a failure the test keeps a screenshot and the page's console log under test-artifacts/.
"""

import os
import re
import shutil
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
SYSTEM_CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    # Flags for a root CI machine with no network: no sandbox, no background calls home.
    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ]
    launch = dict(browser_type_launch_args, args=args)
    if SYSTEM_CHROMIUM:
        launch["executable_path"] = SYSTEM_CHROMIUM
    return launch


@pytest.fixture
def console_log(page):
    """Everything the page printed to its console, kept for the failure report."""
    lines = []
    page.on("console", lambda message: lines.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: lines.append(f"pageerror: {error}"))
    return lines


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    page = item.funcargs.get("page") or item.funcargs.get("no_js_page")
    if page is None:
        return
    ARTIFACTS.mkdir(exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", item.nodeid)[-120:]
    try:
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    except Exception as error:  # noqa: BLE001 - the page may be gone; the log still helps
        report.sections.append(("screenshot", f"could not take one: {error}"))
    lines = item.funcargs.get("console_log") or []
    (ARTIFACTS / f"{name}.console.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    report.sections.append(("browser", f"screenshot and console log in {ARTIFACTS}/{name}.*"))
