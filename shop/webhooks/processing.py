"""Storing verified webhooks, and applying them to orders after the answer has gone back.

Docs: https://docs.adyen.com/development-resources/webhooks/handle-webhook-events
("store the message … acknowledge … then apply your business logic") and
https://docs.adyen.com/development-resources/webhooks/best-practices (duplicates, any order).

`store` runs in the request: one INSERT … ON CONFLICT DO NOTHING per item (shop/webhooks/inbox.py),
deduplicated by the unique event_key (pspReference, eventCode, success, originalReference). An item
the shop takes no action on is stored as ignored, or flagged if it is for another merchant account
or environment, with why; the worker never claims either.
`process_due` runs in the background worker on the shared job queue (shop/jobs.py: claims, leases,
retries with a growing delay, at most WEBHOOK_MAX_ATTEMPTS, then "failed" for a person to look at):
each notification's change to its order, the timeline entry, the shopper email and the processed
mark are in one transaction, with those of the rest of its claimed batch (`process_batch`: one
statement per step for the whole batch; when the batch cannot be applied together, each
notification is applied in a transaction of its own). Nothing is lost, nothing is applied twice.
"""

import logging
from typing import NamedTuple

from sqlalchemy import bindparam, insert, select, update

from shop import jobs
from shop.db import db, transaction
from shop.models import Notification, Order, OrderEvent, utcnow
from shop.orders import history, refund_state, state
from shop.orders.history import Kind
from shop.webhooks import inbox

log = logging.getLogger(__name__)

PENDING, PROCESSING, PROCESSED, FAILED = "pending", "processing", "processed", "failed"
IGNORED, FLAGGED = "ignored", "flagged"  # stored with why, never applied


class Stored(NamedTuple):
    """What `store` did with one item."""

    notification_id: int
    duplicate: bool
    ignored: bool


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
    elif item.event_code not in HANDLED_EVENTS and not item.problems:
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


@transaction
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
        raise RuntimeError("a notification insert failed on a constraint but no stored twin was found")
    notification_id, duplicates = counted
    # The order's timeline, if there is such an order: one INSERT … SELECT.
    db.session.execute(
        _DUPLICATE_EVENT,
        {
            "reference": item.merchant_reference,
            "notification_id": notification_id,
            "detail": {"deliveries": duplicates + 1},
            "now": utcnow(),
        },
    )
    return Stored(notification_id, duplicate=True, ignored=False)


def _duplicate_event_statement():
    events, orders = OrderEvent.__table__, Order.__table__
    return insert(events).from_select(
        ["order_id", "kind", "notification_id", "detail", "created_at"],
        select(
            orders.c.id,
            bindparam("kind", Kind.WEBHOOK_DUPLICATE, type_=events.c.kind.type),
            bindparam("notification_id", type_=events.c.notification_id.type),
            bindparam("detail", type_=events.c.detail.type),
            bindparam("now", type_=events.c.created_at.type),
        ).where(orders.c.reference == bindparam("reference", type_=orders.c.reference.type)),
    )


_DUPLICATE_EVENT = _duplicate_event_statement()


HANDLED_EVENTS = state.HANDLED_EVENTS + refund_state.REFUND_EVENTS

QUEUE = jobs.Queue(
    name="webhooks",
    table=Notification.__table__,
    pending=PENDING,
    running=PROCESSING,
    failed=FAILED,
    due_column="next_attempt_at",
    lease_setting="WEBHOOK_LEASE_SECONDS",
    max_attempts_setting="WEBHOOK_MAX_ATTEMPTS",
    backoff=jobs.exponential("WEBHOOK_RETRY_SECONDS"),
    returning=(
        "psp_reference",
        "original_reference",
        "event_code",
        "success",
        "merchant_reference",
        "amount_value",
        "currency",
        "reason",
    ),
)
CLAIM_BATCH = 100  # notifications one worker claims, and applies together, at a time
# Applied a claimed batch at a time (`_apply_together`); any other event code one by one (`process_one`).
BATCHED_EVENTS = frozenset((state.AUTHORISATION, state.OFFER_CLOSED))


def process_due(limit=500):
    """Apply the stored notifications that are due, oldest first. Returns how many were finished."""
    claimed = finished = 0
    while claimed < limit:  # at most `limit` claims per call, failed ones included
        batch = QUEUE.claim(min(CLAIM_BATCH, limit - claimed))
        if not batch:
            break
        claimed += len(batch)
        finished += process_batch(batch)
    return finished


def process_batch(batch):
    """Apply claimed notifications: those of BATCHED_EVENTS in one transaction, the rest one by one.
    When the batch cannot be applied together (an order changed meanwhile, an error in any one of
    them), nothing of it is kept and each is applied one by one: a failing one fails alone.
    Returns how many were finished."""
    together = [notification for notification in batch if notification.event_code in BATCHED_EVENTS]
    alone = [notification for notification in batch if notification.event_code not in BATCHED_EVENTS]
    if len(together) > 1:
        try:
            notes = _apply_together(together)
        except Exception as exc:  # noqa: BLE001 - rolled back: each is applied on its own below
            log.info("%d notifications applied one by one, not together: %s", len(together), jobs.describe_error(exc))
            alone = batch
        else:
            for notification, note in zip(together, notes, strict=True):
                _log_processed(notification, note)
    else:
        alone = batch
    return len(batch) - len(alone) + sum(1 for notification in alone if process_one(notification))


def process_one(notification):
    """Apply one claimed notification. True when finished; False when it failed (retried later)."""
    try:
        note = _apply(notification)
    except jobs.LostClaim:
        log.info("notification %s was taken over by another worker; its change was not kept", notification.id)
        return False
    except Exception as exc:  # noqa: BLE001 - whatever went wrong, keep the row and retry it
        _failed(notification, exc)
        return False
    _log_processed(notification, note)
    return True


def _log_processed(notification, note):
    log.info(
        "webhook processed: pspReference=%s eventCode=%s success=%s merchantReference=%r: %s",
        notification.psp_reference,
        notification.event_code,
        "true" if notification.success else "false",
        notification.merchant_reference,
        note,
    )


def _event(notification):
    return state.WebhookEvent(
        event_code=notification.event_code,
        success=notification.success,
        amount_value=notification.amount_value,
        currency=notification.currency,
        psp_reference=notification.psp_reference,
        reason=notification.reason,
        notification_id=notification.id,
    )


def _no_order(notification, event):
    note = f"no order has merchantReference {notification.merchant_reference!r}: nothing to change"
    log.warning("webhook %s: %s", event.describe(), note)
    return note


@transaction
def _apply_together(batch):
    """What `_apply` does, for each notification of `batch` in turn, in one transaction
    (state.apply_webhooks). Returns the notes."""
    events = [_event(notification) for notification in batch]
    results = state.apply_webhooks([(n.merchant_reference, e) for n, e in zip(batch, events, strict=True)])
    notes, entries = [], []
    for notification, event, (order_id, decision) in zip(batch, events, results, strict=True):
        if order_id is None:
            notes.append(_no_order(notification, event))
            continue
        notes.append(decision.note)
        if not decision.changes:
            entry = history.Entry(Kind.WEBHOOK_PROCESSED, note=decision.note, notification_id=notification.id)
            entries.append(history.row(order_id, entry))
    history.record_many(entries)
    now = utcnow()
    values = [{"processed_at": now, "note": note, "last_error": None} for note in notes]
    if not QUEUE.finish_many(batch, PROCESSED, values):
        raise jobs.LostClaim("a notification of the batch was taken over by another worker")
    return notes


@transaction
def _apply(notification):
    """The change to the order, its timeline entry, its email and the processed mark: one transaction.
    Returns the note."""
    handler = HANDLERS.get(notification.event_code, _apply_payment)
    order_id, note, changed = handler(notification)
    if order_id is not None and not changed:
        history.note(order_id, Kind.WEBHOOK_PROCESSED, note, notification_id=notification.id)
    if not QUEUE.finish(notification, PROCESSED, processed_at=utcnow(), note=note, last_error=None):
        raise jobs.LostClaim(notification.id)  # undo: the worker that took it over applies it
    return note


def _apply_payment(notification):
    """AUTHORISATION, OFFER_CLOSED: the payment's outcome. (order id, note, whether it changed the order)."""
    event = _event(notification)
    order_id = state.order_id_for(notification.merchant_reference)
    if order_id is None:
        return None, _no_order(notification, event), False
    decision = state.apply_webhook(order_id, event)
    return order_id, decision.note, bool(decision.changes)


def _apply_refund(notification):
    """REFUND, REFUND_FAILED, REFUNDED_REVERSED, CANCEL_OR_REFUND, CANCELLATION: a refund's outcome,
    matched by originalReference and the refund's reference (shop/orders/refund_state.py)."""
    event = refund_state.RefundEvent(
        event_code=notification.event_code,
        success=notification.success,
        psp_reference=notification.psp_reference,
        original_reference=notification.original_reference or "",
        merchant_reference=notification.merchant_reference,
        amount_value=notification.amount_value,
        currency=notification.currency,
        reason=notification.reason,
        notification_id=notification.id,
    )
    order_id, note, changed = refund_state.apply_refund_webhook(event)
    if order_id is None:
        log.warning("webhook %s %s: %s", notification.event_code, notification.psp_reference, note)
    return order_id, note, changed


# Which rules apply a stored notification, by eventCode (anything else is stored as ignored).
HANDLERS = {
    state.AUTHORISATION: _apply_payment,
    state.OFFER_CLOSED: _apply_payment,
    **{code: _apply_refund for code in refund_state.REFUND_EVENTS},
}


def _failed(notification, exc):
    """Record a failed attempt: retry later with a growing delay, or give up for a person to look at."""
    error = jobs.describe_error(exc)
    try:
        delay = QUEUE.retry(notification, error)
    except Exception:  # noqa: BLE001 - the database itself is down: the lease ends and it is retried
        log.warning("could not record the failure of notification %s; its lease will expire", notification.id)
        delay = 0
    log.warning(
        "webhook processing failed: pspReference=%s eventCode=%s attempt %d%s: %s",
        notification.psp_reference,
        notification.event_code,
        notification.attempts,
        " (given up, status failed)" if delay is None else ", will retry",
        error,
    )


@transaction
def requeue(notification_id):
    """Queue a stored, finished notification to be applied again (a replay from the console or CLI).

    Only a processed or failed row is taken (never one being processed). Safe to repeat: the state
    machine makes a webhook already applied a no-op ("no change: the order is already paid").
    Returns the row's previous status, or None if there is no such row or it was not finished.
    """
    row = db.session.execute(
        select(Notification.status, Notification.merchant_reference).where(Notification.id == notification_id)
    ).first()
    if row is None or row.status not in (PROCESSED, FAILED):
        return None
    if not QUEUE.requeue(notification_id, (row.status,)):
        return None
    order_id = state.order_id_for(row.merchant_reference) or refund_state.order_id_of_refund(row.merchant_reference)
    if order_id is not None:
        history.note(order_id, Kind.WEBHOOK_REPLAYED, notification_id=notification_id)
    return row.status


def replay_now(notification_id):
    """Requeue a notification and apply it in this process, unless a background worker is quicker.
    Returns its previous status, or None (see `requeue`)."""
    previous = requeue(notification_id)
    if previous is not None:
        claimed = QUEUE.claim_one(notification_id)
        if claimed is not None:
            process_one(claimed)
    return previous
