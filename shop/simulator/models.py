"""The simulator's own tables, all prefixed `sim_`, so that its state lives in the database.

Nothing is kept in process memory: the app may run as several gunicorn workers, and a payment
started before a restart must still be payable, resolvable and notified after it.
Times are stored in UTC; SQLite gives them back without a zone, so read them through `as_utc`.
"""

import os
from datetime import UTC, datetime

from sqlalchemy import JSON, BigInteger, DateTime, Float, ForeignKey, Integer, MetaData, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shop.db import NAMING_CONVENTION, db

# The simulator's own migrations, with a version table of their own (sim_alembic_version): run only
# where the simulator is mounted (shop.db.add_schema).
MIGRATIONS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migrations")


class SimBase(DeclarativeBase):
    """The simulator's tables: a metadata of their own, so that only a database the simulator runs
    on has them (shop.db.add_schema)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utcnow():
    return datetime.now(UTC)


def run_update(statement):
    """Execute a conditional UPDATE and return its result (check `.rowcount`).

    SQLAlchemy would otherwise re-check the WHERE in Python on loaded objects, which fails on
    SQLite's zone-less times; callers refresh what they need after the commit instead.
    """
    return db.session.execute(statement, execution_options={"synchronize_session": False})


def as_utc(moment):
    """A stored time as an aware UTC datetime (SQLite returns naive ones)."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


class SimPaymentStatus:
    AWAITING_SHOPPER = "awaiting_shopper"  # /payments answered RedirectShopper; KNET page not finished
    COMPLETED = "completed"  # the shopper submitted or cancelled the KNET page
    EXPIRED = "expired"  # the offer expired first; OFFER_CLOSED is queued


class SimPayment(SimBase):
    """A payment the simulated Adyen accepted through /payments."""

    __tablename__ = "sim_payments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    psp_reference: Mapped[str] = mapped_column(String(16), unique=True)
    # Names the payment in the KNET page URL; unguessable, unlike the pspReference.
    page_token: Mapped[str] = mapped_column(String(64), unique=True)
    merchant_account: Mapped[str] = mapped_column(String(80))
    merchant_reference: Mapped[str] = mapped_column(String(80), index=True)
    amount_value: Mapped[int] = mapped_column(BigInteger)  # minor units (fils for KWD)
    currency: Mapped[str] = mapped_column(String(3))
    country_code: Mapped[str | None] = mapped_column(String(100))
    payment_method_type: Mapped[str] = mapped_column(String(32))
    return_url: Mapped[str] = mapped_column(Text)
    shopper_first_name: Mapped[str | None] = mapped_column(String(80))
    shopper_last_name: Mapped[str | None] = mapped_column(String(80))
    shopper_email: Mapped[str | None] = mapped_column(String(256))
    telephone_number: Mapped[str | None] = mapped_column(String(64))
    shopper_locale: Mapped[str | None] = mapped_column(String(32))
    redirect_to_issuer_method: Mapped[str | None] = mapped_column(String(8))
    redirect_from_issuer_method: Mapped[str | None] = mapped_column(String(8))

    status: Mapped[str] = mapped_column(String(24), default=SimPaymentStatus.AWAITING_SHOPPER, index=True)
    result_code: Mapped[str | None] = mapped_column(String(32))
    refusal_reason: Mapped[str | None] = mapped_column(String(100))
    refusal_reason_code: Mapped[str | None] = mapped_column(String(8))
    bank: Mapped[str | None] = mapped_column(String(16))
    # Never the card number or the PIN: only what a receipt would show.
    card_last4: Mapped[str | None] = mapped_column(String(4))
    # The opaque value appended to returnUrl; /payments/details resolves it to this payment. Adyen's
    # are well over 1,000 characters (up to 20,000 in the spec), too long for a unique index on
    # PostgreSQL, so the lookup goes by its SHA-256.
    redirect_result: Mapped[str | None] = mapped_column(Text)
    redirect_result_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    # When /payments/details first answered for it: a repeat not replayed by its Idempotency-Key gets 704.
    details_requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    offer_closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Seconds after OFFER_CLOSED at which a successful AUTHORISATION follows anyway (Adyen: "If an
    # offer expires, it may still be authorised"); None: none follows (faults.py late_authorisation).
    authorise_after_close: Mapped[float | None] = mapped_column(Float)
    # Fils taken by refunds, reversals and cancels that were not refused or failed: what is left to
    # refund is amount_value - this. Changed by one conditional UPDATE, so two refunds at once never
    # take more than the payment.
    modified_value: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")

    @property
    def shopper_name(self):
        return " ".join(part for part in (self.shopper_first_name, self.shopper_last_name) if part)


class ModificationKind:
    REFUND = "refund"  # /payments/{paymentPspReference}/refunds: REFUND
    REVERSAL = "reversal"  # …/reversals: CANCEL_OR_REFUND
    CANCEL = "cancel"  # …/cancels: CANCELLATION


class SimModification(SimBase):
    """A refund, reversal or cancel the simulated Adyen received for a payment: answered `received`,
    its outcome sent later as a webhook (REFUND, CANCEL_OR_REFUND, CANCELLATION, REFUND_FAILED)."""

    __tablename__ = "sim_modifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    psp_reference: Mapped[str] = mapped_column(String(16), unique=True)
    payment_id: Mapped[int] = mapped_column(ForeignKey("sim_payments.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    # The merchant's `reference` for the modification (optional in the request).
    merchant_reference: Mapped[str | None] = mapped_column(String(80))
    amount_value: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    merchant_refund_reason: Mapped[str | None] = mapped_column(String(32))
    # "succeeded", "refused" (its webhook says success false) or "failed" (REFUND_FAILED follows).
    outcome: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SimIdempotentResponse(SimBase):
    """The first response to a request with an Idempotency-Key, replayed for every retry."""

    __tablename__ = "sim_idempotent_responses"
    __table_args__ = (UniqueConstraint("endpoint", "key_hash", name="uq_sim_idempotency_endpoint_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    endpoint: Mapped[str] = mapped_column(String(64))  # "/payments", "/payments/{paymentPspReference}/refunds"
    # A hash keeps the unique index small whatever length of key a client sends.
    key_hash: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str] = mapped_column(Text)
    status_code: Mapped[int | None] = mapped_column(Integer)
    response_json: Mapped[dict | None] = mapped_column(JSON)
    psp_reference: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DeliveryStatus:
    PENDING = "pending"  # waiting for due_at
    DELIVERING = "delivering"  # claimed by one worker until due_at (its lease, shop/jobs.py)
    DELIVERED = "delivered"  # the endpoint answered 2xx
    FAILED = "failed"  # retried for Adyen's whole retry period without a 2xx
    # Held back by an injected "webhook_out_of_order" fault, until the rest of its group is queued
    # (shop/simulator/faults.py); never claimed by the sender while held.
    HELD = "held"


class SimWebhookDelivery(SimBase):
    """One webhook (one NotificationRequestItem) that the simulated Adyen sends, with its attempts.

    The payload is stored unsigned; the HMAC signature is added at send time with the current key,
    so neither the key nor a signature is ever stored.
    """

    __tablename__ = "sim_webhook_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("sim_payments.id"), index=True)
    event_code: Mapped[str] = mapped_column(String(40))
    # A payment's or a modification's; a REPORT_AVAILABLE's is the report's file name.
    psp_reference: Mapped[str] = mapped_column(String(255))
    merchant_reference: Mapped[str] = mapped_column(String(80))
    success: Mapped[str] = mapped_column(String(5))  # "true" / "false", as Adyen sends it
    payload: Mapped[dict] = mapped_column(JSON)
    target_url: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING, index=True)
    # When it is due; while it is being delivered, the end of its worker's lease (shop/jobs.py).
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_response_body: Mapped[str | None] = mapped_column(Text)
    last_error: Mapped[str | None] = mapped_column(Text)
    # [{attempt, at, status_code, error, duration_ms}], newest last.
    history: Mapped[list] = mapped_column(JSON, default=list)
    duplicate_of: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Start of the current retry period (creation, or the last manual resend).
    queued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    def duplicate(self, **changes):
        """A second delivery of the same event, as Adyen sometimes sends one (the caller adds it)."""
        fields = {
            name: getattr(self, name)
            for name in (
                "payment_id",
                "event_code",
                "psp_reference",
                "merchant_reference",
                "success",
                "payload",
                "target_url",
                "status",
                "due_at",
                "created_at",
                "queued_at",
            )
        }
        return SimWebhookDelivery(**dict(fields, history=[], duplicate_of=self.id, **changes))


class SimFault(SimBase):
    """A fault injected into the simulated Adyen (shop/simulator/faults.py): what goes wrong, where,
    and how many more times. In the database, so every worker process sees the same faults."""

    __tablename__ = "sim_faults"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # "/payments", "/payments/details", "/paymentMethods", a modification's path, or "webhooks"
    endpoint: Mapped[str] = mapped_column(String(64), index=True)
    # "timeout", "http_500", "http_422", "http_401", "refuse", "slow", "http_704_on_repeat",
    # "webhook_delay", "webhook_duplicate", "webhook_out_of_order", "webhook_burst",
    # "late_authorisation", "refund_refused", "refund_failed"
    kind: Mapped[str] = mapped_column(String(32))
    # How many more calls (or webhooks) it affects; None: every one until it is cleared.
    remaining: Mapped[int | None] = mapped_column(Integer)
    # How many times it has acted so far.
    fired: Mapped[int] = mapped_column(Integer, default=0)
    # Kind-specific settings: {"seconds": 3}, {"delay_ms": 800}, …
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
