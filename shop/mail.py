"""Shopper emails: a row in the outbox written with the order change that causes it, rendered and
sent later by the background worker.

`queue` is called by the state machine inside the transaction that changes the order, and the
outbox allows one email per order and kind (a unique constraint), so each outcome makes exactly one
email. `send_due` (a job of the background loop, through the shared queue in shop/jobs.py) renders
each due email in the order's language and sends it over SMTP when MAIL_SERVER is set; without it
the emails are rendered and kept in the table (status "kept") for the developer console.

At most once, as far as SMTP allows: an email is marked sent in the statement right after the
server accepted it. A crash in between (one database round trip) leaves the claim to end, and the
email is sent again with the same Message-ID (`<reference.kind@domain>`, stable per order and
outcome), so a mail server or client that drops repeats shows it once. SMTP gives a client no way
to ask whether a message arrived, so nothing can close that window completely (README, Email).

Settings: MAIL_SERVER, MAIL_PORT, MAIL_USERNAME, MAIL_PASSWORD (optional), MAIL_FROM, MAIL_USE_TLS
(STARTTLS), MAIL_TIMEOUT, MAIL_RETRY_SECONDS, MAIL_MAX_ATTEMPTS, MAIL_LEASE_SECONDS (shop/config.py).
"""

import logging
import re
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, parseaddr

from flask import current_app, render_template
from flask_babel import force_locale, gettext
from sqlalchemy import insert, select

from shop import jobs
from shop.db import db, transaction
from shop.i18n import language_of_locale
from shop.models import Email, Order, Refund, utcnow
from shop.money import format_amount

log = logging.getLogger(__name__)

OUTBOX, SENDING, SENT, FAILED, KEPT = "outbox", "sending", "sent", "failed", "kept"

QUEUE = jobs.Queue(
    name="emails",
    table=Email.__table__,
    pending=OUTBOX,
    running=SENDING,
    failed=FAILED,
    due_column="next_attempt_at",
    lease_setting="MAIL_LEASE_SECONDS",
    max_attempts_setting="MAIL_MAX_ATTEMPTS",
    backoff=jobs.exponential("MAIL_RETRY_SECONDS"),
)

# Wording from the KNET webhook table (https://docs.adyen.com/payment-methods/knet/api-only):
# AUTHORISATION true: "inform the shopper that the payment has been successful and proceed with the order";
# AUTHORISATION false: "cancel the order and inform the shopper that the payment failed";
# OFFER_CLOSED: "cancel the order and inform the shopper that the payment timed out".
# Each email is written in the order's language (its shopper_locale, en-KW or ar-KW).


def N_(message):
    """Marks a message for translation (pybabel extracts it); it is translated where it is used."""
    return message


SUBJECTS = {
    "paid": N_("Your payment was successful: order %(reference)s"),
    "late_paid": N_("Your payment was successful: order %(reference)s"),
    "duplicate_paid": N_("We received a second payment: order %(reference)s"),
    "failed": N_("Order %(reference)s cancelled: the payment failed"),
    "expired": N_("Order %(reference)s cancelled: the payment timed out"),
    "unconfirmed": N_("Order %(reference)s cancelled: we could not confirm the payment"),
    # One per refund and outcome: the kind is "refunded:<refund id>" (the outbox is unique per kind).
    "refunded": N_("We refunded %(refunded)s: order %(reference)s"),
    "refund_failed": N_("Your refund could not be completed: order %(reference)s"),
}


def base_kind(kind):
    """ "refunded:12" -> ("refunded", 12); "paid" -> ("paid", None)."""
    base, _, refund_id = (kind or "").partition(":")
    return base, int(refund_id) if refund_id.isdigit() else None


def queue(order, kind):
    """Put the shopper email of `kind` about `order` (as read in this transaction) in the outbox, in
    the caller's transaction. Returns its id. Rendered later, when it is sent."""
    return db.session.execute(
        insert(Email.__table__).returning(Email.__table__.c.id), _outbox_row(order, kind)
    ).scalar_one()


def queue_many(emails):
    """`queue` for each (order, kind) of `emails`, in one statement. Their ids, in that order."""
    if not emails:
        return []
    table = Email.__table__
    rows = [_outbox_row(order, kind) for order, kind in emails]
    return db.session.execute(insert(table).returning(table.c.id, sort_by_parameter_order=True), rows).scalars().all()


def _outbox_row(order, kind):
    if base_kind(kind)[0] not in SUBJECTS:
        raise ValueError(f"no shopper email of kind {kind!r}")
    now = utcnow()
    return {
        "order_id": order.id,
        "kind": kind,
        "language": language_of_locale(order.shopper_locale),
        "to": order.shopper_email,
        "status": OUTBOX,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }


def render(order, kind, language):
    """(subject, body) of the email of `kind` about `order`, in `language`."""
    kind, refund_id = base_kind(kind)
    refund = db.session.get(Refund, refund_id) if refund_id is not None else None
    context = {
        "refund": refund,
        "refunded": format_amount(refund.amount_value, refund.currency, language) if refund else "",
        "order": order,
        "name": order.shopper_first_name,
        "reference": order.reference,
        "amount": format_amount(order.amount_value, order.currency, language),
        "link": f"{current_app.config['PUBLIC_BASE_URL']}/orders/{order.token}",
    }
    with force_locale(language):
        subject = gettext(SUBJECTS[kind], reference=order.reference, refunded=context["refunded"])
        return subject, render_template(f"emails/{kind}.txt", **context)


def message_id(reference, kind, mail_from):
    """The same Message-ID every time this order's email of this kind is sent (RFC 5322 msg-id)."""
    domain = parseaddr(mail_from or "")[1].rpartition("@")[2] or "localhost"
    local = re.sub(r"[^A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]", "-", f"{reference}.{kind}")
    return f"<{local}@{domain}>"


def send_due(limit=50):
    """Render and send the outbox emails that are due (keep them when no MAIL_SERVER is set), at
    most `limit` in a round of the background loop, so that the webhooks never wait long behind
    them. Returns how many were sent or kept."""
    config = current_app.config
    if not config.get("MAIL_SERVER"):
        return _keep_due(limit)
    handled = 0
    connection = None
    try:
        # One claim at a time, so that each lease only has to outlast one send (MAIL_LEASE_SECONDS).
        for _ in range(limit):
            claimed = QUEUE.claim(1)
            if not claimed:
                break
            row = claimed[0]
            email = _rendered(row.id)
            if email is None:
                _finish(row, FAILED)
                continue
            if not config.get("MAIL_SERVER"):
                _finish(row, KEPT)
                handled += 1
                continue
            try:
                if connection is None:
                    connection = _connect(config)
                connection.send_message(_message(email, config))
            except Exception as exc:  # noqa: BLE001 - any failure is retried, never lost
                _failed(row, exc)
                connection = _close(connection)
                break  # the server is probably down: the rest wait for their claim to end
            _finish(row, SENT, sent_at=utcnow())  # at once: the shorter this gap, the rarer a repeat
            log.info("email %s sent (order %s, %s)", row.id, email.order_id, email.kind)
            handled += 1
    finally:
        _close(connection)
    return handled


KEEP_BATCH = 50  # emails rendered and kept in one transaction


def _keep_due(limit):
    """Without a MAIL_SERVER: render the due emails and keep them, a claimed batch at a time (no
    send to wait for, so no lease to outlast)."""
    handled = 0
    while handled < limit:
        claimed = QUEUE.claim(min(KEEP_BATCH, limit - handled))
        if not claimed:
            break
        handled += _keep(claimed)
    if handled:
        log.info("%d email(s) kept in the outbox: MAIL_SERVER is not set", handled)
    return handled


@transaction
def _keep(claimed):
    """`_rendered`, then kept, for each claimed email in one transaction; how many were kept."""
    emails = {e.id: e for e in db.session.execute(select(Email).where(Email.id.in_([r.id for r in claimed]))).scalars()}
    order_ids = {e.order_id for e in emails.values() if e.body is None and e.order_id is not None}
    orders = {o.id: o for o in db.session.execute(select(Order).where(Order.id.in_(order_ids))).scalars()}
    kept, values, failed = [], [], []
    mail_from = current_app.config.get("MAIL_FROM")
    for row in claimed:
        email = emails.get(row.id)
        if email is None:
            failed.append(row)
            continue
        subject, body, message = email.subject, email.body, email.message_id
        order = orders.get(email.order_id)
        if body is None and base_kind(email.kind)[0] in SUBJECTS and order is not None:
            language = email.language or language_of_locale(order.shopper_locale)
            subject, body = render(order, email.kind, language)
            message = message_id(order.reference, email.kind, mail_from)
        kept.append(row)
        values.append({"subject": subject, "body": body, "message_id": message, "last_error": None})
    db.session.expunge_all()  # the rows are written below, by statement
    if kept:
        QUEUE.finish_many(kept, KEPT, values)
    if failed:
        QUEUE.finish_many(failed, FAILED, [{"last_error": None}] * len(failed))
    return len(kept)


@transaction
def _rendered(email_id):
    """The email with its subject, body and Message-ID, rendered and stored the first time."""
    email = db.session.get(Email, email_id)
    if email is None:
        return None
    if email.body is None and base_kind(email.kind)[0] in SUBJECTS and email.order_id is not None:
        order = db.session.execute(select(Order).where(Order.id == email.order_id)).scalar_one()
        language = email.language or language_of_locale(order.shopper_locale)
        email.subject, email.body = render(order, email.kind, language)
        email.message_id = message_id(order.reference, email.kind, current_app.config.get("MAIL_FROM"))
    db.session.flush()
    db.session.expunge(email)
    return email


@transaction
def _finish(row, status, **values):
    QUEUE.finish(row, status, last_error=None, **values)


def _failed(row, exc):
    error = f"{type(exc).__name__}: {exc}"[:500]
    delay = QUEUE.retry(row, error)
    if delay is None:
        log.error("email %s not sent after %d attempts, given up: %s", row.id, row.attempts, type(exc).__name__)
    else:
        log.warning(
            "email %s not sent (attempt %d), retrying in %ss: %s", row.id, row.attempts, delay, type(exc).__name__
        )


def _connect(config):
    connection = smtplib.SMTP(config["MAIL_SERVER"], config["MAIL_PORT"], timeout=config["MAIL_TIMEOUT"])
    try:
        if config.get("MAIL_USE_TLS"):
            connection.starttls(context=ssl.create_default_context())
        if config.get("MAIL_USERNAME"):
            connection.login(config["MAIL_USERNAME"], config.get("MAIL_PASSWORD") or "")
    except Exception:
        _close(connection)
        raise
    return connection


def _close(connection):
    if connection is not None:
        try:
            connection.quit()
        except Exception:  # noqa: BLE001 - closing a broken connection may fail; nothing to do
            connection.close()
    return None


def _message(email, config):
    message = EmailMessage()
    message["From"] = config.get("MAIL_FROM")
    message["To"] = email.to
    message["Subject"] = email.subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = email.message_id or message_id(f"email-{email.id}", "legacy", config.get("MAIL_FROM"))
    message.set_content(email.body)
    return message
