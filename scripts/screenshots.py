"""`make screenshots`: PNGs of the main pages into docs/screenshots/, for the README.

Runs the shop with its simulator on a free loopback port and walks through it in Chromium,
as a shopper and a presenter would.
"""

import logging
import re
import sys
import tempfile
from pathlib import Path

from babel.support import Translations
from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shop.storefront.catalog import get_product  # noqa: E402
from tests.conftest import LiveServer  # noqa: E402
from tests.e2e.conftest import SYSTEM_CHROMIUM  # noqa: E402
from tests.e2e.journeys import BrowserShopper  # noqa: E402

OUT = ROOT / "docs" / "screenshots"
log = logging.getLogger("screenshots")

OUTCOMES = [
    ("result-authorised", {}),
    ("result-refused", {"pin": "9999"}),
    ("result-cancelled", {"cancel": True}),
    ("result-error", {"card": "8888880000000003"}),
    ("result-pending", {"card": "8888880000000004"}),
]


def main():
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    OUT.mkdir(parents=True, exist_ok=True)
    server = LiveServer(
        Path(tempfile.mkdtemp()), ENV={"SIMULATOR_WEBHOOK_DELAY": "600", "SIMULATOR_PENDING_DELAY": "600"}
    )
    # The demo's webhook comes at once, so the timeline shows a paid order.
    launch = {
        "args": ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
    }
    if SYSTEM_CHROMIUM:
        launch["executable_path"] = SYSTEM_CHROMIUM
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(**launch)
            page = browser.new_page(viewport={"width": 1100, "height": 900})

            def shot(name):
                page.screenshot(path=str(OUT / f"{name}.png"), full_page=True)
                log.info("saved docs/screenshots/%s.png", name)

            shopper = BrowserShopper(page, server.url)
            shopper.fill_cart()
            shot("cart")
            shopper.check_out()
            expect(page.get_by_role("img", name="KNET").or_(page.locator("img[src*='knet']"))).to_be_visible()
            shot("checkout")
            shopper.press_pay()
            expect(page.get_by_label("Card Number")).to_be_visible()
            shot("knet-page")
            for name, knet in OUTCOMES:
                if name != "result-authorised":  # each outcome in a fresh browser, from an empty cart
                    page.context.close()
                    page = browser.new_page(viewport={"width": 1100, "height": 900})
                    shopper = BrowserShopper(page, server.url)
                    shopper.fill_cart()
                    shopper.check_out()
                    shopper.press_pay()
                shopper.pay_on_knet(**knet)
                expect(page.get_by_text("12.500 KWD")).to_be_visible()
                shot(name)

            # The presenter's views: the console's order list and the timeline of a paid order.
            server.app.config["SIMULATOR_WEBHOOK_DELAY"] = 0.5  # this time the webhook comes at once
            page.goto(server.url + "/console/demo")
            page.get_by_role("button", name=re.compile("Authorised")).first.click()
            expect(page.locator("#order-status")).to_have_text("paid", timeout=30_000)
            shot("timeline")
            page.goto(server.url + "/console/orders")
            shot("console")

            # The Arabic checkout, right to left (the browser asks for Arabic).
            page.context.close()
            page = browser.new_page(viewport={"width": 1100, "height": 900}, locale="ar-KW")
            arabic = Translations.load(str(ROOT / "shop" / "translations"), ["ar"])
            shopper = BrowserShopper(page, server.url, translate=arabic.gettext, language="ar")
            shopper.fill_cart(product=get_product("medjool-dates").name_ar)
            shopper.check_out()
            shot("checkout-arabic")
            browser.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
