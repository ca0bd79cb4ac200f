"""Storing verified webhooks, and applying them to orders after the answer has gone back.

Docs: https://docs.adyen.com/development-resources/webhooks/handle-webhook-events
("store the message … acknowledge … then apply your business logic") and
https://docs.adyen.com/development-resources/webhooks/best-practices (duplicates, any order).

`store` runs in the request: one INSERT … ON CONFLICT DO NOTHING per item (shop/webhooks/inbox.py),
deduplicated by the unique event_key (pspReference, eventCode, success, originalReference). An item
the shop takes no action on is stored as ignored, or flagged if it is for another merchant account
or environment, with why; the worker never claims either.
`process_due` runs in the background worker: it claims due rows in batches with a conditional
UPDATE (pending → processing, attempts + 1, a lease in next_attempt_at), so several workers (threads,
processes, hosts) never process one row twice and a worker that died is replaced when its lease
ends; each row is then marked processed in the same transaction as the change it makes to its order.
A failure is retried with a growing delay, at most WEBHOOK_MAX_ATTEMPTS times, then the row is
"failed" for a person to look at. Nothing is lost. (bench/README.md: why the statements look so.)

Tunables (app.config, with defaults): WEBHOOK_RETRY_SECONDS (10, doubled each time, at most an
hour), WEBHOOK_MAX_ATTEMPTS (10), WEBHOOK_LEASE_SECONDS (120).
"""

import logging
from datetime import timedelta
from typing import NamedTuple

from flask import current_app
from sqlalchemy import and_, bindparam, insert, inspect, or_, select, update

from shop.db import db
from shop.models import Notification, Order, OrderEvent, utcnow
from shop.orders import state
from shop.webhooks import inbox

log = logging.getLogger(__name__)

PENDING, PROCESSING, PROCESSED, FAILED = "pending", "processing", "processed", "failed"
IGNORED, FLAGGED = "ignored", "flagged"  # stored with why, never applied


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


def ignore_reason(item, mismatch=None):
    """Why an item is acknowledged but never applied, or None when it is processed. `mismatch`: the
    receiver's reason why it is not for this shop (another merchant account or environment)."""
    reasons = [mismatch] if mismatch else []
    reasons += [f"fields this shop cannot use: {', '.join(item.problems)}"] if item.problems else []
    if item.webhook_type is not None:
        reasons.append(f"a {item.event_code} webhook (not a Standard notification), which this shop does not act on")
    elif item.psp_reference.startswith("test_"):
        # Customer Area "Test configuration" sends pspReferences like test_AUTHORISATION_4.
        reasons.append("a test webhook from the Customer Area")
    elif item.event_code not in state.HANDLED_EVENTS and not item.problems:
        reasons.append(f"this shop does not act on {item.event_code}")
    return f"{'; '.join(reasons)}: acknowledged, not processed" if reasons else None


def store(item, raw_body, mismatch=None):
    """Store one authenticated item. A duplicate delivery only counts up.

    A new event is one INSERT … ON CONFLICT DO NOTHING, committed on its own
    (shop/webhooks/inbox.py). The order's timeline shows the stored row itself
    (shop/console/timeline.py), so nothing else is written while Adyen waits for the answer.
    Raises on a storage failure (the receiver answers 500 so that Adyen delivers it again).
    """
    reason = ignore_reason(item, mismatch)
    now = utcnow()
    values = {
        "event_key": item.event_key,
        "psp_reference": item.psp_reference,
        "original_reference": item.original_reference,
        "event_code": item.event_code,
        "success": item.success,
        "merchant_reference": item.merchant_reference,
        "merchant_account": item.merchant_account,
        "amount_value": item.amount_value,
        "currency": item.currency,
        "reason": item.reason,
        "event_date": item.event_date,
        "raw_body": raw_body,
        "duplicates": 0,
        "status": FLAGGED if mismatch else IGNORED if reason else PENDING,
        "attempts": 0,
        "processed_at": now if reason else None,
        "note": reason,
        "next_attempt_at": now,
        "received_at": now,
    }
    notification_id = inbox.insert(values)
    if notification_id is None:
        # The same event is stored already: acknowledge it and count it, no second effect.
        return _count_duplicate(item)
    return Stored(notification_id, duplicate=False, ignored=bool(reason))


def _count_duplicate(item):
    counted = db.session.execute(
        update(Notification)
        .where(Notification.event_key == item.event_key)
        .values(duplicates=Notification.duplicates + 1)
        .returning(Notification.id, Notification.duplicates),
        execution_options={"synchronize_session": False},
    ).first()
    if counted is None:
        # The constraint fired but the row is not there: not a duplicate, a real failure.
        db.session.rollback()
        raise RuntimeError("a notification insert failed on a constraint but no stored twin was found")
    notification_id, duplicates = counted
    _add_event_for_order(
        item.merchant_reference,
        "webhook",
        f"Webhook {item.describe()} delivered again (delivery {duplicates + 1}): verified; "
        "a duplicate, acknowledged with no second effect",
        {"notification_id": notification_id, "stage": "duplicate", "duplicate": True},
        utcnow(),
    )
    db.session.commit()
    return Stored(notification_id, duplicate=True, ignored=False)


def _add_event_for_order(reference, kind, summary, detail, now):
    """Add a timeline entry to the order with this reference, if there is one: one INSERT … SELECT."""
    db.session.connection().execute(
        _ADD_EVENT, {"reference": reference, "kind": kind, "summary": summary, "detail": detail, "now": now}
    )


def _add_event_statement():
    events, orders = OrderEvent.__table__, Order.__table__
    return insert(events).from_select(
        ["order_id", "kind", "summary", "detail", "created_at"],
        select(
            orders.c.id,
            bindparam("kind", type_=events.c.kind.type),
            bindparam("summary", type_=events.c.summary.type),
            bindparam("detail", type_=events.c.detail.type),
            bindparam("now", type_=events.c.created_at.type),
        ).where(orders.c.reference == bindparam("reference", type_=orders.c.reference.type)),
    )


_ADD_EVENT = _add_event_statement()


def _order_id(reference):
    return db.session.execute(select(Order.id).where(Order.reference == reference)).scalar()


def _due_condition(now):
    return or_(
        and_(Notification.status == PENDING, Notification.next_attempt_at <= now),
        # A worker that died while processing: its lease (next_attempt_at) has ended.
        and_(Notification.status == PROCESSING, Notification.next_attempt_at <= now),
    )


CLAIM_BATCH = 20  # notifications one worker claims at a time (one UPDATE, one commit)


def process_due(limit=100):
    """Apply the stored notifications that are due, oldest first. Returns how many were finished."""
    claimed = finished = 0
    while claimed < limit:  # at most `limit` claims per call, failed ones included
        batch = claim_due(min(CLAIM_BATCH, limit - claimed))
        if not batch:
            break
        claimed += len(batch)
        for notification in batch:
            if process_one(notification):
                finished += 1
    return finished


_CLAIMED_COLUMNS = (
    Notification.id,
    Notification.attempts,
    Notification.psp_reference,
    Notification.event_code,
    Notification.success,
    Notification.merchant_reference,
    Notification.amount_value,
    Notification.currency,
    Notification.reason,
)


def claim_due(limit=CLAIM_BATCH):
    """Claim up to `limit` due notifications, oldest first, in one statement and one commit:
    `UPDATE … SET status = 'processing', attempts = attempts + 1, <lease> WHERE id IN (due ones)
    RETURNING …`. The WHERE is evaluated again on each row as it is locked, so two workers (two
    threads, processes or hosts) never claim one row twice; on PostgreSQL the due rows are picked
    FOR UPDATE SKIP LOCKED, so a second worker takes the next ones instead of waiting.
    Rows whose last attempt ran out of lease at WEBHOOK_MAX_ATTEMPTS become failed first."""
    config = current_app.config
    now = utcnow()
    max_attempts = config.get("WEBHOOK_MAX_ATTEMPTS", 10)
    lease = timedelta(seconds=config.get("WEBHOOK_LEASE_SECONDS", 120))
    # Their last attempt's lease ended without an answer: stop, for a person to look at.
    db.session.execute(
        update(Notification)
        .where(_due_condition(now), Notification.attempts >= max_attempts)
        .values(status=FAILED, last_error="the last attempt did not finish (its worker stopped)"),
        execution_options={"synchronize_session": False},
    )
    due = (
        select(Notification.id)
        .where(_due_condition(now), Notification.attempts < max_attempts)
        .order_by(Notification.id)
        .limit(limit)
        .with_for_update(skip_locked=True)  # PostgreSQL; SQLite has one writer at a time anyway
    )
    rows = db.session.execute(
        update(Notification)
        .where(Notification.id.in_(due.scalar_subquery()), _due_condition(now), Notification.attempts < max_attempts)
        .values(status=PROCESSING, attempts=Notification.attempts + 1, next_attempt_at=now + lease)
        .returning(*_CLAIMED_COLUMNS),
        execution_options={"synchronize_session": False},
    ).all()
    db.session.commit()
    return sorted((Claimed(*row) for row in rows), key=lambda claimed: claimed.id)


def claim(notification_id, seen_attempts):
    """One row by id (the console's replay uses it; `process_due` claims in batches with `claim_due`):
    pending (or an expired lease) → processing, atomically. A Claimed snapshot, or None if
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
    marked = []

    def mark_processed(order, decision):
        # In the transaction that changes the order: the change and this mark commit together.
        marked.append(_mark_processed(notification, decision.note, order.id, description))

    try:
        applied = state.apply_event(reference, event, after=mark_processed)
    except Exception as exc:  # noqa: BLE001 - whatever went wrong, keep the row and retry it
        db.session.rollback()
        _failed(notification, exc)
        return False
    if marked:
        _log_processed(notification, applied.decision.note)
        return True

    if applied.order is None:
        note = f"no order has merchantReference {reference!r}: nothing to change"
        log.warning("webhook %s: %s", description, note)
        order_id = None
    else:
        # The id without reloading the order (the commit expired it).
        note, order_id = applied.decision.note, inspect(applied.order).identity[0]
    try:
        return _finish(notification, note, order_id=order_id, description=description)
    except Exception as exc:  # noqa: BLE001 - applying again is a no-op, so a retry is safe
        db.session.rollback()
        _failed(notification, exc)
        return False


def _finish(notification, note, order_id, description=None):
    """processing → processed, if this worker still holds the claim, with the timeline entry."""
    _mark_processed(notification, note, order_id, description)
    db.session.commit()
    _log_processed(notification, note)
    return True


def _mark_processed(notification, note, order_id, description):
    """The UPDATE (and timeline entry) of `_finish`, in the caller's transaction. True if this
    worker still held the claim."""
    notifications = Notification.__table__  # Core, as state.add_event
    done = db.session.execute(
        update(notifications)
        .where(
            notifications.c.id == notification.id,
            notifications.c.status == PROCESSING,
            notifications.c.attempts == notification.attempts,
        )
        .values(status=PROCESSED, processed_at=utcnow(), note=note, last_error=None)
    ).rowcount
    if done == 1 and order_id is not None:
        db.session.execute(
            insert(OrderEvent.__table__),
            {
                "order_id": order_id,
                "kind": "webhook",
                "summary": f"Webhook {description} processed: {note}",
                "detail": {"notification_id": notification.id, "stage": "processed"},
                "created_at": utcnow(),
            },
        )
    return done == 1


def _log_processed(notification, note):
    log.info(
        "webhook processed: pspReference=%s eventCode=%s success=%s merchantReference=%r: %s",
        notification.psp_reference,
        notification.event_code,
        "true" if notification.success else "false",
        notification.merchant_reference,
        note,
    )


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


def requeue(notification_id):
    """Queue a stored, finished notification to be applied again (a replay from the console or CLI).

    Only a processed or failed row is taken (never one being processed). Safe to repeat: the state
    machine makes a webhook already applied a no-op ("no change: the order is already paid").
    Returns the row's previous status, or None if there is no such row or it was not finished.
    """
    row = db.session.get(Notification, notification_id)
    if row is None or row.status not in (PROCESSED, FAILED):
        db.session.rollback()
        return None
    previous = row.status
    changed = db.session.execute(
        update(Notification)
        .where(Notification.id == notification_id, Notification.status == previous)
        .values(status=PENDING, attempts=0, next_attempt_at=utcnow(), last_error=None),
        execution_options={"synchronize_session": False},
    ).rowcount
    if changed != 1:
        db.session.rollback()
        return None
    order_id = _order_id(row.merchant_reference)
    if order_id is not None:
        state.add_event(
            order_id,
            "webhook",
            f"Webhook {row.event_code} success={'true' if row.success else 'false'} "
            f"(pspReference {row.psp_reference}) replayed by a developer: queued to be applied again",
            {"notification_id": notification_id, "stage": "replayed", "replay": True},
        )
    db.session.commit()
    return previous
