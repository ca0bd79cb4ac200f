"""A presenter refunds part of a paid order from the console, in Chromium; the shopper's order page
and the email (on the console's emails page) then say what was refunded."""

import re
import time

import pytest
from playwright.sync_api import expect

from tests.e2e.journeys import BrowserShopper

QUICK_WEBHOOKS = {"SIMULATOR_WEBHOOK_DELAY": "0", "SIMULATOR_PENDING_DELAY": "0.5"}


@pytest.fixture
def presenter(page, console_log, live_server_factory):
    server = live_server_factory(ENV=QUICK_WEBHOOKS)
    page.set_default_timeout(15_000)
    shopper = BrowserShopper(page, server.url)
    shopper.server = server
    return shopper


def reload_until(page, locator, text, timeout=20):
    """Reload (as the console's Check again does) until `locator` shows `text`."""
    deadline = time.monotonic() + timeout
    while locator.inner_text().strip() != text:
        if time.monotonic() > deadline:
            raise AssertionError(f"still {locator.inner_text()!r}, not {text!r}")
        time.sleep(0.2)
        page.reload()


def test_a_presenter_refunds_from_the_console_and_the_shopper_sees_it(presenter):
    page = presenter.page
    presenter.buy()
    presenter.expect_result("Payment successful", "Your payment was successful.")
    order_page = page.url

    page.goto(presenter.server.url + "/console/orders")
    row = page.locator("tbody tr").first
    reload_until(page, row.locator(".status"), "paid")
    row.get_by_role("link", name=re.compile(r"^KNET-")).click()
    expect(page.get_by_role("heading", name="Refunds")).to_be_visible()
    amount = page.get_by_label(re.compile(r"^Amount \(KWD"))
    expect(amount).to_have_value("12.500")  # prefilled with what is left
    amount.fill("5.000")
    page.get_by_label("Reason (Adyen's merchantRefundReason)").select_option("RETURN")
    page.get_by_role("button", name="Refund…").click()

    expect(page.get_by_role("heading", name=re.compile("^Confirm the refund"))).to_be_visible()
    expect(page.locator("#refund-summary")).to_contain_text("Refund 5.000 KWD")
    expect(page.locator("#refund-summary")).to_contain_text("reason RETURN")
    page.get_by_role("button", name="Refund 5.000 KWD").click()

    expect(page.get_by_text(re.compile(r"sent: Adyen answered received"))).to_be_visible()
    reload_until(page, page.locator("#order-status"), "partially_refunded")
    refund_row = page.locator("tr[data-refund]")
    expect(refund_row.locator(".status")).to_have_text("succeeded")
    expect(
        page.get_by_text(re.compile(r"refund_pending → partially_refunded: refund .* decided by REFUND"))
    ).to_be_visible()

    page.goto(order_page)
    expect(page.get_by_role("heading", name="Partly refunded")).to_be_visible()
    expect(page.get_by_text(re.compile(r"^Refunded 5\.000 KWD on \d{4}-\d{2}-\d{2}$"))).to_be_visible()

    page.goto(presenter.server.url + "/console/emails")
    subject = page.get_by_text(re.compile(r"^We refunded 5\.000 KWD: order KNET-"))
    deadline = time.monotonic() + 20
    while subject.count() == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
        page.reload()
    expect(subject).to_be_visible()
