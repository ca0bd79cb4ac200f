"""The order state machine: the one place that changes an order, from the return or from webhooks.

Every change is a compare-and-set (`UPDATE … WHERE id = :id AND version = :seen`), retried on a
conflict, so a webhook and the shopper's return arriving at the same moment never lose an update.

What moves the order (https://docs.adyen.com/payment-methods/knet/api-only):
- the shopper's redirect result only changes what the shopper is shown (`result_code`);
- webhooks decide the order: AUTHORISATION true → paid, false → failed, OFFER_CLOSED → expired.
"""

import logging

from sqlalchemy import update

from shop.db import db
from shop.models import Order, OrderEvent, OrderStatus

log = logging.getLogger(__name__)

MAX_CAS_RETRIES = 20

# How final a redirect resultCode is, to never downgrade what the shopper was told:
# a refresh or a replayed return may bring "Pending" after "Authorised", never the reverse.
RESULT_RANK = {
    None: 0,
    "RedirectShopper": 1,
    "Received": 2,
    "Pending": 2,
    "Error": 3,
    "Refused": 3,
    "Cancelled": 3,
    "Authorised": 4,
}


class ConcurrentUpdate(RuntimeError):
    """The order kept changing under us; the caller may retry later."""


def add_event(order_id, kind, summary, detail=None):
    """Add a step to the order's timeline (in the caller's transaction)."""
    db.session.add(OrderEvent(order_id=order_id, kind=kind, summary=summary, detail=detail))


def compare_and_set(order_id, decide):
    """Apply `decide(order) -> dict of new column values, or None for no change` atomically.

    Reads the order, asks `decide`, writes only if nobody changed the order meanwhile, and
    retries otherwise. Commits. Returns (order, changes) where changes is None if nothing changed.
    """
    for _ in range(MAX_CAS_RETRIES):
        db.session.expire_all()
        order = db.session.get(Order, order_id)
        if order is None:
            raise LookupError(f"order {order_id} does not exist")
        changes = decide(order)
        if not changes:
            db.session.rollback()
            return order, None
        events = changes.pop("_events", [])
        result = db.session.execute(
            update(Order)
            .where(Order.id == order_id, Order.version == order.version)
            .values(version=Order.version + 1, **changes)
        )
        if result.rowcount == 1:
            for kind, summary, detail in events:
                add_event(order_id, kind, summary, detail)
            db.session.commit()
            db.session.refresh(order)
            return order, changes
        db.session.rollback()
    raise ConcurrentUpdate(f"order {order_id} changed {MAX_CAS_RETRIES} times while being updated")


def start_payment(order_id):
    """created → pending. True for the one caller that wins; a double click or a second tab loses."""

    def decide(order):
        if order.status != OrderStatus.CREATED:
            return None
        return {
            "status": OrderStatus.PENDING,
            "_events": [("transition", "created → pending: the payment is being started (/payments)", None)],
        }

    _, changes = compare_and_set(order_id, decide)
    return changes is not None


def record_shopper_result(order_id, response):
    """Store what /payments/details said, for display only. Never downgrades the shown result,
    and never changes the order's status: webhooks do that."""
    result_code = response.get("resultCode")

    def decide(order):
        if RESULT_RANK.get(result_code, 0) <= RESULT_RANK.get(order.result_code, 0) and order.result_code:
            return None
        return {
            "result_code": result_code,
            "psp_reference": response.get("pspReference") or order.psp_reference,
            "refusal_reason": response.get("refusalReason"),
            "refusal_reason_code": response.get("refusalReasonCode"),
            "_events": [
                (
                    "result",
                    f"The shopper is shown '{result_code}' (display only; the webhook decides the order)",
                    {"resultCode": result_code, "pspReference": response.get("pspReference")},
                )
            ],
        }

    order, _ = compare_and_set(order_id, decide)
    return order
