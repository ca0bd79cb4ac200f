"""Faults from Adyen, injected into the simulator (shop/simulator/faults.py), over real HTTP.

Expected (issue #5): an unknown outcome keeps the order pending, never failed or paid; a retry
reuses the same Idempotency-Key; a 4xx is final for that attempt; a 704 is not a failure; webhooks
settle the order, whatever their delay, duplicates, order or burst. Never a lost or double-charged
order. Where a test injects a `timeout`, the shop's read timeout is 0.75 s (ADYEN_READ_TIMEOUT).
"""

import threading
import time
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from shop.checkout import payments as shop_payments
from shop.config import ConfigError, load_settings
from shop.db import db
from shop.models import AttemptStatus, OrderStatus
from shop.simulator import faults, outcomes, sender
from shop.simulator import payments as sim
from shop.simulator.models import DeliveryStatus, SimWebhookDelivery
from tests.fault_helpers import (
    TIMEOUTS,
    Email,
    Notification,
    Order,
    api_calls,
    closed_port,
    count,
    deliveries,
    in_context,
    inject,
    press_try_again,
    shopper_with_cart,
    sim_payments,
    start,
    the_order,
    transitions,
)
from tests.shopper import forms_of, text_of
from tests.simulator_helpers import payment_request
from tests.webhook_helpers import make_order, order_status, wait_for

WAITING = "We're confirming your payment with KNET"


def at_knet(page):
    return page.status_code == 200 and "Card Number" in text_of(page.text)


def paid(server):
    order, _ = the_order(server)
    return order.status == OrderStatus.PAID


# /payments ---------------------------------------------------------------------------------------------


def test_payments_timeout_is_retried_with_the_same_key_and_charges_once(live_server_factory):
    server = start(live_server_factory, env=TIMEOUTS)
    inject(server, "/payments", "timeout", count=1)
    shopper = shopper_with_cart(server)
    page = shopper.place_order()
    assert at_knet(page), text_of(page.text)[:300]

    calls = api_calls(server, "/payments")
    assert [c["status"] for c in calls] == [None, 200]
    assert calls[0]["error"] == "timeout"
    assert len({c["key"] for c in calls}) == 1  # the retry reused the Idempotency-Key
    # Adyen did the work on the first call; the retry got the stored answer: one payment.
    assert sim_payments(server) == 1
    order, attempts = the_order(server)
    assert order.status == OrderStatus.PENDING and len(attempts) == 1

    result = shopper.pay_on_knet(page)
    assert "Payment successful" in text_of(result.text)
    wait_for(lambda: paid(server), message="the webhook to settle the order")
    assert sim_payments(server) == 1


@pytest.mark.parametrize("kind, created_at_adyen", [("timeout", 1), ("http_500", 0), ("refuse", 0)])
def test_no_usable_answer_keeps_the_order_pending_and_try_again_reuses_the_key(
    live_server_factory, kind, created_at_adyen
):
    server = start(live_server_factory, env=TIMEOUTS)
    inject(server, "/payments", kind, count=3)  # every try of the first click
    shopper = shopper_with_cart(server)
    page = shopper.place_order()

    assert page.status_code == 200 and urlsplit(page.url).path.startswith("/orders/")
    text = text_of(page.text)
    assert WAITING in text and "Try again" in text and "nothing is charged twice" in text
    for word in ("refused", "failed", "cancelled", "successful"):
        assert word not in text.lower()
    order, attempts = the_order(server)
    assert order.status == OrderStatus.PENDING  # unknown: never failed, never paid
    assert attempts == [(AttemptStatus.CALLING, attempts[0][1])]
    calls = api_calls(server, "/payments")
    assert len(calls) == 3 and {c["key"] for c in calls} == {attempts[0][1]}
    assert sim_payments(server) == created_at_adyen

    knet_page = press_try_again(shopper, page)
    assert at_knet(knet_page), text_of(knet_page.text)[:300]
    calls = api_calls(server, "/payments")
    assert len(calls) == 4 and {c["key"] for c in calls} == {attempts[0][1]}
    assert sim_payments(server) == 1  # the same payment, whatever happened before
    shopper.pay_on_knet(knet_page)
    wait_for(lambda: paid(server), message="the order to be paid")
    assert count(server, Email) == 1


@pytest.mark.parametrize(
    "kind, status, message",
    [
        ("http_422", 422, "The payment could not be started. Please check your details and try again."),
        ("http_401", 401, "We can't take payments right now, so nothing was charged."),
    ],
)
def test_4xx_is_final_for_the_attempt_and_the_shopper_can_pay_again(live_server_factory, kind, status, message):
    server = start(live_server_factory)
    inject(server, "/payments", kind, count=1)
    shopper = shopper_with_cart(server)
    page = shopper.place_order()

    assert urlsplit(page.url).path == "/checkout"
    assert message in text_of(page.text)
    calls = api_calls(server, "/payments")
    assert len(calls) == 1  # a 4xx is never retried
    assert calls[0]["status"] == status and calls[0]["response"]["status"] == status
    order, attempts = the_order(server)
    assert order.status == OrderStatus.CREATED  # no payment exists: the order may be paid for again
    assert [a[0] for a in attempts] == [AttemptStatus.REJECTED]
    assert sim_payments(server) == 0

    again = shopper.place_order()
    assert at_knet(again)
    order, attempts = the_order(server)  # still one order
    assert [a[0] for a in attempts] == [AttemptStatus.REJECTED, AttemptStatus.REDIRECTED]
    assert attempts[0][1] != attempts[1][1]  # a new attempt, a new Idempotency-Key
    assert sim_payments(server) == 1


def test_refused_connection_is_an_unknown_outcome(live_server_factory):
    server = start(live_server_factory)
    shopper = shopper_with_cart(server)
    checkout = shopper.checkout_page()
    client = server.app.extensions["adyen"]
    real_url, client.base_url = client.base_url, f"http://127.0.0.1:{closed_port()}/checkout/v71"
    try:
        form_index = next(i for i, f in enumerate(forms_of(checkout.text)) if "first_name" in f["fields"])
        page = shopper.submit(
            checkout, form_index, first_name="Fatima", last_name="Al-Sabah", email="f@example.com", phone="50000000"
        )
    finally:
        client.base_url = real_url
    assert WAITING in text_of(page.text) and "Try again" in text_of(page.text)
    calls = api_calls(server, "/payments")
    assert len(calls) == 3 and all(c["error"] == "connection failed" for c in calls)
    order, _ = the_order(server)
    assert order.status == OrderStatus.PENDING
    assert at_knet(press_try_again(shopper, page))


def test_slow_answer_within_the_timeout_only_takes_longer(live_server_factory):
    server = start(live_server_factory)
    inject(server, "/payments", "slow", count=1, delay_ms=400)
    page = shopper_with_cart(server).place_order()
    assert at_knet(page)
    calls = api_calls(server, "/payments")
    assert len(calls) == 1 and calls[0]["status"] == 200 and calls[0]["duration_ms"] >= 400


def test_retries_end_by_the_deadline(live_server_factory):
    # 0.75 s reads inside a 2.25 s budget: the first try and a retry (a retry needs a second left),
    # then "unknown".
    server = start(
        live_server_factory, env=dict(TIMEOUTS, ADYEN_PAYMENTS_DEADLINE="2.25"), PAYMENTS_RETRY_BACKOFF=(0.25, 0.75)
    )
    inject(server, "/payments", "timeout", count=None)
    shopper = shopper_with_cart(server)
    started = time.monotonic()
    page = shopper.place_order()
    elapsed = time.monotonic() - started
    assert WAITING in text_of(page.text)
    assert len(api_calls(server, "/payments")) == 2
    assert elapsed < 2.25 + 1.5, elapsed  # the budget, plus the page loads around it


def test_timeouts_and_deadline_must_fit_the_worker_timeout():
    settings = load_settings({})
    assert (settings["ADYEN_CONNECT_TIMEOUT"], settings["ADYEN_READ_TIMEOUT"]) == (5.0, 15.0)
    assert settings["ADYEN_PAYMENTS_DEADLINE"] < settings["WORKER_TIMEOUT"] == 30.0
    assert load_settings({"ADYEN_READ_TIMEOUT": "1/2"})["ADYEN_READ_TIMEOUT"] == 0.5
    for env, named in [
        ({"ADYEN_READ_TIMEOUT": "30"}, "ADYEN_CONNECT_TIMEOUT \\+ ADYEN_READ_TIMEOUT"),
        ({"ADYEN_PAYMENTS_DEADLINE": "45"}, "ADYEN_PAYMENTS_DEADLINE"),
        ({"WORKER_TIMEOUT": "20"}, "WORKER_TIMEOUT"),
        ({"ADYEN_READ_TIMEOUT": "0"}, "ADYEN_READ_TIMEOUT"),
        ({"ADYEN_CONNECT_TIMEOUT": "soon"}, "ADYEN_CONNECT_TIMEOUT"),
    ]:
        with pytest.raises(ConfigError, match=named):
            load_settings(env)


def test_each_try_gets_only_the_time_left(app):
    with app.test_request_context():
        connect, read = shop_payments._timeout_until(time.monotonic() + 25)
        assert (connect, round(read)) == (5.0, 15)  # the first try: the full timeouts
        connect, read = shop_payments._timeout_until(time.monotonic() + 4)
        assert connect + read <= 4  # a late retry cannot outlast the deadline


# /payments/details ------------------------------------------------------------------------------------


def test_details_timeout_keeps_the_order_pending_until_the_webhook(live_server_factory):
    server = start(live_server_factory, env=TIMEOUTS)
    shopper = shopper_with_cart(server)
    knet_page = shopper.place_order()
    inject(server, "webhooks", "webhook_burst")  # hold the webhook, to see the page before it
    inject(server, "/payments/details", "timeout", count=1)
    result = shopper.pay_on_knet(knet_page)

    text = text_of(result.text)
    assert WAITING in text and "Check again" in text
    assert "Continue to KNET" not in text and "Try again" not in text  # they have paid already
    assert [c["error"] for c in api_calls(server, "/payments/details")] == ["timeout"]
    order, attempts = the_order(server)
    assert order.status == OrderStatus.PENDING and order.result_code is None
    assert attempts[-1][0] == AttemptStatus.RETURNED

    in_context(server, faults.release_burst)
    page = shopper.wait_for_text(urlsplit(result.url).path, "We are preparing your order")
    assert "Check again" not in text_of(page.text)
    assert paid(server)


def test_details_704_for_a_repeated_return_is_not_a_failure(live_server_factory):
    server = start(live_server_factory, env={"SIMULATOR_PENDING_DELAY": "0"})
    inject(server, "webhooks", "webhook_burst")
    shopper = shopper_with_cart(server)
    knet_page = shopper.place_order()
    result = shopper.pay_on_knet(knet_page, card_number="8888880000000004")  # Pending
    assert "Order received" in text_of(result.text)
    return_url = next(r.url for r in result.history if "/checkout/return/" in r.url)

    inject(server, "/payments/details", "http_704_on_repeat", count=1)
    again = shopper.get(return_url)  # a refresh of the return: the same Idempotency-Key
    text = text_of(again.text)
    assert again.status_code == 200 and "Order received" in text
    for word in ("refused", "error", "failed", "cancelled"):
        assert word not in text.lower()
    assert [c["response"]["errorCode"] for c in api_calls(server, "/payments/details") if c["status"] == 422] == ["704"]
    order, _ = the_order(server)
    assert order.status == OrderStatus.PENDING and order.result_code == "Pending"

    in_context(server, faults.release_burst)
    wait_for(lambda: paid(server), message="the webhook to settle the order")


# /paymentMethods ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["http_500", "timeout", "http_401", "refuse"])
def test_payment_methods_fault_shows_a_plain_message_and_no_pay_button(live_server_factory, kind):
    server = start(live_server_factory, env=TIMEOUTS)
    inject(server, "/paymentMethods", kind, count=1)
    shopper = shopper_with_cart(server)
    page = shopper.checkout_page()
    assert page.status_code == 200
    text = text_of(page.text)
    assert "We can't load the payment methods right now" in text and "with KNET" not in text
    assert "with KNET" in text_of(shopper.checkout_page().text)  # the next visit works


# Webhooks ---------------------------------------------------------------------------------------------


def test_delayed_webhook_leaves_the_order_pending_until_it_lands(live_server_factory):
    server = start(live_server_factory)
    inject(server, "webhooks", "webhook_delay", count=1, seconds=1.5)
    shopper = shopper_with_cart(server)
    result = shopper.pay_on_knet(shopper.place_order())
    assert "Payment successful" in text_of(result.text)  # the redirect's resultCode, for display
    order, _ = the_order(server)
    assert order.status == OrderStatus.PENDING  # the webhook has not come yet
    wait_for(lambda: paid(server), timeout=10, message="the delayed webhook")
    (delivery,) = deliveries(server)
    assert (delivery["delivered_at"] - delivery["created_at"]).total_seconds() >= 1.5


def test_duplicated_webhooks_have_one_effect(live_server_factory):
    server = start(live_server_factory)
    inject(server, "webhooks", "webhook_duplicate", count=None)
    shopper = shopper_with_cart(server)
    shopper.pay_on_knet(shopper.place_order())
    wait_for(
        lambda: [d["status"] for d in deliveries(server)] == [DeliveryStatus.DELIVERED] * 2,
        message="both deliveries",
    )
    wait_for(lambda: paid(server), message="the order to be paid")
    assert in_context(server, lambda: db.session.execute(select(Notification.duplicates)).scalars().all()) == [1]
    assert transitions(server, "pending → paid") == 1
    assert count(server, Email) == 1


def test_out_of_order_webhooks_settle_each_order(live_server_factory):
    server = start(live_server_factory)
    inject(server, "webhooks", "webhook_out_of_order", count=2)
    alice, bob = shopper_with_cart(server), shopper_with_cart(server)
    alice.pay_on_knet(alice.place_order(email="alice@example.com"))
    wait_for(lambda: [d["status"] for d in deliveries(server)] == [DeliveryStatus.HELD], message="a held webhook")
    bob.pay_on_knet(bob.place_order(email="bob@example.com"), pin="9999")  # refused

    def settled():
        rows = in_context(server, lambda: db.session.execute(select(Order.shopper_email, Order.status)).all())
        return dict(rows) if all(status in OrderStatus.FINAL for _, status in rows) else None

    assert wait_for(settled, message="both orders to settle") == {
        "alice@example.com": OrderStatus.PAID,
        "bob@example.com": OrderStatus.FAILED,
    }
    stored = in_context(
        server,
        lambda: [
            (n.success, n.merchant_reference)
            for n in db.session.execute(select(Notification).order_by(Notification.id)).scalars()
        ],
    )
    assert [success for success, _ in stored] == [False, True]  # Bob's (queued second) arrived first
    assert count(server, Email) == 2


def test_burst_after_an_outage_is_absorbed_with_nothing_lost_or_doubled(live_server_factory):
    orders = 100  # each webhook sent twice: 200 deliveries at once
    server = start(live_server_factory)
    inject(server, "webhooks", "webhook_burst")
    inject(server, "webhooks", "webhook_duplicate", count=None)
    app = server.app
    references = []
    with app.app_context():
        for _ in range(orders):
            reference = make_order(app, status="pending")
            payment = sim.create_payment(payment_request(server, reference=reference), None)
            db.session.commit()
            sim.complete(payment, outcomes.AUTHORISED)
            references.append(reference)
    assert count(server, SimWebhookDelivery, SimWebhookDelivery.status == DeliveryStatus.PENDING) == 2 * orders
    time.sleep(0.2)  # a few worker ticks: the outage holds everything back
    assert count(server, Notification) == 0

    assert in_context(server, faults.release_burst) == 2 * orders

    # Adyen drains its queue as fast as the shop answers: four more senders beside the worker.
    def drain():
        with app.app_context():
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if sender.deliver_due():
                    continue
                if not count(server, SimWebhookDelivery, SimWebhookDelivery.status != DeliveryStatus.DELIVERED):
                    return
                time.sleep(0.02)

    senders = [threading.Thread(target=drain) for _ in range(4)]
    for thread in senders:
        thread.start()
    for thread in senders:
        thread.join(70)

    wait_for(
        lambda: count(server, Order, Order.status == OrderStatus.PAID) == orders,
        timeout=60,
        message="every order to be paid",
    )
    statuses = {d["status"] for d in deliveries(server)}
    assert statuses == {DeliveryStatus.DELIVERED}
    assert count(server, Notification) == orders  # nothing lost …
    assert count(server, Notification, Notification.duplicates == 1) == orders  # … every duplicate seen …
    assert transitions(server, "pending → paid") == orders  # … and applied once
    assert count(server, Email) == orders
    assert {order_status(app, reference) for reference in references} == {OrderStatus.PAID}


# The fault API itself ----------------------------------------------------------------------------------


def test_fault_api_validates_counts_down_and_clears(app):
    with app.app_context():
        with pytest.raises(ValueError, match="unknown fault kind"):
            faults.inject("/payments", "meltdown")
        with pytest.raises(ValueError, match="applies to"):
            faults.inject("webhooks", "http_500")
        with pytest.raises(ValueError, match="no setting"):
            faults.inject("/payments", "http_500", colour="red")
        with pytest.raises(ValueError, match="count"):
            faults.inject("/payments", "http_500", count=0)
        with pytest.raises(ValueError, match="seconds"):
            faults.inject("/payments", "timeout", seconds=-1)

        first = faults.inject("/payments", "http_500", count=2)
        faults.inject("/payments/details", "slow", count=None, delay_ms=5)
        assert [f["kind"] for f in faults.active()] == ["http_500", "slow"]
        assert "2 more time(s)" in first["description"]
        assert faults.take("/payments", faults.API_KINDS).remaining == 1
        assert faults.take("/payments", faults.API_KINDS).remaining == 0
        assert faults.take("/payments", faults.API_KINDS) is None  # used up
        assert faults.take("/payments/details", faults.API_KINDS).remaining is None  # until cleared
        db.session.commit()
        assert [f["kind"] for f in faults.active()] == ["slow"]
        assert faults.clear() == 2
        assert faults.active() == []
        assert {kind for _, kind, _, _ in faults.choices()} == set(faults.KINDS)


def test_clearing_an_out_of_order_fault_releases_what_it_held(live_server_factory):
    server = start(live_server_factory)
    inject(server, "webhooks", "webhook_out_of_order", count=3)
    shopper = shopper_with_cart(server)
    shopper.pay_on_knet(shopper.place_order())
    wait_for(lambda: [d["status"] for d in deliveries(server)] == [DeliveryStatus.HELD], message="a held webhook")
    in_context(server, faults.clear)
    wait_for(lambda: paid(server), message="the released webhook")


def test_fault_page_injects_and_clears_with_a_csrf_token(live_server):
    shopper = shopper_with_cart(live_server)
    page = shopper.get("/_sim/faults")
    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
    assert "No fault" in text_of(page.text)
    refused = shopper.http.post(live_server.url + "/_sim/faults", data={"action": "clear"}, timeout=10)
    assert refused.status_code == 400  # no CSRF token

    def inject_form(response):
        return next(i for i, f in enumerate(forms_of(response.text)) if f["fields"].get("action") == "inject")

    done = shopper.submit(page, inject_form(page), fault="/payments|http_500", count="2")
    assert "Injected: /payments: Adyen answers 500" in text_of(done.text)
    assert [(f["endpoint"], f["kind"], f["remaining"]) for f in in_context(live_server, faults.active)] == [
        ("/payments", "http_500", 2)
    ]
    bad = shopper.submit(done, inject_form(done), fault="/payments|slow", count="0")
    assert "Not injected" in text_of(bad.text)
    clear_index = next(i for i, f in enumerate(forms_of(bad.text)) if f["fields"].get("fault_id"))
    cleared = shopper.submit(bad, clear_index)
    assert "Cleared 1 fault(s)" in text_of(cleared.text)
    assert in_context(live_server, faults.active) == []
