"""Helpers shared by the webhook, state-machine and mail tests: orders, signed webhooks, polling."""

import hashlib
import itertools
import json
import time

import requests
from sqlalchemy import func, select

from shop import mail
from shop.adyen.signature import sign
from shop.db import db, transaction
from shop.models import Email, Notification, Order, OrderEvent
from shop.orders import state

_numbers = itertools.count(1)


def make_order(app, status="pending", amount_value=12500, currency="KWD", **fields):
    """Store an order directly; returns its reference."""
    number = next(_numbers)
    reference = fields.pop("reference", f"ORDER-{number:05d}-{time.monotonic_ns() % 10**9}")
    with app.app_context():
        order = Order(
            reference=reference,
            checkout_key=f"checkout-{reference}",
            status=status,
            amount_value=amount_value,
            currency=currency,
            lines=[{"name": "Dates", "unit_price": amount_value, "quantity": 1, "line_total": amount_value}],
            shopper_first_name="Fatima",
            shopper_last_name="Al-Sabah",
            shopper_email="fatima@example.com",
            shopper_phone="+96550000000",
            **fields,
        )
        db.session.add(order)
        db.session.commit()
    return reference


@transaction
def apply_event(reference, event):
    """Apply a verified webhook event to the order with this reference, in an app context, as the
    webhook processor does (shop/webhooks/processing.py). The Decision, or None for no such order."""
    order_id = state.order_id_for(reference)
    return state.apply_webhook(order_id, event) if order_id is not None else None


def get_order(app, reference):
    with app.app_context():
        order = db.session.execute(select(Order).where(Order.reference == reference)).scalar_one()
        db.session.expunge(order)
        return order


def item(
    app, reference, event_code="AUTHORISATION", success="true", value=12500, currency="KWD", psp=None, key=None, **extra
):
    """A NotificationRequestItem signed with the app's HMAC key (or `key`).

    The pspReference defaults to one derived from the order reference: one payment per order.
    """
    psp = psp or "P" + hashlib.sha1(reference.encode()).hexdigest()[:15].upper()
    body = {
        "additionalData": {"paymentMethodVariant": "knet"},
        "amount": {"currency": currency, "value": value},
        "eventCode": event_code,
        "eventDate": "2025-01-01T12:00:00+03:00",
        "merchantAccountCode": app.config["ADYEN_MERCHANT_ACCOUNT"],
        "merchantReference": reference,
        "paymentMethod": "knet",
        "pspReference": psp,
        "reason": "",
        "success": success,
    }
    body.update(extra)
    body["additionalData"]["hmacSignature"] = sign(body, key or app.config["ADYEN_HMAC_KEY"])
    return body


def envelope(*items, live="false"):
    return json.dumps({"live": live, "notificationItems": [{"NotificationRequestItem": i} for i in items]})


def auth(app):
    return (app.config["WEBHOOK_USERNAME"], app.config["WEBHOOK_PASSWORD"])


def post(server, body, auth_pair=None, path="/webhooks/adyen", session=None, **kwargs):
    """POST a webhook body over real HTTP; never follows a redirect (Adyen does not)."""
    kwargs.setdefault("headers", {"Content-Type": "application/json"})
    return (session or requests).post(
        server.url + path,
        data=body,
        auth=auth(server.app) if auth_pair is None else auth_pair or None,
        allow_redirects=False,
        timeout=10,
        **kwargs,
    )


def counts(app):
    """Row counts that no rejected webhook may change."""
    with app.app_context():
        result = {
            model.__tablename__: db.session.execute(select(func.count()).select_from(model)).scalar()
            for model in (Notification, OrderEvent, Email)
        }
        result["statuses"] = sorted(db.session.execute(select(Order.reference, Order.status)).all())
        db.session.rollback()
        return result


def wait_for(predicate, timeout=10.0, interval=0.02, message="condition"):
    """Poll until predicate() is truthy; returns its value. No fixed sleeps."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        time.sleep(interval)


def in_app(app, fn):
    """Run fn() in an app context and return its value (for wait_for predicates)."""

    def run():
        with app.app_context():
            try:
                return fn()
            finally:
                db.session.rollback()

    return run


def order_status(app, reference):
    return in_app(app, lambda: db.session.execute(select(Order.status).where(Order.reference == reference)).scalar())()


def notifications(app, **filters):
    with app.app_context():
        rows = db.session.execute(select(Notification).filter_by(**filters).order_by(Notification.id)).scalars().all()
        for row in rows:
            db.session.expunge(row)
        return rows


def events(app, reference, kind=None):
    """The order's timeline rows (OrderEvent), oldest first; of one kind (shop.orders.history.Kind)."""
    with app.app_context():
        query = select(OrderEvent).join(Order, Order.id == OrderEvent.order_id).where(Order.reference == reference)
        if kind:
            query = query.where(OrderEvent.kind == kind)
        rows = db.session.execute(query.order_by(OrderEvent.id)).scalars().all()
        for row in rows:
            db.session.expunge(row)
        return rows


def kept_emails(app, reference=None):
    """The outbox rows after the mail job ran, in an app without MAIL_SERVER: rendered and kept."""
    assert not app.config.get("MAIL_SERVER")
    with app.app_context():
        mail.send_due()
    return emails(app, reference)


def transitions(app, reference):
    """The order's state changes by webhook, as (old status, new status, rule)."""
    return [(e.old_status, e.new_status, e.note) for e in events(app, reference) if e.kind in STATUS_KINDS]


STATUS_KINDS = ("transition", "duplicate_payment")


def emails(app, reference=None):
    """The outbox rows (of one order), as they are: an email is rendered only when it is sent."""
    with app.app_context():
        query = select(Email).order_by(Email.id)
        if reference:
            query = query.join(Order, Order.id == Email.order_id).where(Order.reference == reference)
        rows = db.session.execute(query).scalars().all()
        for row in rows:
            db.session.expunge(row)
        return rows
