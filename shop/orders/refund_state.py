"""Refunds after the payment: the rules, as pure functions, and the one place that applies them.

Docs: https://docs.adyen.com/online-payments/refund and https://docs.adyen.com/online-payments/reversal
(the answer `received` only acknowledges the request; the notification says what happened), and the
event codes of https://docs.adyen.com/development-resources/webhooks/webhook-types.

A refund's status moves requested → received → succeeded / failed; each refund gives back one payment
(the order's, or a second one an order paid twice took: Order.payment_to_refund); the order's status follows
from its refunds (`order_status_for`): paid → refund_pending → refunded / partially_refunded, or back,
flagged refund_failed, when a refund fails. `decide_refund` is the whole notification table: a
failure after a success (REFUND_FAILED, REFUNDED_REVERSED) wins over it whichever comes first, and
anything already decided stays decided, so duplicates and any arrival order end in one state.
Each change to a refund is written with a compare-and-set on its order (shop/orders/state.py), so
two refunds asked for at once, or a notification and the API's answer, never lose an update.
"""

import logging
from dataclasses import dataclass

from sqlalchemy import or_, select, update

from shop.db import db
from shop.models import Order, OrderStatus, Refund, RefundKind, RefundStatus, utcnow
from shop.money import format_amount
from shop.orders.history import Entry, Kind
from shop.orders.state import Change, change_order

log = logging.getLogger(__name__)

REFUND = "REFUND"
REFUND_FAILED = "REFUND_FAILED"
REFUNDED_REVERSED = "REFUNDED_REVERSED"
CANCEL_OR_REFUND = "CANCEL_OR_REFUND"
CANCELLATION = "CANCELLATION"
# The outcome of the request: success says whether it was carried out.
OUTCOME_EVENTS = (REFUND, CANCEL_OR_REFUND, CANCELLATION)
# A refund that succeeded came undone afterwards (the scheme refused it, or it was reversed).
UNDONE_EVENTS = (REFUND_FAILED, REFUNDED_REVERSED)
REFUND_EVENTS = OUTCOME_EVENTS + UNDONE_EVENTS

# Adyen's merchantRefundReason values (PaymentRefundRequest in CheckoutService-v71.json).
REASONS = ("FRAUD", "CUSTOMER REQUEST", "RETURN", "DUPLICATE", "OTHER")


@dataclass(frozen=True)
class RefundDecision:
    """What a notification does to a refund: its new status (None: no change), and why."""

    status: str | None
    note: str


def decide_refund(status, event_code, success):
    """Pure: the RefundDecision for a notification (`event_code`, `success`) on a refund in `status`.

    REFUND / CANCEL_OR_REFUND / CANCELLATION true  -> succeeded, from requested or received
    REFUND / CANCEL_OR_REFUND / CANCELLATION false -> failed (a normal outcome: Adyen's reason is kept)
    REFUND_FAILED / REFUNDED_REVERSED true         -> failed, also after succeeded (the money came back)
    A decided refund is never decided again, except a success undone by REFUND_FAILED / REFUNDED_REVERSED.
    """
    what = f"{event_code} success={'true' if success else 'false'}"
    if event_code in OUTCOME_EVENTS:
        if status in RefundStatus.OPEN:
            if success:
                return RefundDecision(RefundStatus.SUCCEEDED, f"{what}: the money was given back")
            return RefundDecision(RefundStatus.FAILED, f"{what}: Adyen did not carry out the refund")
        return RefundDecision(None, f"no change: the refund {status} already")
    if event_code in UNDONE_EVENTS:
        if not success:
            return RefundDecision(None, f"no change: {what} reports nothing that happened")
        if status == RefundStatus.FAILED:
            return RefundDecision(None, "no change: the refund failed already")
        return RefundDecision(RefundStatus.FAILED, f"{what}: the refund did not reach the shopper")
    return RefundDecision(None, f"no change: this shop does not act on {event_code} for a refund")


def left_to_refund(amount_value, refunds, payment):
    """Pure: what may still be refunded of the payment `payment` (a pspReference) of `amount_value`,
    counting every refund of that payment that is not failed (a pending one may still succeed).
    `refunds`: objects with status, amount_value and payment_psp_reference."""
    return amount_value - sum(
        r.amount_value for r in refunds if r.payment_psp_reference == payment and r.status in RefundStatus.COUNTED
    )


def order_status_for(amount_value, refunds, payment):
    """Pure: the order's status given its refunds (the order was paid by `payment`: the money came).

    any refund pending -> refund_pending; all of `payment` given back -> refunded; some -> partially_refunded;
    none -> paid. A refund of a second payment (an order paid twice) gives back money the order did not keep:
    once decided, the order is paid as before."""
    if any(r.status in RefundStatus.OPEN for r in refunds):
        return OrderStatus.REFUND_PENDING
    given_back = sum(
        r.amount_value for r in refunds if r.payment_psp_reference == payment and r.status == RefundStatus.SUCCEEDED
    )
    if given_back >= amount_value:
        return OrderStatus.REFUNDED
    if given_back > 0:
        return OrderStatus.PARTIALLY_REFUNDED
    return OrderStatus.PAID


def refunds_of(order_id):
    return db.session.execute(select(Refund).where(Refund.order_id == order_id).order_by(Refund.id)).scalars().all()


@dataclass(frozen=True)
class RefundChange:
    """What one change to a refund writes: its new status, the timeline entry, and the rest."""

    status: str
    entry: Entry
    failure_reason: str | None = None
    psp_reference: str | None = None
    email: str | None = None


def move_refund(order_id, refund_id, decide):
    """In the caller's transaction: read the order, then the refund, ask `decide(refund) -> RefundChange |
    None`, and write the refund's change and the order's status that follows (with the timeline entry and
    the shopper email) in one compare-and-set on the order: any other change to the order or its refunds
    meanwhile makes the unit run again (shop/orders/state.py). Returns the Applied, or None."""

    def decide_order(order):
        refund = db.session.get(Refund, refund_id, populate_existing=True)
        change = decide(refund)
        if change is None:
            return None
        values = {"status": change.status, "updated_at": utcnow()}
        if change.status in (RefundStatus.SUCCEEDED, RefundStatus.FAILED):
            values["settled_at"] = utcnow()
        if change.failure_reason is not None:
            values["failure_reason"] = change.failure_reason[:2000]
        if change.psp_reference and not refund.psp_reference:
            values["psp_reference"] = change.psp_reference
        refunds = Refund.__table__
        db.session.execute(update(refunds).where(refunds.c.id == refund_id).values(**values))
        after = [
            _Seen(change.status if r.id == refund_id else r.status, r.amount_value, r.payment_psp_reference)
            for r in refunds_of(order_id)
        ]
        order_values = {"status": order_status_for(order.amount_value, after, order.psp_reference)}
        if change.status == RefundStatus.FAILED:
            order_values["refund_failed"] = True
        elif change.status == RefundStatus.SUCCEEDED and refund.payment_psp_reference == order.extra_psp_reference:
            order_values["needs_refund_decision"] = False  # the second payment went back: decided
        return Change(order_values, change.entry, change.email)

    return change_order(order_id, decide_order)


@dataclass(frozen=True)
class _Seen:
    status: str
    amount_value: int
    payment_psp_reference: str


# --- Notifications ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RefundEvent:
    """The parts of a verified refund notification that the rules look at."""

    event_code: str
    success: bool
    psp_reference: str  # the modification's
    original_reference: str  # the payment's
    merchant_reference: str  # the refund's reference, or the order's
    amount_value: int | None
    currency: str | None
    reason: str | None
    notification_id: int | None = None

    def describe(self):
        return (
            f"{self.event_code} success={'true' if self.success else 'false'} "
            f"(pspReference {self.psp_reference}, originalReference {self.original_reference})"
        )


def find_refund(event):
    """The refund a notification is about: by the modification's pspReference, then by the refund's own
    reference, then (a notification that names the order) the oldest undecided refund of the payment
    with that amount. None when the shop asked for no such refund."""
    found = db.session.execute(select(Refund).where(Refund.psp_reference == event.psp_reference)).scalars().first()
    if found is None and event.merchant_reference:
        found = db.session.execute(
            select(Refund).where(Refund.reference == event.merchant_reference)
        ).scalar_one_or_none()
    if found is not None:
        return found
    order = payment_order(event)
    if order is None:
        return None
    candidates = [
        r
        for r in refunds_of(order.id)
        if r.psp_reference is None and r.payment_psp_reference == event.original_reference
    ]
    wanted = RefundStatus.OPEN if event.event_code in OUTCOME_EVENTS else (*RefundStatus.OPEN, RefundStatus.SUCCEEDED)
    for refund in candidates:
        same_amount = refund.amount_value == event.amount_value or refund.kind == RefundKind.REVERSAL
        if refund.status in wanted and same_amount:
            return refund
    return None


def payment_order(event):
    """The order whose payment (its own, or a second one it took) the notification's originalReference
    names, or None."""
    if not event.original_reference:
        return None
    named = or_(Order.psp_reference == event.original_reference, Order.extra_psp_reference == event.original_reference)
    return db.session.execute(select(Order).where(named).order_by(Order.id)).scalars().first()


def order_id_of_refund(reference):
    """The order of the refund with this reference (a refund notification's merchantReference), or None."""
    return db.session.execute(select(Refund.order_id).where(Refund.reference == reference)).scalar()


def order_id_for(event):
    """The order a refund notification concerns (for the timeline of a notification nobody asked for)."""
    refund = find_refund(event)
    if refund is not None:
        return refund.order_id
    order = payment_order(event)
    return order.id if order is not None else None


def apply_refund_webhook(event):
    """Apply a verified refund notification, in the caller's transaction. Returns (order_id or None, note,
    whether it changed the refund)."""
    refund = find_refund(event)
    if refund is None:
        refund = _refund_made_elsewhere(event)
        if refund is None:
            return order_id_for(event), f"no refund of this shop matches {event.describe()}: nothing to change", False
    note = None

    def decide(current):
        nonlocal note
        decision = decide_refund(current.status, event.event_code, event.success)
        note = decision.note
        if decision.status is None:
            return None
        money = format_amount(current.amount_value, current.currency)
        note = f"{decision.note}: refund {current.reference} of {money} {decision.status}"
        succeeded = decision.status == RefundStatus.SUCCEEDED
        return RefundChange(
            decision.status,
            Entry(
                Kind.REFUND_SETTLED,
                note=note,
                detail={"refund": decision.status},
                notification_id=event.notification_id,
                refund_id=current.id,
            ),
            failure_reason=None if succeeded else (event.reason or event.event_code),
            psp_reference=event.psp_reference,
            email=f"{'refunded' if succeeded else 'refund_failed'}:{current.id}",
        )

    applied = move_refund(refund.order_id, refund.id, decide)
    log.info("refund %s: %s (%s)", refund.reference, note, event.describe())
    return refund.order_id, note, applied is not None


def _refund_made_elsewhere(event):
    """A REFUND or CANCEL_OR_REFUND for one of our paid orders that the shop did not ask for (made in
    the Customer Area): kept as a refund of its own, so that the order shows it."""
    if event.event_code not in (REFUND, CANCEL_OR_REFUND) or event.amount_value is None:
        return None
    order = payment_order(event)
    if order is None or order.status not in OrderStatus.MONEY_TAKEN:
        return None
    refund = Refund(
        order_id=order.id,
        kind=RefundKind.REFUND if event.event_code == REFUND else RefundKind.REVERSAL,
        amount_value=event.amount_value,
        currency=event.currency or order.currency,
        payment_psp_reference=event.original_reference,
        reference=f"adyen-{event.psp_reference}"[:80],
        psp_reference=event.psp_reference,
        status=RefundStatus.RECEIVED,
        requested_by="Adyen",
    )
    db.session.add(refund)
    db.session.flush()
    return refund
