"""Storing verified webhooks, and applying them to orders after the answer has gone back.

Docs: https://docs.adyen.com/development-resources/webhooks/handle-webhook-events
("store the message … acknowledge … then apply your business logic") and
https://docs.adyen.com/development-resources/webhooks/best-practices (duplicates, any order).

`store` runs in the request: one insert per item, deduplicated by the unique constraint on
(pspReference, eventCode, success, originalReference). `process_due` runs in the background worker:
it claims due rows with a conditional UPDATE (pending → processing, attempts + 1, a lease in
next_attempt_at), so several workers never process one row twice and a worker that died is
replaced when its lease ends. A failure is retried with a growing delay, at most
WEBHOOK_MAX_ATTEMPTS times, then the row is "failed" for a person to look at. Nothing is lost.

Tunables (app.config, with defaults): WEBHOOK_RETRY_SECONDS (10, doubled each time, at most an
hour), WEBHOOK_MAX_ATTEMPTS (10), WEBHOOK_LEASE_SECONDS (120).
"""

import logging
from datetime import timedelta
from typing import NamedTuple

from flask import current_app
from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError

from shop.db import db
from shop.models import Notification, Order, utcnow
from shop.orders import state

log = logging.getLogger(__name__)

PENDING, PROCESSING, PROCESSED, IGNORED, FAILED = "pending", "processing", "processed", "ignored", "failed"


class Stored(NamedTuple):
    """What `store` did with one item."""

    notification_id: int
    duplicate: bool
    ignored: bool


class Claimed(NamedTuple):
    """A claimed notification, copied out of the session so that a rollback cannot expire it."""

    id: int
    attempts: int  # after this claim; also the claim's token
    psp_reference: str
    event_code: str
    success: bool
    merchant_reference: str
    amount_value: int | None
    currency: str | None
    reason: str | None

    def event(self):
        return state.WebhookEvent(
            event_code=self.event_code,
            success=self.success,
            amount_value=self.amount_value,
            currency=self.currency,
            psp_reference=self.psp_reference,
            reason=self.reason,
        )


def ignore_reason(item):
    """Why an item is acknowledged but never applied, or None when it is processed."""
    if item.psp_reference.startswith("test_"):
        # Customer Area "Test configuration" sends pspReferences like test_AUTHORISATION_4.
        return "a test webhook from the Customer Area: acknowledged, not processed"
    if item.event_code not in state.HANDLED_EVENTS:
        return f"this shop does not act on {item.event_code}: acknowledged, not processed"
    return None


def store(item, raw_body):
    """Store one verified item in its own transaction. A duplicate delivery only counts up.

    Raises on a storage failure (the view answers 500 so that Adyen delivers it again).
    """
    reason = ignore_reason(item)
    now = utcnow()
    notification = Notification(
        psp_reference=item.psp_reference,
        original_reference=item.original_reference,
        event_code=item.event_code,
        success=item.success,
        merchant_reference=item.merchant_reference,
        merchant_account=item.merchant_account,
        amount_value=item.amount_value,
        currency=item.currency,
        reason=item.reason,
        event_date=item.event_date,
        raw_body=raw_body,
        status=IGNORED if reason else PENDING,
        processed_at=now if reason else None,
        note=reason,
        next_attempt_at=now,
        received_at=now,
    )
    # The insert comes first in the transaction: on SQLite it takes the write lock before any read,
    # so concurrent deliveries queue on busy_timeout instead of failing on a stale snapshot.
    db.session.add(notification)
    try:
        db.session.flush()
    except IntegrityError:
        # Another delivery of the same event is stored (perhaps at this very moment, in another
        # thread): the unique constraint decided. Acknowledge it and count it, no second effect.
        db.session.rollback()
        return _count_duplicate(item)
    order_id = _order_id(item.merchant_reference)
    if order_id is not None:
        verdict = reason or "queued for processing"
        state.add_event(
            order_id,
            "webhook",
            f"Webhook {item.describe()} received: basic auth and HMAC signature verified; first delivery, {verdict}",
            {"notification_id": notification.id, "duplicate": False},
        )
    db.session.commit()
    return Stored(notification.id, duplicate=False, ignored=bool(reason))


def _count_duplicate(item):
    key = (
        Notification.psp_reference == item.psp_reference,
        Notification.event_code == item.event_code,
        Notification.success == item.success,
        Notification.original_reference == item.original_reference,
    )
    counted = db.session.execute(
        update(Notification).where(*key).values(duplicates=Notification.duplicates + 1)
    ).rowcount
    if counted != 1:
        # The constraint fired but the row is not there: not a duplicate, a real failure.
        db.session.rollback()
        raise RuntimeError("a notification insert failed on a constraint but no stored twin was found")
    notification_id, duplicates = db.session.execute(
        select(Notification.id, Notification.duplicates).where(*key)
    ).one()
    order_id = _order_id(item.merchant_reference)
    if order_id is not None:
        state.add_event(
            order_id,
            "webhook",
            f"Webhook {item.describe()} delivered again (delivery {duplicates + 1}): verified; "
            "a duplicate, acknowledged with no second effect",
            {"notification_id": notification_id, "duplicate": True},
        )
    db.session.commit()
    return Stored(notification_id, duplicate=True, ignored=False)


def _order_id(reference):
    return db.session.execute(select(Order.id).where(Order.reference == reference)).scalar()


def _due_condition(now):
    return or_(
        and_(Notification.status == PENDING, Notification.next_attempt_at <= now),
        # A worker that died while processing: its lease (next_attempt_at) has ended.
        and_(Notification.status == PROCESSING, Notification.next_attempt_at <= now),
    )


def process_due(limit=100):
    """Apply the stored notifications that are due, oldest first. Returns how many were finished."""
    now = utcnow()
    due = db.session.execute(
        select(Notification.id, Notification.attempts)
        .where(_due_condition(now))
        .order_by(Notification.id)
        .limit(limit)
    ).all()
    db.session.rollback()
    finished = 0
    for notification_id, seen_attempts in due:
        notification = claim(notification_id, seen_attempts)
        if notification is not None and process_one(notification):
            finished += 1
    return finished


def claim(notification_id, seen_attempts):
    """pending (or an expired lease) → processing, atomically. A Claimed snapshot, or None if
    another worker won it (or it has run out of attempts)."""
    config = current_app.config
    now = utcnow()
    if seen_attempts >= config.get("WEBHOOK_MAX_ATTEMPTS", 10):
        # Its last attempt's lease ended without an answer: stop, for a person to look at.
        db.session.execute(
            update(Notification)
            .where(Notification.id == notification_id, Notification.attempts == seen_attempts, _due_condition(now))
            .values(status=FAILED, last_error="the last attempt did not finish (its worker stopped)")
        )
        db.session.commit()
        return None
    lease = timedelta(seconds=config.get("WEBHOOK_LEASE_SECONDS", 120))
    claimed = db.session.execute(
        update(Notification)
        .where(Notification.id == notification_id, Notification.attempts == seen_attempts, _due_condition(now))
        .values(status=PROCESSING, attempts=seen_attempts + 1, next_attempt_at=now + lease)
    ).rowcount
    db.session.commit()
    if claimed != 1:
        return None
    row = db.session.get(Notification, notification_id)
    claimed = Claimed(
        row.id,
        row.attempts,
        row.psp_reference,
        row.event_code,
        row.success,
        row.merchant_reference,
        row.amount_value,
        row.currency,
        row.reason,
    )
    db.session.rollback()
    return claimed


def process_one(notification):
    """Apply one claimed notification. True when finished; False when it failed (retried later)."""
    event = notification.event()
    description = event.describe()
    reference = notification.merchant_reference
    try:
        applied = state.apply_event(reference, event)
    except Exception as exc:  # noqa: BLE001 - whatever went wrong, keep the row and retry it
        db.session.rollback()
        _failed(notification, exc)
        return False

    if applied.order is None:
        note = f"no order has merchantReference {reference!r}: nothing to change"
        log.warning("webhook %s: %s", description, note)
        order_id = None
    else:
        note, order_id = applied.decision.note, applied.order.id
    try:
        return _finish(notification, note, order_id=order_id, description=description)
    except Exception as exc:  # noqa: BLE001 - applying again is a no-op, so a retry is safe
        db.session.rollback()
        _failed(notification, exc)
        return False


def _finish(notification, note, order_id, description=None):
    """processing → processed, if this worker still holds the claim, with the timeline entry."""
    done = db.session.execute(
        update(Notification)
        .where(
            Notification.id == notification.id,
            Notification.status == PROCESSING,
            Notification.attempts == notification.attempts,
        )
        .values(status=PROCESSED, processed_at=utcnow(), note=note, last_error=None)
    ).rowcount
    if done == 1 and order_id is not None:
        state.add_event(
            order_id,
            "webhook",
            f"Webhook {description} processed: {note}",
            {"notification_id": notification.id},
        )
    db.session.commit()
    log.info(
        "webhook processed: pspReference=%s eventCode=%s success=%s merchantReference=%r: %s",
        notification.psp_reference,
        notification.event_code,
        "true" if notification.success else "false",
        notification.merchant_reference,
        note,
    )
    return True


def _failed(notification, exc):
    """Record a failed attempt: retry later with a growing delay, or give up for a person to look at."""
    config = current_app.config
    error = describe_error(exc)
    max_attempts = config.get("WEBHOOK_MAX_ATTEMPTS", 10)
    mine = (
        Notification.id == notification.id,
        Notification.status == PROCESSING,
        Notification.attempts == notification.attempts,
    )
    try:
        if notification.attempts >= max_attempts:
            values = {"status": FAILED, "last_error": error}
        else:
            delay = min(config.get("WEBHOOK_RETRY_SECONDS", 10) * 2 ** (notification.attempts - 1), 3600)
            values = {
                "status": PENDING,
                "last_error": error,
                "next_attempt_at": utcnow() + timedelta(seconds=delay),
            }
        db.session.execute(update(Notification).where(*mine).values(**values))
        db.session.commit()
    except Exception:  # noqa: BLE001 - the database itself is down: the lease ends and it is retried
        db.session.rollback()
        log.warning("could not record the failure of notification %s; its lease will expire", notification.id)
    log.warning(
        "webhook processing failed: pspReference=%s eventCode=%s attempt %d of %d%s: %s",
        notification.psp_reference,
        notification.event_code,
        notification.attempts,
        max_attempts,
        " (given up, status failed)" if notification.attempts >= max_attempts else ", will retry",
        error,
    )


def describe_error(exc):
    """A short error text that never carries SQL parameters (a raw body holds the signature)."""
    original = getattr(exc, "orig", None)
    text = str(original) if original is not None else str(exc)
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:300]
