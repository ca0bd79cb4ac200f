"""The order state machine: the one place that changes an order, from the return or from webhooks.

Every change is a compare-and-set (`UPDATE … WHERE id = :id AND version = :seen`), retried on a
conflict, so a webhook and the shopper's return arriving at the same moment never lose an update.

What moves the order (https://docs.adyen.com/payment-methods/knet/api-only):
- the shopper's redirect result only changes what the shopper is shown (`result_code`);
- webhooks decide the order: AUTHORISATION true → paid, false → failed, OFFER_CLOSED → expired.

`decide_webhook` is the whole webhook rule table as a pure function; `apply_event` / `apply_webhook`
apply it through compare_and_set, with the timeline entry and the shopper's email in the same
transaction. Any order of arrival and any number of duplicates end in the same status.
"""

import logging
from dataclasses import dataclass
from typing import NamedTuple

from sqlalchemy import insert, select, update

from shop import mail
from shop.db import db
from shop.models import Order, OrderEvent, OrderStatus
from shop.money import format_amount

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
    """Add a step to the order's timeline (in the caller's transaction). A Core INSERT on the table,
    not an object for the session to flush nor an ORM-enabled insert: the ORM's bulk path cost more
    than the insert itself (bench/README.md)."""
    db.session.execute(
        insert(OrderEvent.__table__), {"order_id": order_id, "kind": kind, "summary": summary, "detail": detail}
    )


def compare_and_set(order_id, decide, reload=True):
    """Apply `decide(order) -> dict of new column values, or None for no change` atomically.

    Reads the order, asks `decide`, writes only if nobody changed the order meanwhile, and
    retries otherwise. Commits. Returns (order, changes) where changes is None if nothing changed;
    after a change the order is read again, unless `reload` is False (its attributes then load
    when first read).
    Two optional keys of the dict are not columns: `_events`, a list of (kind, summary, detail) for
    the timeline, and `_after`, a callable(order) run in the same transaction after the write.
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
        # Work that must happen exactly once with this change (e.g. queue the shopper's email):
        # run in the same transaction, so it is committed with the change or not at all.
        after = changes.pop("_after", None)
        # On the table, not ORM-enabled: nothing in the session to synchronise (the commit below
        # expires the order), and the ORM's bulk path was most of this statement's cost.
        orders = Order.__table__
        result = db.session.execute(
            update(orders)
            .where(orders.c.id == order_id, orders.c.version == order.version)
            .values(version=orders.c.version + 1, **changes)
        )
        if result.rowcount == 1:
            for kind, summary, detail in events:
                add_event(order_id, kind, summary, detail)
            if after is not None:
                after(order)
            db.session.commit()
            if reload:
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


# --- Webhooks: the only way to a final state ------------------------------------------------
# Docs: https://docs.adyen.com/payment-methods/knet/api-only (the webhook table) and
# https://docs.adyen.com/development-resources/webhooks/handle-webhook-events

AUTHORISATION = "AUTHORISATION"
OFFER_CLOSED = "OFFER_CLOSED"
HANDLED_EVENTS = (AUTHORISATION, OFFER_CLOSED)

# Where a verified webhook may still move the order from; paid is absorbing.
OPEN = (OrderStatus.CREATED, OrderStatus.PENDING)
# Cancelled orders that a late AUTHORISATION success=true re-opens as paid: Adyen's help centre says
# an expired offer "may still be authorised", so money may arrive after we said "cancelled".
REOPENABLE = (OrderStatus.FAILED, OrderStatus.EXPIRED)


@dataclass(frozen=True)
class WebhookEvent:
    """The parts of a verified NotificationRequestItem that the state machine looks at."""

    event_code: str
    success: bool
    amount_value: int | None
    currency: str | None
    psp_reference: str
    reason: str | None = None

    def describe(self):
        return f"{self.event_code} success={'true' if self.success else 'false'} (pspReference {self.psp_reference})"


@dataclass(frozen=True)
class Decision:
    """What a webhook does to an order.

    changes: column -> new value ({} when nothing changes);
    email:   which shopper email this outcome sends ("paid", "late_paid", "failed", "expired") or None;
    note:    why, in words, for the timeline and the notification row.
    """

    changes: dict
    email: str | None
    note: str


def decide_webhook(order, event):
    """Pure: the Decision for `event` (a WebhookEvent) on `order` (an Order or any object with
    status, amount_value, currency, psp_reference, needs_review, needs_refund_decision).

    AUTHORISATION true  -> paid ("proceed with the order"), from failed/expired too, with a refund decision;
                           amount or currency not the order's -> needs_review, status unchanged
    AUTHORISATION false -> failed ("cancel the order ... the payment failed"), never after paid
    OFFER_CLOSED        -> expired ("cancel the order ... the payment timed out"), never after paid
    Only a success is checked against the order's amount: a failure or an expiry moved no money.
    """
    status = order.status
    if event.event_code == AUTHORISATION and event.success:
        if event.amount_value != order.amount_value or event.currency != order.currency:
            seen = _money(event.amount_value, event.currency)
            expected = _money(order.amount_value, order.currency)
            if order.needs_review:
                return Decision({}, None, f"paid {seen}, not the order's {expected}; already flagged for review")
            return Decision(
                {"needs_review": True},
                None,
                f"paid {seen}, not the order's {expected}: not marked paid, flagged for review",
            )
        if status == OrderStatus.PAID:
            if order.psp_reference and order.psp_reference != event.psp_reference and not order.needs_refund_decision:
                # A second successful payment for one order: the shopper paid twice.
                return Decision(
                    {"needs_refund_decision": True},
                    None,
                    f"a second successful payment (the order was paid by {order.psp_reference}): "
                    "needs a refund decision",
                )
            return Decision({}, None, "no change: the order is already paid")
        if status in REOPENABLE:
            return Decision(
                {"status": OrderStatus.PAID, "psp_reference": event.psp_reference, "needs_refund_decision": True},
                "late_paid",
                f"{status} → paid: the payment succeeded after the order was cancelled; needs a refund decision",
            )
        return Decision(
            {"status": OrderStatus.PAID, "psp_reference": event.psp_reference},
            "paid",
            f"{status} → paid: proceed with the order",
        )
    if event.event_code == AUTHORISATION:
        if status in OPEN:
            return Decision(
                _with_psp({"status": OrderStatus.FAILED}, order, event),
                "failed",
                f"{status} → failed: order cancelled, the payment failed",
            )
        return Decision({}, None, f"no change: the order is already {status}")
    if event.event_code == OFFER_CLOSED:
        if not event.success:
            return Decision({}, None, "no change: OFFER_CLOSED with success=false closes nothing")
        if status in OPEN:
            return Decision(
                _with_psp({"status": OrderStatus.EXPIRED}, order, event),
                "expired",
                f"{status} → expired: order cancelled, the payment timed out",
            )
        return Decision({}, None, f"no change: the order is already {status}")
    return Decision({}, None, f"no change: this shop does not act on {event.event_code}")


def _with_psp(changes, order, event):
    if not order.psp_reference:
        changes["psp_reference"] = event.psp_reference
    return changes


def _money(value, currency):
    if value is None or not currency:
        return "an unknown amount"
    return format_amount(value, currency)


class Applied(NamedTuple):
    order: Order | None  # None: no order has this merchantReference
    changes: dict | None  # None: nothing changed
    decision: Decision | None


def apply_event(order_reference, event, after=None):
    """Apply a verified webhook to the order whose reference is `order_reference`, atomically.

    The status change, its timeline entry and the shopper's email are one transaction, so a
    duplicate, a retry or a concurrent delivery can never send a second email. `after(order,
    decision)`, if given, runs in that transaction too, only when the order changes (the webhook
    processor marks its notification processed there: one commit for both).
    """
    order_id = db.session.execute(select(Order.id).where(Order.reference == order_reference)).scalar()
    db.session.rollback()
    if order_id is None:
        return Applied(None, None, None)
    last = {}

    def decide(order):
        decision = decide_webhook(order, event)
        last["decision"] = decision
        if not decision.changes:
            return None
        changes = dict(decision.changes)
        old, new = order.status, changes.get("status", order.status)
        if new != old:
            summary = f"{old} → {new}: {event.describe()}"
            if changes.get("needs_refund_decision"):
                summary += "; needs a refund decision (the shopper was told the order was cancelled)"
            changes["_events"] = [("transition", summary, {"note": decision.note})]
        else:
            changes["_events"] = [("review", f"{event.describe()}: {decision.note}", None)]

        def in_the_same_transaction(order):
            if decision.email:
                mail.queue_order_email(order, decision.email)
            if after is not None:
                after(order, decision)

        changes["_after"] = in_the_same_transaction
        return changes

    # Not read again: the webhook processor needs only the order's id, which the commit keeps.
    order, changes = compare_and_set(order_id, decide, reload=False)
    if changes is not None:
        log.info("order %s: %s (%s)", order_reference, last["decision"].note, event.describe())
    return Applied(order, changes, last["decision"])


def apply_webhook(order_reference, event_code, success, amount_value, currency, psp_reference, reason=None):
    """Apply one verified webhook. Returns (order, changed): order is None for an unknown
    merchantReference, changed is the dict of changed columns or None."""
    event = WebhookEvent(event_code, success, amount_value, currency, psp_reference, reason)
    applied = apply_event(order_reference, event)
    return applied.order, applied.changes
