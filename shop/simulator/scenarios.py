"""One-click demo scenarios: a fresh order that will end Authorised, Refused, Cancelled, Error,
Pending then paid, or abandoned then OFFER_CLOSED; paid then refunded, partly refunded twice, or paid
late, after OFFER_CLOSED, and refunded from its flag (simulator mode only).

Each runs the real flow: the server calls the real payment services (/paymentMethods, /payments
through the simulator over HTTP), then plays the shopper over HTTP, as tests/shopper.py does:
it opens /orders/<token>/pay, follows the redirect to the simulated KNET page, fills and submits
its form (or presses Cancel), and follows the way back to the return URL, so /payments/details is
called as in real life. The webhooks then arrive from the simulator as usual. A refund scenario then
waits for the order to be paid (its AUTHORISATION processed by the background worker) and asks for
its refunds through the shop's own service (shop.orders.refunds.request_refund), as the console's
Refund button does; REFUND webhooks finish them.
Requests to itself go to PUBLIC_BASE_URL, so the app must serve several requests at once.
"""

import logging
import secrets
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urljoin

import requests
from flask import current_app
from sqlalchemy import select

from shop.checkout import payments
from shop.db import db
from shop.models import Order, OrderStatus, PaymentAttempt
from shop.orders import refunds, state
from shop.orders.history import Kind
from shop.simulator import payments as sim_payments
from shop.storefront.cart import Cart

log = logging.getLogger(__name__)

DEMO_CART = {"medjool-dates": 1}
DEMO_SHOPPER = {
    "shopper_first_name": "Demo",
    "shopper_last_name": "Shopper",
    "shopper_email": "demo.shopper@example.com",
    "shopper_phone": "+96550000000",
}
GOOD_CARD = {
    "bank": "KNET1",
    "card_number": "8888880000000001",
    "expiry_month": "09",
    "expiry_year": "2030",
    "pin": "1234",
}
HTTP_TIMEOUT = 20
# How long a refund scenario waits for the AUTHORISATION to make the order paid, beyond the webhook's delays.
PAID_WAIT_SECONDS = 30
# The late payment's AUTHORISATION comes this many seconds after its OFFER_CLOSED.
LATE_AUTHORISATION_SECONDS = 1.0


@dataclass(frozen=True)
class Scenario:
    name: str
    label: str
    description: str
    ends: str  # the order's final status
    action: str | None  # "submit", "cancel", or None: the shopper never finishes the KNET page
    card: dict = field(default_factory=dict)
    # Once paid, refunds asked for one after the other: each a percentage of the order's total, or
    # None for what is left; with the reason the console would prefill.
    refunds: tuple = ()
    refund_reason: str = "CUSTOMER REQUEST"
    # The abandoned offer is authorised all the same, after its OFFER_CLOSED.
    late: bool = False


SCENARIOS = {
    s.name: s
    for s in (
        Scenario(
            "authorised",
            "Authorised",
            "Tap's test card 8888880000000001, 09/2030, PIN 1234. AUTHORISATION true makes the order paid.",
            OrderStatus.PAID,
            "submit",
            GOOD_CARD,
        ),
        Scenario(
            "refused",
            "Refused",
            "The test card with a wrong PIN (9999): resultCode Refused (Invalid Pin), "
            "AUTHORISATION false makes the order failed.",
            OrderStatus.FAILED,
            "submit",
            dict(GOOD_CARD, pin="9999"),
        ),
        Scenario(
            "cancelled",
            "Cancelled",
            "The shopper presses Cancel on the KNET page: resultCode Cancelled, "
            "AUTHORISATION false makes the order failed.",
            OrderStatus.FAILED,
            "cancel",
            {},
        ),
        Scenario(
            "error",
            "Error",
            "Simulator card 8888880000000003: resultCode Error with a refusalReason, "
            "AUTHORISATION false makes the order failed.",
            OrderStatus.FAILED,
            "submit",
            dict(GOOD_CARD, card_number="8888880000000003"),
        ),
        Scenario(
            "pending",
            "Pending, then paid",
            "Simulator card 8888880000000004: resultCode Pending; the "
            "AUTHORISATION true webhook comes later (SIMULATOR_PENDING_DELAY) and makes the order paid.",
            OrderStatus.PAID,
            "submit",
            dict(GOOD_CARD, card_number="8888880000000004"),
        ),
        Scenario(
            "abandoned",
            "Abandoned, then OFFER_CLOSED",
            "The shopper opens the KNET page and never finishes it; "
            "the simulator closes the offer after CONSOLE_ABANDON_SECONDS and OFFER_CLOSED makes the order expired.",
            OrderStatus.EXPIRED,
            None,
            {},
        ),
        Scenario(
            "refunded",
            "Paid, then refunded",
            "The test card pays; once AUTHORISATION true has made the order paid, the whole amount is refunded "
            "(reason CUSTOMER REQUEST): /refunds answers received, and REFUND true makes the order refunded.",
            OrderStatus.REFUNDED,
            "submit",
            GOOD_CARD,
            refunds=(None,),
        ),
        Scenario(
            "partly_refunded",
            "Partly refunded twice",
            "The test card pays; then a quarter of the total is refunded, and another quarter right after, "
            "while the first is still pending: two REFUND webhooks make the order partially refunded, half left.",
            OrderStatus.PARTIALLY_REFUNDED,
            "submit",
            GOOD_CARD,
            refunds=(25, 25),
        ),
        Scenario(
            "late_refunded",
            "Paid after OFFER_CLOSED, refunded from its flag",
            "The shopper never finishes the KNET page; OFFER_CLOSED makes the order expired, then AUTHORISATION true "
            "arrives anyway (Adyen: an expired offer may still be authorised): the order is paid, flagged "
            "needs_refund_decision, and refunded in full as its Refund button offers (reason DUPLICATE).",
            OrderStatus.REFUNDED,
            None,
            {},
            refunds=(None,),
            refund_reason="DUPLICATE",
            late=True,
        ),
    )
}


class ScenarioError(RuntimeError):
    """The scenario could not run to its end; `order_id` is set when an order was made."""

    def __init__(self, message, order_id=None):
        super().__init__(message)
        self.order_id = order_id


def run(name):
    """Run a scenario; returns the order's id. Raises KeyError for an unknown name, ScenarioError."""
    scenario = SCENARIOS[name]
    config = current_app.config
    cart = Cart(DEMO_CART)
    locale = config["SHOPPER_LOCALE"]
    checkout_key = secrets.token_urlsafe(24)

    # The checkout page: which methods may this shopper use?
    try:
        methods = payments.available_methods(cart.total, locale, checkout_key)
    except Exception as error:  # noqa: BLE001 - shown to the developer
        raise ScenarioError(f"/paymentMethods failed: {type(error).__name__}") from None
    if payments.find_knet(methods) is None:
        raise ScenarioError("/paymentMethods did not offer KNET.")

    # The checkout form is sent: the order, then /payments.
    order_id, token = payments.order_for_checkout(checkout_key, cart, dict(DEMO_SHOPPER), locale)
    note = f"Demo scenario '{scenario.label}' started from the developer console: {scenario.description}"
    payments.history_note(order_id, Kind.NOTE, note)
    state.start_payment(order_id)
    try:
        attempt_id = payments.pay(order_id)
    except (payments.PaymentNotStarted, payments.PaymentOutcomeUnknown) as error:
        raise ScenarioError(f"/payments did not start the payment: {error}", order_id) from None
    psp_reference = db.session.get(PaymentAttempt, attempt_id).psp_reference
    db.session.rollback()  # no transaction stays open while this thread waits on its own server

    # The shopper's browser, over HTTP.
    browser = requests.Session()
    base = config["PUBLIC_BASE_URL"]
    try:
        page = browser.get(f"{base}/orders/{token}/pay", timeout=HTTP_TIMEOUT)
        page = _follow_autosubmit(browser, page)
        knet_form = _form_with(page.text, "card_number")
        if knet_form is None:
            raise ScenarioError(f"The KNET page did not open (HTTP {page.status_code}).", order_id)
        if scenario.action is None:
            late = LATE_AUTHORISATION_SECONDS if scenario.late else None
            sim_payments.expire_soon(psp_reference, config["CONSOLE_ABANDON_SECONDS"], authorise_after_close=late)
            return _refund(scenario, order_id)
        data = dict(knet_form["fields"], action=scenario.action, **scenario.card)
        if scenario.action == "cancel":
            data.setdefault("bank", "")
        result = browser.post(urljoin(page.url, knet_form["action"] or page.url), data=data, timeout=HTTP_TIMEOUT)
        result = _follow_autosubmit(browser, result)
    except requests.RequestException as error:
        raise ScenarioError(f"The shopper's request failed: {type(error).__name__}", order_id) from None
    finally:
        browser.close()
    if "/orders/" not in result.url:
        raise ScenarioError(f"The shopper did not get back to the shop (ended at HTTP {result.status_code}).", order_id)
    return _refund(scenario, order_id)


def _refund(scenario, order_id):
    """Once the order is paid, ask for the scenario's refunds, as the console's Refund button does."""
    if not scenario.refunds:
        return order_id
    total = _wait_until_paid(order_id)
    for percent in scenario.refunds:
        amount = None if percent is None else total * percent // 100
        try:
            refunds.request_refund(order_id, amount_minor=amount, reason=scenario.refund_reason, requested_by="demo")
        except refunds.RefundError as error:
            raise ScenarioError(f"The refund was not made: {error}", order_id) from None
    return order_id


def _wait_until_paid(order_id):
    """The order's total once it is paid (its AUTHORISATION processed), or ScenarioError after a while."""
    config = current_app.config
    waits = config["SIMULATOR_WEBHOOK_DELAY"] + config["CONSOLE_ABANDON_SECONDS"] + LATE_AUTHORISATION_SECONDS
    deadline = time.monotonic() + waits + PAID_WAIT_SECONDS
    while True:
        status, total = db.session.execute(select(Order.status, Order.amount_value).where(Order.id == order_id)).one()
        db.session.rollback()  # read afresh next time; hold no transaction while waiting
        if status == OrderStatus.PAID:
            return total
        if time.monotonic() > deadline:
            raise ScenarioError(f"The order was not paid in time (it is {status}); nothing refunded.", order_id)
        time.sleep(0.2)


def _follow_autosubmit(browser, response):
    """Press the button of an auto-submitting POST form (the POST redirect or the POST return)."""
    for _ in range(3):
        form = next((f for f in forms_of(response.text) if f["autosubmit"]), None)
        if form is None:
            return response
        url = urljoin(response.url, form["action"] or response.url)
        response = browser.post(url, data=form["fields"], timeout=HTTP_TIMEOUT)
    return response


def _form_with(html, field_name):
    return next((f for f in forms_of(html) if field_name in f["fields"]), None)


class _FormParser(HTMLParser):
    """Each <form>: action, method, data-autosubmit, and the default values of its fields."""

    def __init__(self):
        super().__init__()
        self.forms = []
        self._select = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.forms.append(
                {
                    "action": attrs.get("action") or "",
                    "method": (attrs.get("method") or "get").upper(),
                    "autosubmit": "data-autosubmit" in attrs,
                    "fields": {},
                }
            )
        elif not self.forms:
            return
        elif tag == "input" and attrs.get("name") and attrs.get("type") not in ("submit", "radio", "checkbox"):
            self.forms[-1]["fields"][attrs["name"]] = attrs.get("value") or ""
        elif tag == "input" and attrs.get("name") and "checked" in attrs:  # a chosen radio button or checkbox
            self.forms[-1]["fields"][attrs["name"]] = attrs.get("value") or "on"
        elif tag == "select" and attrs.get("name"):
            self._select = attrs["name"]
            self.forms[-1]["fields"].setdefault(self._select, "")
        elif tag == "option" and self._select and "selected" in attrs:
            self.forms[-1]["fields"][self._select] = attrs.get("value") or ""

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None


def forms_of(html):
    """The forms of a page, as a browser would submit them untouched (also used by the tests' shopper)."""
    parser = _FormParser()
    parser.feed(html or "")
    return parser.forms
