"""Helpers for the fault, abuse and hardening tests: inject simulator faults, read what the shop
stored, find forms, a closed port."""

import socket

from sqlalchemy import func, select

from shop.db import db
from shop.models import ApiCall, Email, Notification, Order, OrderEvent, PaymentAttempt
from shop.simulator import faults
from shop.simulator.models import SimPayment, SimWebhookDelivery
from tests.shopper import Shopper, forms_of, text_of

# Fast but realistic settings for fault tests: short pauses between retries, webhooks at once and
# retried quickly.
FAST = {"SIMULATOR_WEBHOOK_DELAY": "0", "SIMULATOR_RETRY_SCALE": "0.001"}
# For a test that injects a `timeout`: the shop gives up on an answer after 0.75 s (the simulator
# holds it a second longer). The other tests keep the default read timeout, so that a busy machine
# never turns a slow answer into a timeout there.
TIMEOUTS = {"ADYEN_READ_TIMEOUT": "3/4"}
FAST_CONFIG = {"PAYMENTS_RETRY_BACKOFF": (0.1, 0.2)}


def start(live_server_factory, env=None, **config):
    return live_server_factory(ENV=dict(FAST, **(env or {})), **dict(FAST_CONFIG, **config))


def inject(server, endpoint, kind, count=1, **params):
    with server.app.app_context():
        return faults.inject(endpoint, kind, count, **params)


def in_context(server, fn):
    with server.app.app_context():
        try:
            return fn()
        finally:
            db.session.rollback()


def api_calls(server, endpoint=None):
    def read():
        query = select(ApiCall).order_by(ApiCall.id)
        if endpoint:
            query = query.where(ApiCall.endpoint == endpoint)
        return [
            {
                "endpoint": c.endpoint,
                "key": c.idempotency_key,
                "status": c.status_code,
                "error": c.error,
                "response": c.response_json,
                "duration_ms": c.duration_ms,
            }
            for c in db.session.execute(query).scalars()
        ]

    return in_context(server, read)


def count(server, model, *where):
    return in_context(
        server, lambda: db.session.execute(select(func.count()).select_from(model).where(*where)).scalar()
    )


def the_order(server):
    def read():
        orders = db.session.execute(select(Order)).scalars().all()
        assert len(orders) == 1, f"expected one order, found {len(orders)}"
        order = orders[0]
        attempts = [(a.status, a.idempotency_key) for a in order.attempts]
        db.session.expunge(order)
        return order, attempts

    return in_context(server, read)


def sim_payments(server):
    return count(server, SimPayment)


def deliveries(server):
    def read():
        rows = db.session.execute(select(SimWebhookDelivery).order_by(SimWebhookDelivery.id)).scalars().all()
        return [
            {
                "id": d.id,
                "status": d.status,
                "merchant_reference": d.merchant_reference,
                "duplicate_of": d.duplicate_of,
                "last_status_code": d.last_status_code,
                "created_at": d.created_at,
                "delivered_at": d.delivered_at,
            }
            for d in rows
        ]

    return in_context(server, read)


def transitions(server, text):
    """How many state changes by webhook read `text` ("pending → paid")."""
    old, new = (part.strip() for part in text.split("→"))
    return count(
        server, OrderEvent, OrderEvent.kind == "transition", OrderEvent.old_status == old, OrderEvent.new_status == new
    )


def form_posting_to(page, suffix):
    """(index, form) of the form on `page` whose action ends with `suffix`."""
    for index, form in enumerate(forms_of(page.text)):
        if form["action"].endswith(suffix):
            return index, form
    raise AssertionError(f"no form posting to …{suffix}; page text: {text_of(page.text)[:400]}")


def press_try_again(shopper, page):
    index, _ = form_posting_to(page, "/pay")
    return shopper.submit(page, index)


def shopper_with_cart(server):
    shopper = Shopper(server.url)
    shopper.add_to_cart()
    return shopper


def closed_port():
    """A loopback port nothing listens on (connections to it are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


__all__ = [
    "ApiCall",
    "Email",
    "Notification",
    "Order",
    "OrderEvent",
    "PaymentAttempt",
]
