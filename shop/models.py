"""The shop's tables: orders, their payment attempts, every Adyen call, webhooks, emails, timeline.

Money is an integer in minor units (fils for KWD: 12.500 KWD is 12500). Never a float.
"""

import secrets
import uuid
from datetime import UTC, datetime

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from shop.db import db


def utcnow():
    return datetime.now(UTC)


def new_order_token():
    """The unguessable token that names an order in its return and result URLs."""
    return secrets.token_urlsafe(24)


class OrderStatus:
    """The order's own state; only verified webhooks move it to a final state (see shop/orders)."""

    CREATED = "created"  # cart snapshot and shopper details saved, no payment yet
    PENDING = "pending"  # /payments called; waiting for the shopper and the webhook
    PAID = "paid"  # AUTHORISATION success=true: proceed with the order
    FAILED = "failed"  # AUTHORISATION success=false: cancelled, payment failed
    EXPIRED = "expired"  # OFFER_CLOSED: cancelled, payment timed out
    # After the payment (shop/orders/refunds.py): the refund notifications decide these too.
    REFUND_PENDING = "refund_pending"  # a refund or reversal asked for, its notification not come yet
    PARTIALLY_REFUNDED = "partially_refunded"  # some of the money given back
    REFUNDED = "refunded"  # all of it given back

    # The money came: the payment was authorised, whatever was refunded since.
    MONEY_TAKEN = (PAID, REFUND_PENDING, PARTIALLY_REFUNDED, REFUNDED)
    FINAL = (PAID, FAILED, EXPIRED, REFUND_PENDING, PARTIALLY_REFUNDED, REFUNDED)


class Order(db.Model):
    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The merchant reference sent to Adyen: unique, at most 80 characters.
    reference: Mapped[str] = mapped_column(String(80), unique=True)
    token: Mapped[str] = mapped_column(String(64), unique=True, default=new_order_token)
    # One checkout form session makes one order, whatever the number of clicks or tabs.
    checkout_key: Mapped[str] = mapped_column(String(64), unique=True)
    # The shopper's cart (one per browser session, a new one after it was paid for): two orders of
    # one cart that are both paid mean the shopper paid twice.
    cart_ref: Mapped[str | None] = mapped_column(String(32), index=True)
    status: Mapped[str] = mapped_column(String(24), default=OrderStatus.CREATED)
    # Compare-and-set counter: every state change is `UPDATE … WHERE version = :seen`.
    version: Mapped[int] = mapped_column(Integer, default=0)

    amount_value: Mapped[int] = mapped_column(Integer)  # minor units
    currency: Mapped[str] = mapped_column(String(3), default="KWD")
    lines: Mapped[list] = mapped_column(JSON)  # [{product_id, name, unit_price, quantity, line_total}]

    shopper_first_name: Mapped[str] = mapped_column(String(80))
    shopper_last_name: Mapped[str] = mapped_column(String(80))
    shopper_email: Mapped[str] = mapped_column(String(256))
    shopper_phone: Mapped[str] = mapped_column(String(20))  # +965XXXXXXXX
    shopper_locale: Mapped[str] = mapped_column(String(10), default="en-KW")

    # What the shopper was told after the redirect: display only, never the order's truth.
    result_code: Mapped[str | None] = mapped_column(String(32))
    psp_reference: Mapped[str | None] = mapped_column(String(32))
    refusal_reason: Mapped[str | None] = mapped_column(String(200))
    refusal_reason_code: Mapped[str | None] = mapped_column(String(8))

    # Flags for a person to look at.
    needs_refund_decision: Mapped[bool] = mapped_column(Boolean, default=False)
    needs_review: Mapped[bool] = mapped_column(Boolean, default=False)
    # The last refund failed (REFUND success=false, REFUND_FAILED, REFUNDED_REVERSED): its reason is on
    # the refund. Cleared when a new refund is asked for.
    refund_failed: Mapped[bool] = mapped_column(Boolean, default=False)
    # A second successful payment for this already-paid order (another pspReference): the one a
    # refund decision is about, so the flagged order's refund gives that payment back, not the first.
    extra_psp_reference: Mapped[str | None] = mapped_column(String(32))
    # Set when this order was paid while another order of its cart already was: a second payment.
    duplicate_of_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"))
    # Why the order is in its status when no webhook put it there: "unconfirmed", closed by the shop's
    # reconciliation (shop/orders/reconcile.py) after no result came for RECONCILE_AFTER_SECONDS.
    status_reason: Mapped[str | None] = mapped_column(String(32))
    paid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    attempts: Mapped[list["PaymentAttempt"]] = relationship(
        back_populates="order", order_by="PaymentAttempt.id", cascade="all, delete-orphan"
    )

    @property
    def shopper_name(self):
        return f"{self.shopper_first_name} {self.shopper_last_name}"

    @property
    def duplicate_payment(self):
        return self.duplicate_of_id is not None

    @property
    def flags(self):
        """The flags a person should act on, in words (the console and `flask orders list`)."""
        flags = []
        if self.needs_review:
            flags.append("needs review")
        if self.needs_refund_decision and self.status == OrderStatus.PAID:
            # Once a refund is asked for, the decision is made (shown again if the order comes back to paid).
            flags.append("needs refund decision")
        if self.duplicate_of_id is not None:
            flags.append(f"duplicate_payment of order #{self.duplicate_of_id}")
        if self.refund_failed:
            flags.append("refund_failed")
        return flags

    @property
    def payments(self):
        """The pspReferences of the payments this order took: its own, then a second one if it came."""
        return [psp for psp in (self.psp_reference, self.extra_psp_reference) if psp]

    @property
    def payment_to_refund(self):
        """The payment a refund gives back unless another is named: the second payment while its refund
        decision is open (that one was extra), else the order's own."""
        if self.needs_refund_decision and self.extra_psp_reference:
            return self.extra_psp_reference
        return self.psp_reference

    @property
    def latest_attempt(self):
        return self.attempts[-1] if self.attempts else None


class AttemptStatus:
    CALLING = "calling"  # Idempotency-Key saved, /payments under way (or its outcome unknown)
    REDIRECTED = "redirected"  # action received, shopper sent to KNET
    RETURNED = "returned"  # /payments/details answered
    REJECTED = "rejected"  # Adyen answered 4xx: final for this attempt


class PaymentAttempt(db.Model):
    __tablename__ = "payment_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    # Saved before /payments is called, and reused for every retry of this attempt.
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True, default=lambda: str(uuid.uuid4()))
    status: Mapped[str] = mapped_column(String(16), default=AttemptStatus.CALLING)
    action_type: Mapped[str | None] = mapped_column(String(32))
    action_method: Mapped[str | None] = mapped_column(String(8))
    action_url: Mapped[str | None] = mapped_column(Text)
    action_data: Mapped[dict | None] = mapped_column(JSON)
    psp_reference: Mapped[str | None] = mapped_column(String(32))
    result_code: Mapped[str | None] = mapped_column(String(32))
    error_code: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    order: Mapped[Order] = relationship(back_populates="attempts")


class RefundStatus:
    REQUESTED = "requested"  # saved with its Idempotency-Key; the call under way, or its outcome unknown
    RECEIVED = "received"  # Adyen answered `received`: an acknowledgement, not the outcome
    SUCCEEDED = "succeeded"  # REFUND / CANCEL_OR_REFUND / CANCELLATION success=true
    FAILED = "failed"  # success=false, REFUND_FAILED, REFUNDED_REVERSED, or Adyen refused the request

    OPEN = (REQUESTED, RECEIVED)
    # What counts against what is left to refund: a failed refund gave nothing back.
    COUNTED = (REQUESTED, RECEIVED, SUCCEEDED)


class RefundKind:
    REFUND = "refund"  # POST /payments/{pspReference}/refunds, an amount
    REVERSAL = "reversal"  # POST /payments/{pspReference}/reversals: cancel or refund, all of it


class Refund(db.Model):
    """Money given back for a paid order: one call to /refunds or /reversals and what came of it.

    Saved with its own reference and Idempotency-Key before the call, so that a retry (after a
    timeout, a double click, a second console) can only ever repeat the same request.
    """

    __tablename__ = "refunds"
    __table_args__ = (UniqueConstraint("order_id", "request_key", name="uq_refunds_order_id_request_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16), default=RefundKind.REFUND)
    amount_value: Mapped[int] = mapped_column(Integer)  # minor units (fils)
    currency: Mapped[str] = mapped_column(String(3), default="KWD")
    # merchantRefundReason: FRAUD, CUSTOMER REQUEST, RETURN, DUPLICATE, OTHER (or none).
    reason: Mapped[str | None] = mapped_column(String(32))
    # The modification's `reference` sent to Adyen (its webhooks may carry it as merchantReference).
    reference: Mapped[str] = mapped_column(String(80), unique=True)
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True, default=lambda: str(uuid.uuid4()))
    # The asker's own key (a console form, a CLI run): the same one twice is the same refund.
    request_key: Mapped[str] = mapped_column(String(64), default=lambda: str(uuid.uuid4()))
    # The payment it gives money back from (the path's paymentPspReference): the order's own, or the
    # second payment an order flagged needs_refund_decision took (Order.extra_psp_reference).
    payment_psp_reference: Mapped[str] = mapped_column(String(64))
    # Adyen's pspReference of the modification (from its answer or its notification).
    psp_reference: Mapped[str | None] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), default=RefundStatus.REQUESTED)
    # Adyen's reason when it failed (the notification's `reason`, or the API error).
    failure_reason: Mapped[str | None] = mapped_column(Text)
    requested_by: Mapped[str | None] = mapped_column(String(32))  # console, cli, auto, Adyen
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    settled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # when it succeeded or failed


class ApiCall(db.Model):
    """One call to Adyen's Checkout API, for the developer views. Never holds the API key."""

    __tablename__ = "api_calls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"), index=True)
    # The checkout form's key, for calls made before the order exists (/paymentMethods on the
    # checkout page), so the order's timeline can show them.
    checkout_key: Mapped[str | None] = mapped_column(String(64), index=True)
    endpoint: Mapped[str] = mapped_column(String(64))  # "/payments", "/payments/{pspReference}/refunds"
    url: Mapped[str] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(64))
    request_json: Mapped[dict | None] = mapped_column(JSON)
    status_code: Mapped[int | None] = mapped_column(Integer)  # None: no answer (timeout, refused)
    response_json: Mapped[dict | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class OrderEvent(db.Model):
    """One step of the order's timeline, as fields the console reads (never as wording to parse).

    `kind` says what happened (shop.orders.events.Kind); a state change has its old and new status;
    a step caused by a stored notification, a payment attempt or an email points at it. `note` is the
    rule's own explanation ("the payment succeeded after the order was cancelled"); `detail` holds
    what only that kind has (the redirect's method, the resultCode shown). `summary` is kept for
    rows written before these fields existed.
    """

    __tablename__ = "order_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    old_status: Mapped[str | None] = mapped_column(String(24))
    new_status: Mapped[str | None] = mapped_column(String(24))
    refund_id: Mapped[int | None] = mapped_column(ForeignKey("refunds.id"))
    notification_id: Mapped[int | None] = mapped_column(ForeignKey("notifications.id"))
    attempt_id: Mapped[int | None] = mapped_column(ForeignKey("payment_attempts.id"))
    email_id: Mapped[int | None] = mapped_column(ForeignKey("emails.id"))
    note: Mapped[str | None] = mapped_column(Text)
    summary: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[dict | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Notification(db.Model):
    """An authenticated webhook item (basic auth and HMAC), stored before it is acknowledged and
    processed after; or, if the shop takes no action on it, stored as ignored or flagged with why."""

    __tablename__ = "notifications"
    __table_args__ = (
        # Looked up by order reference (the timeline). A hash index on PostgreSQL: a btree entry
        # holds about 2.7 KB there, and a merchantReference may be longer (no maxLength at Adyen).
        Index("ix_notifications_merchant_reference", "merchant_reference", postgresql_using="hash"),
        # Refund notifications are looked up by the payment they name (the timeline), hashed likewise.
        Index("ix_notifications_original_reference", "original_reference", postgresql_using="hash"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Adyen may deliver the same event more than once: it has an effect once. SHA-256 (hex) of
    # (pspReference, eventCode, success, originalReference) as sent: shop.webhooks.parsing.event_key.
    event_key: Mapped[str] = mapped_column(String(64), unique=True)
    # The fields as text, of any length (Adyen's Webhooks spec sets no maxLength on them).
    psp_reference: Mapped[str] = mapped_column(Text)
    original_reference: Mapped[str] = mapped_column(Text, default="")
    event_code: Mapped[str] = mapped_column(Text)
    success: Mapped[bool | None] = mapped_column(Boolean)  # None: neither "true" nor "false" (ignored)
    merchant_reference: Mapped[str] = mapped_column(Text)
    merchant_account: Mapped[str] = mapped_column(Text)
    amount_value: Mapped[int | None] = mapped_column(BigInteger)  # int64 at Adyen; None if not one
    currency: Mapped[str | None] = mapped_column(String(3))
    reason: Mapped[str | None] = mapped_column(Text)
    event_date: Mapped[str | None] = mapped_column(Text)
    raw_body: Mapped[str] = mapped_column(Text)
    duplicates: Mapped[int] = mapped_column(Integer, default=0)
    # pending → processed; failures are retried with a growing delay. Never applied: ignored (an
    # item the shop takes no action on) and flagged (for another merchant account or environment).
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # What processing did, or why it was not applied, for a person: "pending → paid", "no order …".
    note: Mapped[str | None] = mapped_column(Text)

    @property
    def success_text(self):
        """As Adyen sent it, "true" or "false"; "?" when it was neither (then the item is ignored)."""
        return {True: "true", False: "false"}.get(self.success, "?")


class Email(db.Model):
    """A message to the shopper, kept in an outbox and sent over SMTP when MAIL_SERVER is set.

    The row is written with the order change that causes it (one per order and `kind`: the unique
    constraint makes a second one impossible) and rendered, in `language`, when it is sent.
    """

    __tablename__ = "emails"
    __table_args__ = (UniqueConstraint("order_id", "kind", name="uq_emails_order_kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"), index=True)
    # What it tells the shopper: "paid", "failed", "expired", "unconfirmed", … (shop/mail.py)
    kind: Mapped[str | None] = mapped_column(String(32))
    language: Mapped[str | None] = mapped_column(String(8))
    to: Mapped[str] = mapped_column(String(256))
    # Filled in when the email is rendered, just before it is sent (or kept).
    subject: Mapped[str | None] = mapped_column(String(200))
    body: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default="outbox")  # outbox | sending | sent | failed | kept
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    # When the next try is due; while status is "sending" it is the end of the sender's lease.
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WebhookRejection(db.Model):
    """A webhook request that was refused (bad basic auth or signature, malformed, not ours).

    For the developer console only. Never the body, a header or a credential: just when, why, from
    where and how big. Capped to the newest rows (shop/webhooks/rejections.py).
    """

    __tablename__ = "webhook_rejections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    reason: Mapped[str] = mapped_column(String(64))  # "bad signature", "bad basic auth", …
    status_code: Mapped[int] = mapped_column(Integer)
    remote_addr: Mapped[str | None] = mapped_column(String(64))
    body_size: Mapped[int | None] = mapped_column(Integer)
