"""`make screenshots`: PNGs of the main pages into docs/screenshots/, for the README.

Runs the shop with its simulator on a free loopback port and walks through it in Chromium as the
browser suite does (tests/e2e/tour.py: real purchases, every outcome, then the console), taking
the desktop pictures in English and phone-width pictures (390 px, the first screen) in English and
Arabic on the way.
"""

import logging
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import LiveServer  # noqa: E402
from tests.e2e.conftest import SYSTEM_CHROMIUM  # noqa: E402
from tests.e2e.tour import SERVER_ENV, SERVER_SETTINGS, ConsoleTour, ShopperTour  # noqa: E402

OUT = ROOT / "docs" / "screenshots"
DESKTOP = {"width": 1100, "height": 900}
PHONE = {"width": 390, "height": 844}
log = logging.getLogger("screenshots")

# Tour page -> picture name, at desktop width in English (the whole page).
DESKTOP_SHOTS = {
    "cart": "cart",
    "checkout": "checkout",
    "knet-page": "knet-page",
    "result-authorised": "result-authorised",
    "result-refused": "result-refused",
    "result-cancelled": "result-cancelled",
    "result-error": "result-error",
    "result-pending": "result-pending",
    "console-timeline": "timeline",
    "console-console-orders": "console",
}
ARABIC_DESKTOP_SHOTS = {"checkout": "checkout-arabic"}
# Tour page -> picture name, at phone width in each language (what the screen shows first).
PHONE_SHOTS = {
    "cart": "phone-cart",
    "checkout": "phone-checkout",
    "knet-page": "phone-knet-page",
    "result-received": "phone-result-waiting",
    "result-failed": "phone-result-failed",
    "console-timeline": "phone-timeline",
}


def main():
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # Only this script's lines: the tour injects faults on purpose, and the shop logs them as errors.
    for name in ("shop", "werkzeug"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    OUT.mkdir(parents=True, exist_ok=True)
    # The console's lists as a presenter sees them (the tests page them by 5).
    server = LiveServer(Path(tempfile.mkdtemp()), ENV=SERVER_ENV, **dict(SERVER_SETTINGS, CONSOLE_PAGE_SIZE=25))
    launch = {
        "args": ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
    }
    if SYSTEM_CHROMIUM:
        launch["executable_path"] = SYSTEM_CHROMIUM
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(**launch)
            for language in ("en", "ar"):
                page = browser.new_page(viewport=DESKTOP)
                page.set_default_timeout(15_000)
                walk(page, ShopperTour(page, server, language), language)
                page.context.close()
            page = browser.new_page(viewport=DESKTOP)
            walk(page, ConsoleTour(page, server), "en")
            browser.close()
    finally:
        server.stop()


def walk(page, tour, language):
    desktop = DESKTOP_SHOTS if language == "en" else ARABIC_DESKTOP_SHOTS
    for name in tour:
        if name in desktop:
            shot(page, desktop[name], full_page=True)
        if name in PHONE_SHOTS:
            page.set_viewport_size(PHONE)
            shot(page, f"{PHONE_SHOTS[name]}-{language}", full_page=False)
            page.set_viewport_size(DESKTOP)


def shot(page, name, full_page):
    page.screenshot(path=str(OUT / f"{name}.png"), full_page=full_page, animations="disabled")
    log.info("saved docs/screenshots/%s.png", name)


if __name__ == "__main__":
    main()
