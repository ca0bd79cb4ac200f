"""No order hangs: the shop closes an order that no result ever came for.

Adyen sends OFFER_CLOSED (or AUTHORISATION) for every payment it created, so a pending order
with no final webhook RECONCILE_AFTER_SECONDS after its payment started had either no payment
created (the server died while /payments was in flight, or its answer was lost and the shopper never
pressed Try again), or its webhook was lost. Either way nobody can pay it any more: the shop closes it
(pending → expired, status_reason "unconfirmed"), tells the shopper ("we could not confirm your
payment", on the order's page and by email) and says so on the timeline. If Adyen's AUTHORISATION
success=true comes later all the same, it still wins: the order becomes paid and is flagged for a
refund decision, as for any payment after a cancellation (shop/orders/state.py, REOPENABLE).

Except when the shopper was told the order was placed (/payments/details said Authorised, Pending or
Received): the money may well be on its way, and a webhook that is late (an endpoint Adyen could not
reach for a day keeps being retried for up to 30 days) must not turn "successful" into "cancelled".
Such an order stays pending and is flagged for review, once, with why.

`reconcile_due` is a job of the background loop (shop/worker.py).
"""

import logging
from datetime import timedelta

from flask import current_app
from sqlalchemy import func, select

from shop.db import db, transaction
from shop.models import Order, OrderStatus, PaymentAttempt, utcnow
from shop.orders import state
from shop.orders.history import Entry, Kind

log = logging.getLogger(__name__)

UNCONFIRMED = "unconfirmed"
BATCH = 50
# What /payments/details may have told the shopper that says the order is placed.
PLACED_RESULTS = ("Authorised", "Pending", "Received")


def reconcile_due(limit=BATCH):
    """Close the pending orders whose payment started more than RECONCILE_AFTER_SECONDS ago.
    Returns how many were closed."""
    cutoff = utcnow() - timedelta(seconds=current_app.config["RECONCILE_AFTER_SECONDS"])
    started = (
        select(PaymentAttempt.order_id, func.max(PaymentAttempt.created_at).label("started"))
        .group_by(PaymentAttempt.order_id)
        .subquery()
    )
    due = db.session.execute(
        select(Order.id)
        .outerjoin(started, started.c.order_id == Order.id)
        .where(
            Order.status == OrderStatus.PENDING,
            ~Order.needs_review,  # flagged already: a person looks at it
            func.coalesce(started.c.started, Order.updated_at) < cutoff,
        )
        .order_by(Order.id)
        .limit(limit)
    ).scalars()
    due = list(due)
    db.session.rollback()  # end the read: each order is closed in a transaction of its own
    return sum(1 for order_id in due if close_unconfirmed(order_id, cutoff))


@transaction
def close_unconfirmed(order_id, cutoff):
    """pending → expired, if the order is still pending with nothing newer than `cutoff`. True if closed."""

    def decide(order):
        attempt = order.latest_attempt
        started = attempt.created_at if attempt is not None else order.updated_at
        if order.status != OrderStatus.PENDING or _utc(started) >= cutoff:
            return None
        answered = "no answer to /payments" if attempt is None or attempt.status == "calling" else "no webhook"
        hours = current_app.config["RECONCILE_AFTER_SECONDS"] / 3600
        attempt_id = attempt.id if attempt else None
        if order.result_code in PLACED_RESULTS:
            if order.needs_review:
                return None
            note = (
                f"{answered} within {hours:g} h, but the shopper was told '{order.result_code}': left pending and "
                "flagged for review (check the payment in the Customer Area)"
            )
            return state.Change({"needs_review": True}, Entry(Kind.RECONCILED, note=note, attempt_id=attempt_id))
        note = f"{answered} within {hours:g} h of the payment's start: closed by the shop"
        entry = Entry(Kind.RECONCILED, note=note, attempt_id=attempt_id)
        return state.Change({"status": OrderStatus.EXPIRED, "status_reason": UNCONFIRMED}, entry, UNCONFIRMED)

    applied = state.change_order(order_id, decide)
    if applied is not None:
        log.warning("order %s: %s", applied.order.reference, applied.change.entry.note)
    return applied is not None and applied.change.status == OrderStatus.EXPIRED


def _utc(moment):
    return moment if moment.tzinfo else moment.replace(tzinfo=utcnow().tzinfo)
