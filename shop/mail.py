"""Shopper emails: written to an outbox table with the order change that causes them, sent later.

`queue_order_email` is called by the state machine inside the transaction that changes the order,
so each outcome makes exactly one email. `send_due` (run by the background worker) sends the
outbox over SMTP when MAIL_SERVER is set; without it the emails are kept in the table
(status "kept") for the developer console.

Sending claims each row with a conditional UPDATE (outbox → sending, attempts + 1, a lease), so
several workers never send one email twice, and a sender that died is replaced when its lease ends.
A failed send is retried with a growing delay, up to MAIL_MAX_ATTEMPTS, then marked "failed".

Settings: MAIL_SERVER, MAIL_PORT, MAIL_USERNAME, MAIL_PASSWORD (optional), MAIL_FROM, MAIL_USE_TLS
(STARTTLS); tunables with defaults: MAIL_TIMEOUT (10 s), MAIL_RETRY_SECONDS (30, doubled each
time, at most an hour), MAIL_MAX_ATTEMPTS (10), MAIL_LEASE_SECONDS (120).
"""

import logging
import smtplib
import ssl
from datetime import timedelta
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr

from flask import current_app, render_template
from flask_babel import force_locale, gettext
from sqlalchemy import and_, insert, or_, select, update

from shop.db import db
from shop.i18n import language_of_locale
from shop.models import Email, utcnow
from shop.money import format_amount

log = logging.getLogger(__name__)

OUTBOX, SENDING, SENT, FAILED, KEPT = "outbox", "sending", "sent", "failed", "kept"

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
    "failed": N_("Order %(reference)s cancelled: the payment failed"),
    "expired": N_("Order %(reference)s cancelled: the payment timed out"),
}


def queue_order_email(order, kind):
    """Put the shopper email for an order outcome in the outbox, in the caller's transaction."""
    db.session.execute(insert(Email.__table__), compose_order_email(order, kind))  # Core: see state.add_event


def compose_order_email(order, kind):
    """The Email row (a dict) for `kind` ("paid", "late_paid", "failed", "expired") about `order`,
    in its language."""
    language = language_of_locale(order.shopper_locale)
    context = {
        "order": order,
        "name": order.shopper_first_name,
        "reference": order.reference,
        "amount": format_amount(order.amount_value, order.currency, language),
        "link": f"{current_app.config['PUBLIC_BASE_URL']}/orders/{order.token}",
    }
    with force_locale(language):
        return {
            "order_id": order.id,
            "to": order.shopper_email,
            "subject": gettext(SUBJECTS[kind], reference=order.reference),
            "body": render_template(f"emails/{kind}.txt", **context),
        }


def send_due(limit=50):
    """Send the outbox emails that are due; keep them when no MAIL_SERVER is set. Returns the number sent."""
    config = current_app.config
    if not config.get("MAIL_SERVER"):
        kept = db.session.execute(update(Email).where(Email.status == OUTBOX).values(status=KEPT)).rowcount
        db.session.commit()
        if kept:
            log.info("%d email(s) kept in the outbox: MAIL_SERVER is not set", kept)
        return 0

    now = utcnow()
    due = db.session.execute(
        select(Email.id, Email.attempts)
        .where(
            or_(
                and_(Email.status == OUTBOX, or_(Email.next_attempt_at.is_(None), Email.next_attempt_at <= now)),
                # A sender that died mid-send: its lease has ended.
                and_(Email.status == SENDING, Email.next_attempt_at <= now),
            )
        )
        .order_by(Email.id)
        .limit(limit)
    ).all()
    db.session.rollback()

    sent = 0
    connection = None
    try:
        for email_id, seen_attempts in due:
            email = _claim(email_id, seen_attempts)
            if email is None:
                continue  # another worker has it
            try:
                if connection is None:
                    connection = _connect(config)
                connection.send_message(_message(email, config))
            except Exception as exc:  # noqa: BLE001 - any failure is retried, never lost
                _failed(email, exc, config)
                connection = _close(connection)
                break  # the server is probably down: leave the rest for the next tick
            _sent(email)
            sent += 1
    finally:
        _close(connection)
    return sent


def _claim(email_id, seen_attempts):
    """outbox (or an expired lease) → sending, atomically. The Email, or None if someone else won."""
    now = utcnow()
    lease = timedelta(seconds=current_app.config.get("MAIL_LEASE_SECONDS", 120))
    claimed = db.session.execute(
        update(Email)
        .where(
            Email.id == email_id,
            Email.attempts == seen_attempts,
            or_(
                and_(Email.status == OUTBOX, or_(Email.next_attempt_at.is_(None), Email.next_attempt_at <= now)),
                and_(Email.status == SENDING, Email.next_attempt_at <= now),
            ),
        )
        .values(status=SENDING, attempts=seen_attempts + 1, next_attempt_at=now + lease)
    ).rowcount
    db.session.commit()
    if claimed != 1:
        return None
    return db.session.get(Email, email_id)


def _finish(email, **values):
    """Write the outcome only if this sender still holds the claim (attempts is the claim's token)."""
    db.session.execute(
        update(Email)
        .where(Email.id == email.id, Email.status == SENDING, Email.attempts == email.attempts)
        .values(**values)
    )
    db.session.commit()


def _sent(email):
    _finish(email, status=SENT, sent_at=utcnow(), last_error=None)
    log.info("email %s sent (order %s)", email.id, email.order_id)


def _failed(email, exc, config):
    error = f"{type(exc).__name__}: {exc}"[:500]
    max_attempts = config.get("MAIL_MAX_ATTEMPTS", 10)
    if email.attempts >= max_attempts:
        _finish(email, status=FAILED, last_error=error)
        log.error("email %s not sent after %d attempts, given up: %s", email.id, email.attempts, type(exc).__name__)
        return
    delay = min(config.get("MAIL_RETRY_SECONDS", 30) * 2 ** (email.attempts - 1), 3600)
    _finish(email, status=OUTBOX, last_error=error, next_attempt_at=utcnow() + timedelta(seconds=delay))
    log.warning(
        "email %s not sent (attempt %d of %d), retrying in %ss: %s",
        email.id,
        email.attempts,
        max_attempts,
        delay,
        type(exc).__name__,
    )


def _connect(config):
    connection = smtplib.SMTP(
        config["MAIL_SERVER"], config.get("MAIL_PORT") or 25, timeout=config.get("MAIL_TIMEOUT", 10)
    )
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
    # Name the domain: make_msgid would otherwise look up this host's name in DNS, which can be slow.
    domain = parseaddr(config.get("MAIL_FROM") or "")[1].rpartition("@")[2] or "localhost"
    message["Message-ID"] = make_msgid(idstring=f"email-{email.id}", domain=domain)
    message.set_content(email.body)
    return message
