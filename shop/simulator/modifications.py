"""Refunds, reversals and cancels of the simulator's payments, and the webhooks that tell their outcome.

Adyen answers a modification request at once with `status: received` (only an acknowledgement) and
tells the outcome later: REFUND for /refunds, CANCEL_OR_REFUND for /reversals, CANCELLATION for
/cancels, each with originalReference = the payment's pspReference
(https://docs.adyen.com/online-payments/refund, …/reversal, …/cancel).

What is left to refund is kept on the payment (`modified_value`) and taken by one conditional UPDATE,
so two refunds at once, from two consoles or two workers, never take more than was paid. A refund
that is refused or fails gives its amount back. The simulator's payments are captured as soon as they
are authorised (KNET is a sale, elsewhere than at Adyen too), so a reversal refunds; a cancel is
accepted as if the payment were not captured yet, and, like a reversal, takes the whole amount.
"""

import logging
from datetime import timedelta
from typing import NamedTuple

from flask import current_app
from sqlalchemy import exists, select, update

from shop.db import db
from shop.simulator import faults, notifications
from shop.simulator.models import (
    ModificationKind,
    SimModification,
    SimPayment,
    SimWebhookDelivery,
    run_update,
    utcnow,
)
from shop.simulator.references import new_psp_reference

log = logging.getLogger(__name__)

ENDPOINTS = {
    ModificationKind.REFUND: faults.REFUNDS,
    ModificationKind.REVERSAL: faults.REVERSALS,
    ModificationKind.CANCEL: faults.CANCELS,
}
# Adyen's answer for a pspReference it cannot modify, as its own libraries' tests record it (the
# Go, Node and Ruby libraries: 422 167). Given here also for a payment that was never authorised
# (Adyen's own answer for that is unconfirmed).
NO_SUCH_PAYMENT = (422, "167", "Original pspReference required for this operation")
# More than is left to refund, a zero amount, or a reversal or cancel after a refund. Adyen's code
# for these is unconfirmed; 137 is its documented "Invalid amount specified".
INVALID_AMOUNT = (422, "137", "Invalid amount specified")
# Another currency than the payment's (Adyen's code list: 138; unconfirmed for modifications).
WRONG_CURRENCY = (422, "138", "Unsupported currency specified")
FAILED_REASON = "Refund Failed"  # Webhooks-v1's REFUND_FAILED example


class Refused(Exception):
    """Adyen refuses the request itself (a ServiceError): status, errorCode, message."""

    def __init__(self, answer):
        super().__init__(answer[2])
        self.status, self.error_code, self.message = answer


class Request(NamedTuple):
    """A validated modification request (amount: {currency, value}, or None for reversals and cancels)."""

    kind: str
    payment_psp_reference: str
    merchant_account: str
    amount: dict | None
    reference: str | None
    merchant_refund_reason: str | None


def receive(request):
    """Take a modification request: check it against the payment, take its amount, store it and queue
    its webhook(s). Adds to the session (the caller commits); raises Refused before adding anything.
    Returns the SimModification."""
    payment = db.session.execute(
        select(SimPayment).where(SimPayment.psp_reference == request.payment_psp_reference)
    ).scalar_one_or_none()
    if payment is None or payment.merchant_account != request.merchant_account or not is_authorised(payment):
        log.info("simulator %s: no authorised payment %s", request.kind, request.payment_psp_reference)
        raise Refused(NO_SUCH_PAYMENT)
    amount = request.amount or {"currency": payment.currency, "value": payment.amount_value}
    if amount["currency"] != payment.currency:
        raise Refused(WRONG_CURRENCY)
    if amount["value"] <= 0 or not _take(payment, request.kind, amount["value"]):
        log.info("simulator %s: %s is more than is left of %s", request.kind, amount, payment.psp_reference)
        raise Refused(INVALID_AMOUNT)

    endpoint = ENDPOINTS[request.kind]
    fault = faults.take(endpoint, faults.REFUND_KINDS) if endpoint in faults.KINDS["refund_refused"][0] else None
    outcome = {None: "succeeded", "refund_refused": "refused", "refund_failed": "failed"}[fault and fault.kind]
    modification = SimModification(
        psp_reference=new_psp_reference(),
        payment_id=payment.id,
        kind=request.kind,
        merchant_reference=request.reference,
        amount_value=amount["value"],
        currency=amount["currency"],
        merchant_refund_reason=request.merchant_refund_reason,
        outcome=outcome,
        reason=fault.param("reason") if outcome == "refused" else FAILED_REASON if outcome == "failed" else None,
        created_at=utcnow(),
    )
    db.session.add(modification)
    if outcome != "succeeded":
        _give_back(payment, amount["value"])
    _queue_webhooks(payment, modification, fault)
    log.info("simulator %s %s of %s: %s", request.kind, modification.psp_reference, payment.psp_reference, outcome)
    return modification


def is_authorised(payment):
    """Adyen authorised it: an AUTHORISATION true was sent (or is due) for it, whether the shopper's
    result was Authorised, Pending then paid, or the offer had closed first (late_authorisation)."""
    return db.session.execute(
        select(
            exists().where(
                SimWebhookDelivery.payment_id == payment.id,
                SimWebhookDelivery.event_code == "AUTHORISATION",
                SimWebhookDelivery.success == "true",
            )
        )
    ).scalar()


def _take(payment, kind, value):
    """Take `value` of what is left to refund, in one conditional UPDATE. A reversal or a cancel
    takes all of it and only while nothing was taken before."""
    statement = update(SimPayment).where(SimPayment.id == payment.id)
    if kind == ModificationKind.REFUND:
        statement = statement.where(SimPayment.modified_value + value <= SimPayment.amount_value).values(
            modified_value=SimPayment.modified_value + value
        )
    else:
        statement = statement.where(SimPayment.modified_value == 0).values(modified_value=SimPayment.amount_value)
    return run_update(statement).rowcount == 1


def _give_back(payment, value):
    run_update(
        update(SimPayment).where(SimPayment.id == payment.id).values(modified_value=SimPayment.modified_value - value)
    )


def _queue_webhooks(payment, modification, fault):
    delay = current_app.config["SIMULATOR_WEBHOOK_DELAY"]
    now = utcnow()
    event_code = notifications.MODIFICATION_EVENTS[modification.kind]
    refused = modification.outcome == "refused"
    item = notifications.modification_item(
        payment, modification, event_code, not refused, modification.reason if refused else "", now
    )
    notifications.add_delivery(item, delay, payment_id=payment.id)
    if modification.outcome == "failed":
        later = delay + float(fault.param("seconds"))
        failed = notifications.modification_item(
            payment, modification, "REFUND_FAILED", True, FAILED_REASON, now + timedelta(seconds=later)
        )
        notifications.add_delivery(failed, later, payment_id=payment.id)
