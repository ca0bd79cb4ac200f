"""The simulator's payment store: create, complete once, expire once.

Each change of a payment's status is one conditional UPDATE (`… WHERE status = 'awaiting_shopper'`)
committed together with the webhook it causes, so two tabs, two workers or a late shopper can never
finish the same payment twice or send two OFFER_CLOSED.
"""

import logging
from datetime import timedelta

from flask import current_app
from sqlalchemy import select, update

from shop.db import db
from shop.simulator import faults, notifications, outcomes
from shop.simulator.models import SimPayment, SimPaymentStatus, as_utc, run_update, utcnow
from shop.simulator.references import new_page_token, new_psp_reference, new_redirect_result, redirect_result_hash

log = logging.getLogger(__name__)


def create_payment(request_body, psp_reference=None):
    """Store a payment from a validated /payments body (added to the session; the caller commits)."""
    now = utcnow()
    shopper_name = request_body.get("shopperName") if isinstance(request_body.get("shopperName"), dict) else {}
    payment = SimPayment(
        psp_reference=psp_reference or new_psp_reference(),
        page_token=new_page_token(),
        merchant_account=request_body["merchantAccount"],
        merchant_reference=request_body["reference"],
        amount_value=request_body["amount"]["value"],
        currency=request_body["amount"]["currency"],
        country_code=_text(request_body.get("countryCode"), 100),
        payment_method_type=request_body["paymentMethod"]["type"],
        return_url=request_body["returnUrl"],
        shopper_first_name=_text(shopper_name.get("firstName"), 80),
        shopper_last_name=_text(shopper_name.get("lastName"), 80),
        shopper_email=_text(request_body.get("shopperEmail"), 256),
        telephone_number=_text(request_body.get("telephoneNumber"), 64),
        shopper_locale=_text(request_body.get("shopperLocale"), 32),
        redirect_to_issuer_method=_method(request_body.get("redirectToIssuerMethod")),
        redirect_from_issuer_method=_method(request_body.get("redirectFromIssuerMethod")),
        status=SimPaymentStatus.AWAITING_SHOPPER,
        created_at=now,
        expires_at=now + timedelta(seconds=current_app.config["SIMULATOR_OFFER_EXPIRY"]),
    )
    db.session.add(payment)
    return payment


def by_page_token(page_token):
    if not page_token:
        return None
    return db.session.execute(select(SimPayment).where(SimPayment.page_token == page_token)).scalar_one_or_none()


def by_redirect_result(redirect_result):
    """The payment a redirectResult (or legacy payload) names, compared exactly as issued."""
    if not redirect_result:
        return None
    payment = db.session.execute(
        select(SimPayment).where(SimPayment.redirect_result_hash == redirect_result_hash(redirect_result))
    ).scalar_one_or_none()
    return payment if payment is not None and payment.redirect_result == redirect_result else None


def mark_details_requested(payment):
    """Record the first /payments/details answer for this payment (the caller commits).

    True for the one request that gets there first; False for a repeat, which Adyen answers with 704
    unless its Idempotency-Key replays the first answer. One conditional UPDATE decides, so two
    requests at once never both count as the first.
    """
    return (
        run_update(
            update(SimPayment)
            .where(SimPayment.id == payment.id, SimPayment.details_requested_at.is_(None))
            .values(details_requested_at=utcnow())
        ).rowcount
        == 1
    )


def is_overdue(payment, now=None):
    return payment.status == SimPaymentStatus.AWAITING_SHOPPER and as_utc(payment.expires_at) <= (now or utcnow())


def complete(payment, outcome, bank=None, card_last4=None):
    """Record the shopper's outcome and queue its AUTHORISATION webhook. Commits.

    True for the one submission that wins; False if the payment was already completed or has expired.
    """
    now = utcnow()
    redirect_result = new_redirect_result(payment, current_app.config["SECRET_KEY"])
    won = (
        run_update(
            update(SimPayment)
            .where(
                SimPayment.id == payment.id,
                SimPayment.status == SimPaymentStatus.AWAITING_SHOPPER,
                SimPayment.expires_at > now,
            )
            .values(
                status=SimPaymentStatus.COMPLETED,
                result_code=outcome.result_code,
                refusal_reason=outcome.refusal_reason,
                refusal_reason_code=outcome.refusal_reason_code,
                bank=bank,
                card_last4=card_last4,
                redirect_result=redirect_result,
                redirect_result_hash=redirect_result_hash(redirect_result),
                completed_at=now,
            )
        ).rowcount
        == 1
    )
    if won:
        notification = outcomes.notification_for(outcome)
        config = current_app.config
        delay = config["SIMULATOR_PENDING_DELAY"] if notification.later else config["SIMULATOR_WEBHOOK_DELAY"]
        notifications.queue(
            payment,
            "AUTHORISATION",
            notification.success,
            notification.reason,
            delay,
            happened_at=now + timedelta(seconds=delay) if notification.later else now,
        )
        log.info("KNET page: payment %s finished as %s", payment.psp_reference, outcome.result_code)
    db.session.commit()
    db.session.refresh(payment)
    return won


def expire(payment):
    """Close an offer the shopper never finished and queue its one OFFER_CLOSED. Commits.

    True if this call expired it; False if it was finished, already expired, or not yet due.
    """
    now = utcnow()
    won = (
        run_update(
            update(SimPayment)
            .where(
                SimPayment.id == payment.id,
                SimPayment.status == SimPaymentStatus.AWAITING_SHOPPER,
                SimPayment.expires_at <= now,
            )
            .values(status=SimPaymentStatus.EXPIRED, offer_closed_at=now)
        ).rowcount
        == 1
    )
    if won:
        delay = current_app.config["SIMULATOR_WEBHOOK_DELAY"]
        notifications.queue(payment, "OFFER_CLOSED", True, "", delay, happened_at=now)
        log.info("offer for payment %s expired; OFFER_CLOSED queued", payment.psp_reference)
        _authorise_late(payment, now, delay)
    db.session.commit()
    db.session.refresh(payment)
    return won


def _authorise_late(payment, closed_at, delay):
    """The shopper's bank said yes after the offer closed: AUTHORISATION true follows OFFER_CLOSED
    ("If an offer expires, it may still be authorised, or you can refund the amount", Adyen's help
    centre, What are offers?). For a payment the demo marked (authorise_after_close) or while a
    late_authorisation fault is in force."""
    after = payment.authorise_after_close
    if after is None:
        fault = faults.take(faults.WEBHOOKS, ("late_authorisation",))
        after = None if fault is None else float(fault.param("seconds"))
    if after is None:
        return
    run_update(update(SimPayment).where(SimPayment.id == payment.id).values(result_code="Authorised"))
    later = delay + after
    notifications.queue(payment, "AUTHORISATION", True, "", later, happened_at=closed_at + timedelta(seconds=later))
    log.info("payment %s: AUTHORISATION true queued after its OFFER_CLOSED", payment.psp_reference)


def expire_overdue(limit=50):
    """Expire every payment past its offer expiry that the shopper never finished. Returns how many."""
    overdue = (
        db.session.execute(
            select(SimPayment)
            .where(SimPayment.status == SimPaymentStatus.AWAITING_SHOPPER, SimPayment.expires_at <= utcnow())
            .order_by(SimPayment.id)
            .limit(limit)
        )
        .scalars()
        .all()
    )
    db.session.commit()  # end the read before the writes, so no transaction spans them
    return sum(1 for payment in overdue if expire(payment))


def expire_soon(psp_reference, seconds, authorise_after_close=None):
    """Bring an unfinished payment's offer expiry forward to `seconds` from now (developer console's
    "abandoned" demo), so OFFER_CLOSED comes in seconds instead of SIMULATOR_OFFER_EXPIRY; with
    `authorise_after_close`, AUTHORISATION true follows it that many seconds later (the "late
    payment" demo). Commits.

    True if the payment was still waiting for the shopper; an offer is only ever brought forward.
    """
    expires_at = utcnow() + timedelta(seconds=max(0.0, float(seconds)))
    values = {"expires_at": expires_at}
    if authorise_after_close is not None:
        values["authorise_after_close"] = float(authorise_after_close)
    changed = (
        run_update(
            update(SimPayment)
            .where(
                SimPayment.psp_reference == psp_reference,
                SimPayment.status == SimPaymentStatus.AWAITING_SHOPPER,
                SimPayment.expires_at > expires_at,
            )
            .values(**values)
        ).rowcount
        == 1
    )
    db.session.commit()
    return changed


def _text(value, max_length):
    return value[:max_length] if isinstance(value, str) and value else None


def _method(value):
    return value.upper() if isinstance(value, str) and value.upper() in ("GET", "POST") else None
