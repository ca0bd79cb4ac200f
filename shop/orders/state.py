"""The order state machine: the one place that changes an order.

Every change is a compare-and-set (`UPDATE … WHERE id = :id AND version = :seen`) inside the
caller's unit of work (shop.db.transaction): when another transaction changed the order first, the
unit raises `Conflict` and runs again from its start, so a webhook and the shopper's return arriving
at the same moment never lose an update. The change's timeline entry and the shopper email it
queues are written in the same transaction: committed together or not at all.

What moves the order (https://docs.adyen.com/payment-methods/knet/api-only):
- the shopper's redirect result only changes what the shopper is shown (`result_code`);
- webhooks decide the order: AUTHORISATION true → paid, false → failed, OFFER_CLOSED → expired;
- the shop itself only starts a payment (created → pending), gives it back when Adyen refused it
  (pending → created), and closes one no result ever came for (shop/orders/reconcile.py).

`decide_webhook` is the whole webhook rule table as a pure function, and `second_payment` the rule
for a cart paid twice; `apply_webhook` applies them. Any order of arrival and any number of
duplicates end in the same status.
"""

import functools
import logging
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import NamedTuple

from sqlalchemy import bindparam, func, select, text, update

from shop import mail
from shop.db import Conflict, db, transaction
from shop.models import AttemptStatus, Order, OrderStatus, PaymentAttempt, utcnow
from shop.money import format_amount
from shop.orders import history
from shop.orders.history import Entry, Kind

log = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class Change:
    """What one compare-and-set writes: new column values (`status` among them when it moves), the
    timeline entry that records it, and the kind of shopper email it queues (shop/mail.py)."""

    values: dict
    entry: Entry
    email: str | None = None

    @property
    def status(self):
        return self.values.get("status")


class Applied(NamedTuple):
    """A change that was written, with the order as it was read before it."""

    order: Order
    old_status: str
    change: Change


def compare_and_set(order_id, decide):
    """In the caller's transaction: read the order, ask `decide(order) -> Change | None`, and write
    the change only if nobody changed the order meanwhile (else raise Conflict: the unit runs again).

    Returns an Applied, or None when `decide` changed nothing; its `order` holds the values as read
    (the new ones are in the change). Writes only the order's columns; `write_entry_and_email` writes
    the rest (webhooks first check for a second payment in between).
    """
    order = db.session.get(Order, order_id, populate_existing=True)
    if order is None:
        raise LookupError(f"order {order_id} does not exist")
    change = decide(order)
    if change is None:
        return None
    old_status = order.status
    values = dict(change.values)
    if values.get("status") == OrderStatus.PAID and old_status not in OrderStatus.MONEY_TAKEN:
        values.setdefault("paid_at", utcnow())
    # On the table, not ORM-enabled: the ORM's bulk path cost more than the statement itself.
    orders = Order.__table__
    written = db.session.execute(
        update(orders)
        .where(orders.c.id == order_id, orders.c.version == order.version)
        .values(version=orders.c.version + 1, updated_at=utcnow(), **values)
    ).rowcount
    if written != 1:
        raise Conflict(f"order {order_id} changed while being updated")
    return Applied(order, old_status, change)


def write_entry_and_email(applied):
    """The timeline entry and the shopper email of a written change, in the same transaction."""
    order = applied.order
    email_id = mail.queue(order, applied.change.email) if applied.change.email else None
    new_status = applied.change.status or applied.old_status
    history.record(order.id, applied.change.entry, applied.old_status, new_status, email_id)


def change_order(order_id, decide):
    """compare_and_set, then its entry and email. Returns the Applied, or None."""
    applied = compare_and_set(order_id, decide)
    if applied is not None:
        write_entry_and_email(applied)
    return applied


# --- What the shop itself does to an order ---------------------------------------------------


@transaction
def start_payment(order_id):
    """created → pending, with the payment attempt (and its Idempotency-Key) saved in the same
    transaction, so that no pending order is ever without one. Returns the attempt's id, or None for
    the caller that lost: a double click or a second tab finds the order pending already."""
    attempt_id = None

    def decide(order):
        nonlocal attempt_id
        if order.status != OrderStatus.CREATED:
            return None
        attempt = PaymentAttempt(order_id=order.id)
        db.session.add(attempt)
        db.session.flush()
        attempt_id = attempt.id
        return Change({"status": OrderStatus.PENDING}, Entry(Kind.PAYMENT_STARTED, attempt_id=attempt.id))

    return attempt_id if change_order(order_id, decide) else None


@transaction
def payment_refused(order_id, attempt_id, status_code, error_code):
    """Adyen refused /payments (4xx): no payment exists, so the order may be paid for again
    (pending → created), with a new attempt and key next time."""
    db.session.execute(
        update(PaymentAttempt)
        .where(PaymentAttempt.id == attempt_id)
        .values(status=AttemptStatus.REJECTED, error_code=error_code)
    )

    def decide(order):
        if order.status != OrderStatus.PENDING:
            return None
        entry = Entry(Kind.PAYMENT_REFUSED, note=f"HTTP {status_code}, errorCode {error_code}", attempt_id=attempt_id)
        return Change({"status": OrderStatus.CREATED}, entry)

    change_order(order_id, decide)


@transaction
def record_shopper_result(order_id, response, attempt_id=None):
    """Store what /payments/details said, for display only (a unit of work, or part of the caller's). Never
    downgrades the shown result, and never changes the order's status: webhooks do that."""
    result_code = response.get("resultCode")

    def decide(order):
        if order.result_code and RESULT_RANK.get(result_code, 0) <= RESULT_RANK.get(order.result_code, 0):
            return None
        values = {
            "result_code": result_code,
            "psp_reference": order.psp_reference or response.get("pspReference"),
            "refusal_reason": response.get("refusalReason"),
            "refusal_reason_code": response.get("refusalReasonCode"),
        }
        detail = {"resultCode": result_code, "pspReference": response.get("pspReference")}
        return Change(values, Entry(Kind.RESULT_SHOWN, detail=detail, attempt_id=attempt_id))

    return change_order(order_id, decide)


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
    notification_id: int | None = field(default=None, compare=False)

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
                           on a paid order, another pspReference -> a refund decision about that second
                           payment (extra_psp_reference), the order still paid by the first;
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
        if status in OrderStatus.MONEY_TAKEN:
            if order.psp_reference and order.psp_reference != event.psp_reference and not order.needs_refund_decision:
                # A second successful payment for one order: the shopper paid twice.
                # Kept, so that the flag's refund gives back this payment and not the first.
                return Decision(
                    {"needs_refund_decision": True, "extra_psp_reference": event.psp_reference},
                    None,
                    f"a second successful payment (the order was paid by {order.psp_reference}): "
                    "needs a refund decision",
                )
            return Decision({}, None, f"no change: the order is already {status}")
        if status in REOPENABLE:
            return Decision(
                {"status": OrderStatus.PAID, "psp_reference": event.psp_reference, "needs_refund_decision": True},
                "late_paid",
                "the payment succeeded after the order was cancelled; needs a refund decision",
            )
        return Decision(
            {"status": OrderStatus.PAID, "psp_reference": event.psp_reference},
            "paid",
            "proceed with the order",
        )
    if event.event_code == AUTHORISATION:
        if status in OPEN:
            return Decision(
                _with_psp({"status": OrderStatus.FAILED}, order, event),
                "failed",
                "order cancelled, the payment failed",
            )
        return Decision({}, None, f"no change: the order is already {status}")
    if event.event_code == OFFER_CLOSED:
        if not event.success:
            return Decision({}, None, "no change: OFFER_CLOSED with success=false closes nothing")
        if status in OPEN:
            return Decision(
                _with_psp({"status": OrderStatus.EXPIRED}, order, event),
                "expired",
                "order cancelled, the payment timed out",
            )
        return Decision({}, None, f"no change: the order is already {status}")
    return Decision({}, None, f"no change: this shop does not act on {event.event_code}")


def second_payment(decision, first_paid):
    """Pure: a webhook that makes an order paid while `first_paid` (another order of the same cart) is
    paid already: the shopper paid twice. The order is paid all the same (the money came), flagged
    as a duplicate of the first, and the shopper is told so."""
    if first_paid is None or decision.changes.get("status") != OrderStatus.PAID:
        return decision
    return Decision(
        dict(decision.changes, duplicate_of_id=first_paid.id),
        "duplicate_paid",
        f"{decision.note}; a second payment for the cart that order {first_paid.reference} paid for "
        "already: flagged duplicate_payment, to refund",
    )


def _with_psp(changes, order, event):
    if not order.psp_reference:
        changes["psp_reference"] = event.psp_reference
    return changes


def _money(value, currency):
    if value is None or not currency:
        return "an unknown amount"
    return format_amount(value, currency)


def order_id_for(reference):
    return db.session.execute(select(Order.id).where(Order.reference == reference)).scalar()


def apply_webhook(order_id, event):
    """Apply a verified webhook to an order, in the caller's transaction (the webhook processor
    marks its notification processed in the same one). Returns the Decision."""
    decision = None

    def decide(order):
        nonlocal decision
        decision = decide_webhook(order, event)
        return _as_change(order, decision, event) if decision.changes else None

    applied = compare_and_set(order_id, decide)
    if applied is None:
        return decision
    if applied.change.status == OrderStatus.PAID and applied.order.cart_ref:
        # After the write, so that on SQLite this transaction holds the write lock; on PostgreSQL
        # the cart's advisory lock makes two orders of one cart paid at once see each other.
        _lock_cart(applied.order.cart_ref)
        first = _first_paid_sibling(applied.order)
        flagged = second_payment(decision, first)
        if flagged is not decision:
            decision = flagged
            db.session.execute(update(Order).where(Order.id == order_id).values(duplicate_of_id=first.id))
            applied = applied._replace(change=_as_change(applied.order, decision, event))
    write_entry_and_email(applied)
    log.info("order %s: %s (%s)", applied.order.reference, decision.note, event.describe())
    return decision


class NotTogether(RuntimeError):
    """The webhooks of a batch cannot be applied together: the caller rolls back and applies them one
    by one (`apply_webhook`), which decides each exactly as before."""


# What `apply_webhooks` reads of an order: what decide_webhook, second_payment and mail.queue look at.
_BATCH_COLUMNS = (
    "id",
    "reference",
    "status",
    "version",
    "amount_value",
    "currency",
    "psp_reference",
    "needs_review",
    "needs_refund_decision",
    "cart_ref",
    "shopper_locale",
    "shopper_email",
)


def apply_webhooks(webhooks):
    """`apply_webhook` for each (merchant reference, WebhookEvent) of `webhooks`, in order, in the
    caller's transaction, with one statement for each step of the whole batch rather than for each
    webhook: one read of the orders, one compare-and-set statement per set of columns changed, one
    insert of the emails and one of the timeline entries. Returns, for each webhook, (order id,
    Decision), or (None, None) when no order has its reference.

    Every compare-and-set is still exact: when one finds its order changed by another transaction
    (or two webhooks of the batch change one order through different columns), or two orders of one
    cart become paid in the batch, it raises NotTogether.
    """
    orders_table = Order.__table__
    references = {reference for reference, _ in webhooks}
    columns = [orders_table.c[name] for name in _BATCH_COLUMNS]
    found = db.session.execute(select(*columns).where(orders_table.c.reference.in_(references)))
    orders = {row.reference: SimpleNamespace(**row._mapping) for row in found}
    results, applied, writes, paid_carts = [], [], {}, {}
    now = utcnow()
    for reference, event in webhooks:
        order = orders.get(reference)
        if order is None:
            results.append((None, None))
            continue
        decision = decide_webhook(order, event)
        results.append((order.id, decision))
        if not decision.changes:
            continue
        before = SimpleNamespace(**vars(order))  # as read: what the email and the sibling check use
        values = dict(decision.changes)
        if values.get("status") == OrderStatus.PAID and order.status != OrderStatus.PAID:
            values.setdefault("paid_at", now)
            if order.cart_ref:
                if order.cart_ref in paid_carts:
                    raise NotTogether("two orders of one cart paid in one batch")
                paid_carts[order.cart_ref] = len(applied)
        keys = tuple(sorted(values))
        writes.setdefault(keys, []).append({**values, "b_id": order.id, "b_version": order.version, "now": now})
        vars(order).update(values, version=order.version + 1)  # a later webhook of the batch sees it
        applied.append([before, decision, event, len(results) - 1])
    for keys, rows in writes.items():
        if db.session.execute(_compare_and_set_many(keys), rows).rowcount != len(rows):
            raise NotTogether("an order changed while the batch was applied")
    if paid_carts:
        _second_payments(applied, paid_carts, results)
    changes = [_as_change(before, decision, event) for before, decision, event, _ in applied]
    email_ids = iter(mail.queue_many([(a[0], c.email) for a, c in zip(applied, changes, strict=True) if c.email]))
    entries = []
    for (before, decision, event, _), change in zip(applied, changes, strict=True):
        email_id = next(email_ids) if change.email else None
        entries.append(history.row(before.id, change.entry, before.status, change.status or before.status, email_id))
        log.info("order %s: %s (%s)", before.reference, decision.note, event.describe())
    history.record_many(entries)
    return results


@functools.cache
def _compare_and_set_many(keys):
    orders = Order.__table__
    return (
        update(orders)
        .where(orders.c.id == bindparam("b_id"), orders.c.version == bindparam("b_version"))
        .values(
            {**{key: bindparam(key) for key in keys}, "version": orders.c.version + 1, "updated_at": bindparam("now")}
        )
    )


def _second_payments(applied, paid_carts, results):
    """apply_webhook's check for a cart paid twice, for the orders of a batch made paid (at most one
    per cart): the carts locked, then one read of the orders paid first."""
    carts = sorted(paid_carts)
    if db.session.get_bind().dialect.name == "postgresql":
        # apply_webhook's lock on each cart, taken in one order so that two workers never wait for each other.
        db.session.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(cart)) FROM unnest(CAST(:carts AS text[])) AS cart"),
            {"carts": carts},
        )
    orders = Order.__table__
    paid = db.session.execute(
        select(orders.c.id, orders.c.reference, orders.c.cart_ref)
        .where(orders.c.cart_ref.in_(carts), orders.c.status == OrderStatus.PAID)
        .order_by(func.coalesce(orders.c.paid_at, orders.c.updated_at), orders.c.id)
    ).all()
    first_of_cart = {}
    for row in paid:  # oldest first: the first paid order of each cart other than the batch's own
        if row.id != applied[paid_carts[row.cart_ref]][0].id:
            first_of_cart.setdefault(row.cart_ref, row)
    for cart, position in paid_carts.items():
        before, decision, event, result = applied[position]
        first = first_of_cart.get(cart)
        flagged = second_payment(decision, first)
        if flagged is not decision:
            db.session.execute(update(Order).where(Order.id == before.id).values(duplicate_of_id=first.id))
            applied[position][1] = flagged
            results[result] = (before.id, flagged)


def _as_change(order, decision, event):
    kind = Kind.TRANSITION if decision.changes.get("status", order.status) != order.status else Kind.REVIEW
    if decision.changes.get("duplicate_of_id"):
        kind = Kind.DUPLICATE_PAYMENT
    entry = Entry(kind, note=decision.note, notification_id=event.notification_id)
    return Change(decision.changes, entry, decision.email)


def _lock_cart(cart_ref):
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:cart))"), {"cart": cart_ref})


def _first_paid_sibling(order):
    return db.session.execute(
        select(Order.id, Order.reference)
        .where(
            Order.cart_ref == order.cart_ref,
            Order.status.in_((OrderStatus.PAID, OrderStatus.REFUND_PENDING, OrderStatus.PARTIALLY_REFUNDED)),
            Order.id != order.id,
        )
        .order_by(func.coalesce(Order.paid_at, Order.updated_at), Order.id)
        .limit(1)
    ).first()
