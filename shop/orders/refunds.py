"""Giving money back: refunds (`/payments/{pspReference}/refunds`) and reversals ("cancel or refund",
`/payments/{pspReference}/reversals`) of a paid order, from the console, the command line or the worker.

Docs: https://docs.adyen.com/online-payments/refund, https://docs.adyen.com/online-payments/reversal,
https://docs.adyen.com/development-resources/api-idempotency.

`request_refund` saves the refund, with its own reference and Idempotency-Key, in one unit of work that
also moves the order to refund_pending (a compare-and-set: two consoles at once see each other's refund,
and never refund more than what is left, pending refunds counted); then calls Adyen outside any
transaction, retrying with the same key; then keeps the answer. The same `request_key` (a console form,
a double click) finds the same refund, and a refund whose call got no answer is sent again with its key.
Adyen's answer `received` is only an acknowledgement: the notifications decide (shop/orders/refund_state.py).
"""

import logging
import time

from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from shop.adyen import AdyenApiError, AdyenUnavailable
from shop.db import Conflict, db, transaction
from shop.models import Order, OrderStatus, Refund, RefundKind, RefundStatus, utcnow
from shop.money import format_amount
from shop.orders import history, refund_state
from shop.orders.history import Entry, Kind
from shop.orders.refund_state import REASONS, RefundChange, left_to_refund
from shop.orders.state import Change, change_order
from shop.services import adyen

log = logging.getLogger(__name__)

# The call is tried this many times more, with the same Idempotency-Key, after no answer, a 5xx or
# 704 (tests may set app.config REFUND_RETRIES and REFUND_RETRY_BACKOFF).
REFUND_RETRIES = 2
RETRY_BACKOFF_SECONDS = (0.5, 1.5)


class RefundError(Exception):
    """The refund was not made; the message says why, for the person who asked."""


class NotRefundable(RefundError):
    """The order cannot be refunded (not paid, no payment reference, nothing left)."""


class AmountNotAllowed(RefundError):
    """The amount is not more than zero, or more than what is left to refund."""


class RefundRefused(RefundError):
    """Adyen refused the request (4xx): the refund failed, the order is as it was, flagged."""


class RefundOutcomeUnknown(RefundError):
    """Adyen did not answer: the refund stays requested and is sent again with the same key."""


def request_refund(
    order_id,
    *,
    amount_minor=None,
    reason=None,
    reversal=False,
    request_key=None,
    requested_by="console",
    payment_psp_reference=None,
):
    """Refund `amount_minor` fils of a paid order's payment (None: what is left of it), or reverse it
    (`reversal`: all of it, when nothing of it was refunded yet). The payment is `payment_psp_reference`,
    one of the order's (None: Order.payment_to_refund, the second payment of an order flagged
    as paid twice, else its own). Returns the Refund (detached; status received when Adyen
    acknowledged it). Raises NotRefundable, AmountNotAllowed, RefundRefused or RefundOutcomeUnknown.

    `request_key`: the asker's key for this one request; the same key again returns the same refund
    (and sends it again if it got no answer), never a second one.
    """
    if reason is not None and reason not in REASONS:
        raise RefundError(f"the reason must be one of {', '.join(REASONS)}")
    refund_id, status = _save_refund(
        order_id, amount_minor, reason, reversal, request_key, requested_by, payment_psp_reference
    )
    if status == RefundStatus.REQUESTED:
        send(refund_id)
    return load(refund_id)


@transaction
def load(refund_id):
    refund = db.session.get(Refund, refund_id)
    db.session.expunge(refund)
    return refund


@transaction
def _save_refund(order_id, amount_minor, reason, reversal, request_key, requested_by, payment):
    """The refund saved with its key, and the order refund_pending, in one unit. Returns (id, status)."""
    if request_key:
        existing = db.session.execute(
            select(Refund.id, Refund.status).where(Refund.order_id == order_id, Refund.request_key == request_key)
        ).first()
        if existing is not None:
            return existing.id, existing.status
    saved = None

    def decide(order):
        nonlocal saved
        refunds = refund_state.refunds_of(order.id)
        paid_by = payment or order.payment_to_refund
        amount = _check(order, refunds, amount_minor, reversal, paid_by)
        refund = Refund(
            order_id=order.id,
            payment_psp_reference=paid_by,
            kind=RefundKind.REVERSAL if reversal else RefundKind.REFUND,
            amount_value=amount,
            currency=order.currency,
            reason=None if reversal else reason,
            reference=f"{order.reference}-R{len(refunds) + 1}",
            requested_by=requested_by,
        )
        if request_key:
            refund.request_key = request_key
        db.session.add(refund)
        try:
            db.session.flush()
        except IntegrityError:
            raise Conflict("another request saved this refund first") from None  # run again: it finds it
        saved = refund
        what = "cancel or refund (reversal) of" if reversal else "refund of"
        note = f"{what} {format_amount(amount, order.currency)} of payment {paid_by} asked for by {requested_by}" + (
            f", reason {reason}" if reason and not reversal else ""
        )
        detail = {
            "reference": refund.reference,
            "Idempotency-Key": refund.idempotency_key,
            "amount": amount,
            "payment": paid_by,
        }
        entry = Entry(Kind.REFUND_REQUESTED, note=note, detail=detail, refund_id=refund.id)
        return Change({"status": OrderStatus.REFUND_PENDING, "refund_failed": False}, entry)

    change_order(order_id, decide)
    return saved.id, saved.status


def _check(order, refunds, amount_minor, reversal, payment):
    """The amount to refund of `payment`, or raise why not."""
    if order.status not in OrderStatus.MONEY_TAKEN or not order.psp_reference:
        raise NotRefundable(f"order {order.reference} is {order.status}: only a paid order can be refunded")
    if payment not in order.payments:
        raise NotRefundable(f"order {order.reference} was not paid by {payment}: {', '.join(order.payments)}")
    left = left_to_refund(order.amount_value, refunds, payment)
    if left <= 0:
        raise NotRefundable(
            f"order {order.reference} has nothing left to refund of payment {payment} (pending refunds counted)"
        )
    if reversal:
        if left != order.amount_value or (amount_minor is not None and amount_minor != order.amount_value):
            raise NotRefundable(
                f"order {order.reference}: cancel or refund gives back the whole payment, and part of it "
                "is refunded or being refunded already; refund what is left instead"
            )
        return order.amount_value
    amount = left if amount_minor is None else amount_minor
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        raise AmountNotAllowed("the amount to refund must be more than 0")
    if amount > left:
        raise AmountNotAllowed(
            f"{format_amount(amount, order.currency)} is more than what is left to refund of order "
            f"{order.reference}: {format_amount(left, order.currency)} (pending refunds counted)"
        )
    return amount


@transaction
def _call_of(refund_id):
    """(the refunded payment's pspReference, endpoint method name, body, Idempotency-Key, order id), or None
    when the refund is not waiting for its call."""
    refund = db.session.get(Refund, refund_id)
    if refund is None or refund.status != RefundStatus.REQUESTED:
        return None
    order = db.session.get(Order, refund.order_id)
    body = {"merchantAccount": current_app.config["ADYEN_MERCHANT_ACCOUNT"], "reference": refund.reference}
    if refund.kind == RefundKind.REFUND:
        body["amount"] = {"currency": refund.currency, "value": refund.amount_value}  # fils
        if refund.reason:
            body["merchantRefundReason"] = refund.reason
    method = "reversals" if refund.kind == RefundKind.REVERSAL else "refunds"
    return refund.payment_psp_reference, method, body, refund.idempotency_key, order.id


def send(refund_id):
    """Call /refunds or /reversals for a requested refund (its first call, or again with the same key
    after no answer), outside any transaction, and keep the answer. Returns the refund's status."""
    call = _call_of(refund_id)
    if call is None:
        return None
    psp_reference, method, body, key, order_id = call
    config = current_app.config
    retries = config.get("REFUND_RETRIES", REFUND_RETRIES)
    backoff = config.get("REFUND_RETRY_BACKOFF", RETRY_BACKOFF_SECONDS)
    last_error = None
    for tried in range(retries + 1):
        if tried:
            time.sleep(backoff[min(tried - 1, len(backoff) - 1)] if backoff else 0)
        try:
            response = getattr(adyen(), method)(psp_reference, body, key, context={"order_id": order_id})
        except AdyenApiError as error:
            if error.is_final:
                _refused(order_id, refund_id, error)
                raise RefundRefused(f"Adyen refused the refund: {error}") from None
            last_error = error
            continue
        except AdyenUnavailable as error:
            last_error = error
            continue
        _received(order_id, refund_id, response)
        return RefundStatus.RECEIVED
    _unknown(order_id, refund_id, last_error)
    raise RefundOutcomeUnknown(
        f"Adyen did not answer ({last_error}); the refund is kept and will be sent again with the same "
        "Idempotency-Key, so it can only be made once"
    )


@transaction
def _received(order_id, refund_id, response):
    """Adyen acknowledged the request: keep the modification's pspReference (unless a notification, quicker
    than the answer, decided the refund already)."""
    psp = response.get("pspReference")
    db.session.execute(
        Refund.__table__.update()
        .where(Refund.id == refund_id, Refund.psp_reference.is_(None))
        .values(psp_reference=psp, updated_at=utcnow())
    )
    db.session.execute(
        Refund.__table__.update()
        .where(Refund.id == refund_id, Refund.status == RefundStatus.REQUESTED)
        .values(status=RefundStatus.RECEIVED, updated_at=utcnow())
    )
    detail = {"status": response.get("status"), "pspReference": psp}
    history.note(order_id, Kind.REFUND_ANSWERED, detail=detail, refund_id=refund_id)


@transaction
def _refused(order_id, refund_id, error):
    why = f"HTTP {error.status}, errorCode {error.error_code}: {error.message}"

    def decide(refund):
        if refund.status != RefundStatus.REQUESTED:
            return None
        return RefundChange(
            RefundStatus.FAILED, Entry(Kind.REFUND_REFUSED, note=why, refund_id=refund.id), failure_reason=why
        )

    refund_state.move_refund(order_id, refund_id, decide)


@transaction
def _unknown(order_id, refund_id, error):
    history.note(order_id, Kind.REFUND_UNKNOWN, str(error), refund_id=refund_id)


# --- The background worker ----------------------------------------------------------------------


def resend_unanswered(limit=20):
    """Send again, with the same key, refunds whose call got no answer (older than WORKER_TIMEOUT, so that
    no call is still under way). Returns how many were acknowledged."""
    before = utcnow().timestamp() - current_app.config["WORKER_TIMEOUT"]
    ids = _unanswered(before, limit)
    acknowledged = 0
    for refund_id in ids:
        try:
            acknowledged += send(refund_id) == RefundStatus.RECEIVED
        except RefundError as error:
            log.warning("refund %s sent again: %s", refund_id, error)
    return acknowledged


@transaction
def _unanswered(before_timestamp, limit):
    from datetime import UTC, datetime

    before = datetime.fromtimestamp(before_timestamp, UTC)
    return (
        db.session.execute(
            select(Refund.id)
            .where(Refund.status == RefundStatus.REQUESTED, Refund.updated_at < before)
            .order_by(Refund.id)
            .limit(limit)
        )
        .scalars()
        .all()
    )


def refund_flagged(limit=20):
    """AUTO_REFUND_FLAGGED: refund in full each paid order flagged needs_refund_decision or duplicate_payment
    that has no refund yet (reason DUPLICATE). Returns how many were asked for."""
    if not current_app.config.get("AUTO_REFUND_FLAGGED"):
        return 0
    asked = 0
    for order_id in _flagged_without_refund(limit):
        try:
            request_refund(order_id, reason="DUPLICATE", request_key="auto", requested_by="auto")
            asked += 1
        except RefundError as error:
            log.warning("order %s not refunded automatically: %s", order_id, error)
    return asked


@transaction
def _flagged_without_refund(limit):
    has_refund = select(func.count(Refund.id)).where(Refund.order_id == Order.id).scalar_subquery()
    return (
        db.session.execute(
            select(Order.id)
            .where(
                Order.status == OrderStatus.PAID,
                (Order.needs_refund_decision.is_(True)) | (Order.duplicate_of_id.is_not(None)),
                has_refund == 0,
            )
            .order_by(Order.id)
            .limit(limit)
        )
        .scalars()
        .all()
    )
