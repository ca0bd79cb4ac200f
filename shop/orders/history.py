"""The order's history: each step of its timeline as a row of fields (shop.models.OrderEvent).

Every service that does something to an order writes its step here, in the transaction that does it,
so the timeline (shop/console/timeline.py) reads what happened from fields: what kind of step,
the status before and after, the notification, payment attempt or email it concerns. Nothing is
ever worked out from wording.
"""

from dataclasses import dataclass, field

from sqlalchemy import insert

from shop.db import db
from shop.models import OrderEvent, utcnow


class Kind:
    """What a step is. The console explains each kind once (shop/console/timeline.py)."""

    ORDER_CREATED = "order_created"  # the checkout form was sent; detail: lines, demo
    PAYMENT_STARTED = "payment_started"  # created → pending, an attempt and its Idempotency-Key saved
    PAYMENT_ANSWERED = "payment_answered"  # /payments answered; detail: resultCode, action method
    PAYMENT_UNKNOWN = "payment_unknown"  # /payments gave no usable answer; note: why
    PAYMENT_REFUSED = "payment_refused"  # pending → created: Adyen refused /payments (4xx)
    REDIRECT = "redirect"  # the shopper sent to action.url; detail: method, url
    REDIRECT_REFUSED = "redirect_refused"  # action.url is not Adyen's or KNET's: not followed
    RETURN = "return"  # the shopper back from KNET; detail: method, redirectResult (shortened)
    DETAILS_UNKNOWN = "details_unknown"  # /payments/details gave no usable answer, or 704
    FOREIGN_RESULT = "foreign_result"  # a redirectResult of another order: ignored
    RESULT_SHOWN = "result_shown"  # what the shopper is shown; detail: resultCode, pspReference
    TRANSITION = "transition"  # a verified webhook moved the status; notification_id, note
    REVIEW = "review"  # a verified webhook raised a flag, the status unchanged; note
    DUPLICATE_PAYMENT = "duplicate_payment"  # paid while another order of the cart was; detail: first
    WEBHOOK_PROCESSED = "webhook_processed"  # a stored notification applied (changed nothing); note
    WEBHOOK_DUPLICATE = "webhook_duplicate"  # a notification delivered again; detail: deliveries
    WEBHOOK_REPLAYED = "webhook_replayed"  # a developer queued a stored notification again
    RECONCILED = "reconciled"  # pending → expired by the shop: no result came in time; note
    REFUND_REQUESTED = "refund_requested"  # a refund saved with its key before the call; detail: amount
    REFUND_ANSWERED = "refund_answered"  # /refunds or /reversals answered `received`; detail: pspReference
    REFUND_UNKNOWN = "refund_unknown"  # no usable answer: sent again later with the same key; note
    REFUND_REFUSED = "refund_refused"  # Adyen refused the request (4xx): the refund failed; note
    REFUND_SETTLED = "refund_settled"  # a verified refund notification decided the refund; note
    NOTE = "note"  # a remark by a person or a tool (a demo scenario started); note


@dataclass(frozen=True)
class Entry:
    """A step to write with a change (see shop/orders/state.py `Change`)."""

    kind: str
    note: str | None = None
    detail: dict | None = field(default=None, compare=False)
    notification_id: int | None = None
    attempt_id: int | None = None
    refund_id: int | None = None


def record(order_id, entry, old_status=None, new_status=None, email_id=None, at=None):
    """Write one step, in the caller's transaction. A Core INSERT: there is nothing for the session to
    track afterwards."""
    db.session.execute(insert(OrderEvent.__table__), row(order_id, entry, old_status, new_status, email_id, at))


def record_many(rows):
    """Write the steps `rows` (each made by `row`) in one statement, in the caller's transaction."""
    if rows:
        db.session.execute(insert(OrderEvent.__table__), rows)


def row(order_id, entry, old_status=None, new_status=None, email_id=None, at=None):
    """The values of one step, for `record_many`."""
    return {
        "order_id": order_id,
        "kind": entry.kind,
        "old_status": old_status,
        "new_status": new_status if new_status != old_status else None,
        "notification_id": entry.notification_id,
        "attempt_id": entry.attempt_id,
        "refund_id": entry.refund_id,
        "email_id": email_id,
        "note": entry.note,
        "detail": entry.detail,
        "created_at": at or utcnow(),
    }


def note(order_id, kind, note=None, **fields):
    """A step with no state change: `note(order_id, Kind.REDIRECT, detail={...})`."""
    record(order_id, Entry(kind, note=note, **fields))
