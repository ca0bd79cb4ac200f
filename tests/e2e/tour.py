"""Every page a shopper and a presenter can see, reached in one browser as they reach them: by real
purchases through the simulator (every outcome, in English and Arabic) and by the console's own
links. Each tour is a generator: it yields a name at each page, and whoever walks it looks at the
page before the tour goes on (tests/e2e/test_every_page.py checks the layout and runs axe;
scripts/screenshots.py takes pictures).

The simulator's webhooks are held (the `webhook_burst` fault) until the tour lets them go, so the
pages first show what the redirect said and then, without a reload, the webhook's verdict.
"""

import re
import time
from pathlib import Path

import requests
from babel.support import Translations
from playwright.sync_api import expect

from shop.simulator import faults
from shop.storefront.catalog import get_product
from tests.console_helpers import CONSOLE_PAGES
from tests.e2e.journeys import BrowserShopper

TRANSLATIONS = Path(__file__).resolve().parents[2] / "shop" / "translations"
# What a tour's server needs: prompt webhooks once released, quick retries, small console pages.
SERVER_ENV = {"SIMULATOR_WEBHOOK_DELAY": "0", "SIMULATOR_PENDING_DELAY": "0.2"}
SERVER_SETTINGS = {"PAYMENTS_RETRY_BACKOFF": (0, 0), "CONSOLE_PAGE_SIZE": 5, "WORKER_INTERVAL": 0.5}
RESULT_TIMEOUT = 20_000


def translator(language):
    """The shop's own words in `language` (its catalog), to find buttons and headings by name."""
    if language == "en":
        return lambda text: text
    return Translations.load(str(TRANSLATIONS), [language]).gettext


def in_app(server, function, *args, **kwargs):
    with server.app.app_context():
        return function(*args, **kwargs)


def hold_webhooks(server):
    in_app(server, faults.inject, "webhooks", "webhook_burst", count=None)


def release_webhooks(server):
    in_app(server, faults.release_burst)


class ShopperTour:
    """A shopper who chose `language`, buying in one browser page."""

    def __init__(self, page, server, language):
        self.page, self.server, self.language = page, server, language
        self._ = translator(language)
        self.shopper = BrowserShopper(page, server.url, translate=self._, language=language)
        self.product = get_product("medjool-dates")

    def product_name(self, product):
        return product.name_ar if self.language == "ar" else product.name

    def heading(self, text, **kwargs):
        return self.page.get_by_role("heading", name=self._(text), **kwargs)

    def button(self, text):
        return self.page.get_by_role("button", name=self._(text), exact=True)

    def start_paying(self):
        """To the checkout (the details are remembered) and Pay; first a box of dates in the cart if it
        is empty (after a payment that went through, or may still)."""
        self.page.goto(self.server.url + "/checkout")
        if not self.page.url.endswith("/checkout"):  # sent to the empty cart
            self.shopper.fill_cart(product=self.product_name(self.product))
            self.page.goto(self.server.url + "/checkout")
        self.shopper.press_pay()

    def buy(self, title, **knet):
        self.start_paying()
        self.shopper.pay_on_knet(**knet)
        expect(self.heading(title)).to_be_visible(timeout=RESULT_TIMEOUT)

    def __iter__(self):
        page, url, _ = self.page, self.server.url, self._
        hold_webhooks(self.server)
        page.goto(f"{url}/language/{self.language}?next=/")
        expect(page.locator("html")).to_have_attribute("lang", self.language)
        yield "catalog"
        page.goto(url + "/cart")
        yield "cart-empty"
        self.shopper.fill_cart(product=self.product_name(get_product("sadu-cushion")), quantity=2)
        self.shopper.fill_cart(product=self.product_name(self.product))
        yield "cart"

        page.get_by_role("link", name=_("Checkout")).click()
        yield "checkout"
        self.shopper.press_pay()  # nothing filled in yet
        expect(self.heading("Please check your details")).to_be_visible()
        yield "checkout-errors"
        page.goto(url + "/cart")
        self.shopper.check_out()
        self.shopper.press_pay()
        card_number = page.get_by_label(self.shopper.knet["card"])
        expect(card_number).to_be_visible()
        knet_url = page.url
        yield "knet-page"
        page.locator("form.pay-form").evaluate("form => { form.noValidate = true; }")
        page.get_by_role("button", name=self.shopper.knet["submit"]).click()
        expect(page.locator("[aria-invalid=true]").first).to_be_visible()
        yield "knet-page-errors"
        self.shopper.pay_on_knet()
        expect(self.heading("Payment successful")).to_be_visible(timeout=RESULT_TIMEOUT)
        yield "result-authorised"
        token = page.url.rsplit("/", 1)[1]

        # Back on KNET's page of a finished payment; it would take the shopper back after 3 s.
        page.route("**/autosubmit.js", lambda route: route.abort())
        page.goto(knet_url)
        yield "knet-already-completed"
        page.unroute("**/autosubmit.js")
        page.goto(f"{url}/_sim/knet/kpg/PaymentHTTP.htm?paymentId=no-such-payment")
        yield "knet-unknown"

        self.buy("Payment refused", pin="9999")
        yield "result-refused"
        self.buy("Payment cancelled", cancel=True)
        yield "result-cancelled"
        self.buy("Payment error", card="8888880000000003")
        yield "result-error"
        self.buy("Order received", card="8888880000000004")
        pending = page.url
        yield "result-pending"
        self.buy("Order received", card="8888880000000005")
        yield "result-received"
        # The webhook fails the Received payment: the page says so by itself, without a reload.
        release_webhooks(self.server)
        expect(self.heading("Order cancelled")).to_be_visible(timeout=RESULT_TIMEOUT)
        expect(page.get_by_role("link", name=_("Check again"))).to_have_count(0)
        yield "result-failed"
        self.button("Try again").click()  # the cart was emptied at Received: the order's items come back
        expect(page.get_by_role("heading", name=_("Checkout"), exact=True)).to_be_visible()
        expect(page.get_by_text(self.product_name(self.product))).to_be_visible()
        yield "checkout-cart-restored"
        page.goto(pending)
        expect(self.heading("Payment successful")).to_be_visible(timeout=RESULT_TIMEOUT)
        yield "result-paid"
        hold_webhooks(self.server)

        # The same flow with POST redirects both ways, as a page without JavaScript shows them.
        config = self.server.app.config
        config["SIMULATOR_ACTION_METHOD"] = config["SIMULATOR_RETURN_METHOD"] = "POST"
        page.route("**/autosubmit.js", lambda route: route.abort())
        try:
            self.start_paying()
            expect(page.get_by_role("button", name=_("Continue to KNET"))).to_be_visible()
            yield "redirect-to-knet"
            page.get_by_role("button", name=_("Continue to KNET")).click()
            self.shopper.pay_on_knet()
            return_button = page.get_by_role("button", name=re.compile("Return to the shop|العودة إلى المتجر"))
            expect(return_button).to_be_visible()
            yield "knet-returning"
            return_button.click()
            expect(self.heading("Payment successful")).to_be_visible(timeout=RESULT_TIMEOUT)
        finally:
            page.unroute("**/autosubmit.js")
            config["SIMULATOR_ACTION_METHOD"] = config["SIMULATOR_RETURN_METHOD"] = "GET"

        # Adyen does not answer /payments (three tries): the order waits, with Try again.
        in_app(self.server, faults.inject, "/payments", "http_500", count=3)
        self.start_paying()
        expect(self.heading("Waiting for the payment result")).to_be_visible(timeout=RESULT_TIMEOUT)
        yield "result-no-answer"
        # Another tab, or Back: one cart, one payment, unless the shopper starts a new one.
        page.goto(url + "/checkout")
        expect(self.heading("Your payment is in progress")).to_be_visible()
        yield "checkout-in-progress"
        in_app(self.server, faults.inject, "/paymentMethods", "http_500", count=1)
        page.get_by_role("button", name=_("Start a new payment")).click()
        expect(page.get_by_role("alert")).to_be_visible()
        yield "checkout-no-methods"
        in_app(self.server, faults.clear)

        page.goto(f"{url}/checkout/return/{token}")  # the way back from KNET, without its result
        yield "return-without-result"
        page.goto(url + "/no-such-page")
        yield "error-404"
        release_webhooks(self.server)


class ConsoleTour:
    """The developer console (and the simulator's fault page), with the orders the server has."""

    def __init__(self, page, server):
        self.page, self.server = page, server

    def __iter__(self):
        page, url = self.page, self.server.url
        # A refused webhook, for the inbox's second list.
        requests.post(url + "/webhooks/adyen", data=b"{}", headers={"Content-Type": "application/json"}, timeout=10)
        hold_webhooks(self.server)
        page.goto(url + "/console/demo")
        yield "console-demo"
        page.get_by_role("button", name=re.compile("Start “Pending, then paid”")).click()
        expect(page.get_by_role("heading", name=re.compile(r"^Order KNET-\S+$"))).to_be_visible(timeout=RESULT_TIMEOUT)
        expect(page.locator("#order-status")).to_have_text("pending")
        yield "console-timeline-waiting"
        release_webhooks(self.server)
        expect(page.locator("#order-status")).to_have_text("paid", timeout=RESULT_TIMEOUT)  # no reload
        yield "console-timeline"
        # Part of it refunded: the confirmation step, the timeline after, and what the shopper sees.
        page.get_by_label(re.compile(r"^Amount \(KWD")).fill("5.000")
        page.get_by_role("button", name="Refund…").click()
        expect(page.get_by_role("heading", name=re.compile("^Confirm the refund"))).to_be_visible()
        yield "console-refund-confirm"
        page.get_by_role("button", name="Refund 5.000 KWD").click()
        refund_status = page.locator("tr[data-refund] .status")
        for _ in range(100):  # the REFUND webhook decides; the console's page shows it when reloaded
            if refund_status.inner_text().strip() == "succeeded":
                break
            time.sleep(0.2)
            page.reload()
        expect(refund_status).to_have_text("succeeded")
        yield "console-timeline-refunded"
        page.get_by_role("link", name="the result page the shopper sees").click()
        expect(page.get_by_text(re.compile(r"^Refunded 5\.000 KWD on "))).to_be_visible()
        yield "result-partly-refunded"
        others = [path for path in CONSOLE_PAGES if path != "/console/demo"]
        for path in [*others, "/console/orders?page=2", "/_sim/faults"]:
            page.goto(url + path)
            yield "console-" + path.strip("/").replace("/", "-").replace("?", "-").replace("=", "-")
