"""Every KNET outcome as a shopper sees it in Chromium, from an empty cart to the final page."""

import re
import time
from pathlib import Path

import pytest
from babel.support import Translations
from playwright.sync_api import expect

from shop.db import db
from shop.models import Email
from shop.simulator import faults
from shop.storefront.catalog import get_product
from tests.e2e.journeys import BrowserShopper
from tests.e2e.tour import in_app

TRANSLATIONS = Path(__file__).resolve().parents[2] / "shop" / "translations"

# Webhooks held back, so the page shows what the redirect said.
NO_WEBHOOKS_YET = {"SIMULATOR_WEBHOOK_DELAY": "600", "SIMULATOR_PENDING_DELAY": "600"}
# Webhooks at once, so the page moves on to the order's final state.
QUICK_WEBHOOKS = {"SIMULATOR_WEBHOOK_DELAY": "0", "SIMULATOR_PENDING_DELAY": "0.5"}


@pytest.fixture
def shopper(page, console_log, live_server_factory, request):
    env = getattr(request, "param", NO_WEBHOOKS_YET)
    server = live_server_factory(ENV=env)
    page.set_default_timeout(15_000)
    shopper = BrowserShopper(page, server.url)
    shopper.server = server
    return shopper


def wait_for_email(server, words, timeout=20):
    """The body of the first shopper email containing `words`, once the worker has written it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with server.app.app_context():
            for email in db.session.execute(db.select(Email)).scalars():
                if email.body and words in email.body:
                    return email.body
        time.sleep(0.1)
    raise AssertionError(f"no email containing {words!r} within {timeout} s")


@pytest.mark.parametrize(
    "knet, title, message",
    [
        ({}, "Payment successful", "Your payment was successful."),
        ({"month": "05", "year": "2031"}, "Payment refused", "The payment was refused by KNET."),
        ({"pin": "9999"}, "Payment refused", "The payment was refused by KNET."),
        ({"cancel": True}, "Payment cancelled", "Do you want to continue with your order?"),
        ({"card": "8888880000000003"}, "Payment error", "There was an error processing your payment."),
    ],
    ids=["authorised", "refused-by-expiry", "refused-by-pin", "cancelled", "error"],
)
def test_outcome_shown_to_the_shopper(shopper, knet, title, message):
    shopper.buy(**knet)
    shopper.expect_result(title, message)
    expect(shopper.page.get_by_text("12.500 KWD")).to_be_visible()
    reference = shopper.page.get_by_text(re.compile(r"^KNET-\d{8}-[0-9A-F]{8}$"))
    expect(reference).to_be_visible()
    if title == "Payment successful":
        expect(shopper.page.get_by_role("link", name="Continue shopping")).to_be_visible()
    else:  # KNET is the only payment method: one way to try again
        expect(shopper.page.get_by_role("button", name="Try again")).to_be_visible()
        expect(shopper.page.get_by_text("Choose another payment method")).to_have_count(0)


def test_try_again_after_a_refusal_pays_with_the_same_cart(shopper):
    shopper.buy(pin="9999")
    shopper.expect_result("Payment refused", "refused by KNET")
    shopper.page.get_by_role("button", name="Try again").click()
    expect(shopper.page.get_by_label("First name")).to_have_value("Fatima")  # details remembered
    shopper.press_pay()
    shopper.pay_on_knet()
    shopper.expect_result("Payment successful", "Your payment was successful.")


@pytest.mark.parametrize("shopper", [QUICK_WEBHOOKS], indirect=True)
def test_pending_then_paid_by_webhook(shopper):
    shopper.buy(card="8888880000000004")
    # First what the redirect said, then the page brings itself up to date when the webhook lands.
    expect(shopper.page.get_by_text("Payment successful")).to_be_visible(timeout=20_000)
    expect(shopper.page.get_by_text("We are preparing your order.", exact=False)).to_be_visible()


@pytest.mark.parametrize("shopper", [QUICK_WEBHOOKS], indirect=True)
def test_received_then_failed_by_webhook_then_try_again_with_the_same_items(shopper):
    in_app(shopper.server, faults.inject, "webhooks", "webhook_burst", count=None)  # held until released
    shopper.buy(card="8888880000000005")
    page = shopper.page
    expect(page.get_by_role("heading", name="Order received")).to_be_visible(timeout=20_000)
    live_region = page.get_by_role("status").filter(has_text="Order received")
    live_region.evaluate("region => { region.dataset.seen = 'yes'; }")  # to tell a reload from an update
    expect(page.get_by_role("link", name="Cart", exact=True)).to_be_visible()  # the order emptied the cart
    in_app(shopper.server, faults.release_burst)
    # The same live region takes the webhook's verdict (so a screen reader says it): no reload.
    expect(page.locator("[role=status][data-seen=yes] h1")).to_have_text("Order cancelled", timeout=20_000)
    expect(page.get_by_text("The payment failed, so we cancelled the order.")).to_be_visible()
    expect(page.get_by_role("link", name="Check again")).to_have_count(0)
    page.get_by_role("button", name="Try again").click()
    expect(page.get_by_text("Its items are back in your cart")).to_be_visible()
    expect(page.get_by_role("button", name="Pay 12.500 KWD with KNET")).to_be_visible()
    shopper.press_pay()
    shopper.pay_on_knet()
    shopper.expect_result("Payment successful", "Your payment was successful.")


@pytest.mark.parametrize(
    "shopper",
    [dict(NO_WEBHOOKS_YET, SIMULATOR_ACTION_METHOD="POST", SIMULATOR_RETURN_METHOD="POST")],
    indirect=True,
)
def test_post_redirects_both_ways(shopper):
    shopper.fill_cart()
    shopper.check_out()
    shopper.press_pay()  # the auto-submitted form takes the shopper to KNET by POST
    shopper.pay_on_knet()  # and KNET posts the shopper back
    shopper.expect_result("Payment successful", "Your payment was successful.")


@pytest.mark.parametrize("shopper", [{"SIMULATOR_OFFER_EXPIRY": "1", "SIMULATOR_WEBHOOK_DELAY": "0"}], indirect=True)
def test_abandoned_knet_page_ends_in_offer_closed(shopper):
    shopper.fill_cart()
    shopper.check_out()
    shopper.press_pay()
    expect(shopper.page.get_by_label("Card Number")).to_be_visible()
    shopper.page.goto("about:blank")  # the shopper closes the tab and never comes back
    # The shopper's email says the order was cancelled, with a link to it.
    email = wait_for_email(shopper.server, "timed out")
    link = re.search(r"https?://\S+/orders/\S+", email).group(0)
    shopper.page.goto(link)
    expect(shopper.page.get_by_role("heading", name="Order cancelled")).to_be_visible()
    expect(shopper.page.get_by_text("The payment timed out, so we cancelled the order.")).to_be_visible()


def test_the_whole_flow_works_without_javascript(browser, live_server_factory):
    server = live_server_factory(
        ENV=dict(NO_WEBHOOKS_YET, SIMULATOR_ACTION_METHOD="POST", SIMULATOR_RETURN_METHOD="POST")
    )
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.set_default_timeout(15_000)
    shopper = BrowserShopper(page, server.url)
    shopper.fill_cart()
    shopper.check_out()
    shopper.press_pay()
    page.get_by_role("button", name="Continue to KNET").click()  # no script to submit it for us
    shopper.pay_on_knet()
    page.get_by_role("button", name="Return to the shop").click()
    shopper.expect_result("Payment successful", "Your payment was successful.")
    context.close()


def test_without_javascript_check_again_shows_the_webhooks_verdict(browser, live_server_factory):
    server = live_server_factory(ENV=QUICK_WEBHOOKS)
    in_app(server, faults.inject, "webhooks", "webhook_burst", count=None)
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.set_default_timeout(15_000)
    shopper = BrowserShopper(page, server.url)
    shopper.buy(card="8888880000000004")
    shopper.expect_result("Order received", "waiting for the payment to be completed")
    expect(page.get_by_text("Press Check again to see it.")).to_be_visible()  # it does not claim to update itself
    in_app(server, faults.release_burst)
    deadline = time.monotonic() + 20
    while not page.get_by_text("We are preparing your order.").count() and time.monotonic() < deadline:
        page.get_by_role("link", name="Check again").click()  # what a shopper without JavaScript does
    shopper.expect_result("Payment successful", "We are preparing your order.")
    context.close()


def test_arabic_shopper_pays_right_to_left(page, console_log, live_server_factory):
    server = live_server_factory(ENV=NO_WEBHOOKS_YET)
    arabic = Translations.load(str(TRANSLATIONS), ["ar"])
    shopper = BrowserShopper(page, server.url, translate=arabic.gettext, language="ar")
    page.set_default_timeout(15_000)
    page.goto(server.url + "/")
    page.get_by_role("link", name="العربية").click()
    expect(page.locator("html")).to_have_attribute("dir", "rtl")
    expect(page.locator("html")).to_have_attribute("lang", "ar")
    shopper.fill_cart(product=get_product("medjool-dates").name_ar)
    shopper.check_out()
    expect(page.locator("html")).to_have_attribute("dir", "rtl")
    shopper.press_pay()
    shopper.pay_on_knet()  # the KNET page speaks Arabic too: the shop sent shopperLocale ar-KW
    shopper.expect_result("Payment successful", "Your payment was successful. Thank you for your order.")
    expect(page.locator("html")).to_have_attribute("dir", "rtl")
    expect(page.get_by_text("12.500 د.ك")).to_be_visible()
    expect(page.get_by_role("link", name=arabic.gettext("Continue shopping"))).to_be_visible()


@pytest.mark.parametrize("shopper", [QUICK_WEBHOOKS], indirect=True)
def test_presenter_follows_a_finished_order_in_the_console(shopper):
    shopper.buy()
    shopper.expect_result("Payment successful", "Your payment was successful.")
    reference = shopper.page.get_by_text(re.compile(r"^KNET-\d{8}-[0-9A-F]{8}$")).inner_text()
    page = shopper.page
    page.goto(shopper.base_url + "/console/orders")
    page.get_by_role("link", name=reference).click()
    expect(page.get_by_role("heading", name=f"Order {reference}", exact=True)).to_be_visible()
    expect(page.locator("#order-status")).to_have_text("paid", timeout=20_000)  # it refreshes until the webhook
    titles = page.locator("li.step h3").all_inner_texts()

    def in_order(*wanted):
        positions = [next(i for i, title in enumerate(titles) if words in title) for words in wanted]
        assert positions == sorted(positions), titles

    # The shopper's steps in order; the webhook may land before or after the return (both are
    # real), but the order becomes paid only after it.
    in_order(
        "POST /paymentMethods",
        "POST /payments ",
        "Shopper sent to KNET",
        "Shopper back from KNET",
        "POST /payments/details",
    )
    in_order("Shopper sent to KNET", "AUTHORISATION success=true", "pending → paid")
