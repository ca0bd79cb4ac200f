"""Shopper emails: one per webhook outcome, sent to a real SMTP server (aiosmtpd on loopback),
kept when no MAIL_SERVER is set, and retried, never lost, when the server is down."""

import email
import email.policy
import socket
import threading

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from shop import mail
from shop.db import db
from shop.models import Email, Order
from shop.orders.state import WebhookEvent
from tests.webhook_helpers import (
    apply_event,
    emails,
    envelope,
    get_order,
    item,
    kept_emails,
    make_order,
    order_status,
    post,
    wait_for,
)

PSP = "PSPPAYMENT000001"
OUTCOMES = {
    "paid": ("pending", [WebhookEvent("AUTHORISATION", True, 12500, "KWD", PSP)]),
    "failed": ("pending", [WebhookEvent("AUTHORISATION", False, 12500, "KWD", PSP, "NOT CAPTURED")]),
    "expired": ("pending", [WebhookEvent("OFFER_CLOSED", True, 12500, "KWD", PSP)]),
    "late_paid": ("expired", [WebhookEvent("AUTHORISATION", True, 12500, "KWD", PSP)]),
}
WORDING = {
    "paid": ("Your payment was successful", "proceeding with your order"),
    "late_paid": ("Your payment was successful", "proceed with your order or refund"),
    "failed": ("cancelled: the payment failed", "failed, so we have cancelled the order"),
    "expired": ("cancelled: the payment timed out", "timed out"),
}


class Collector:
    """An aiosmtpd handler that keeps every message; it can refuse the first few with a 451."""

    def __init__(self, refuse_first=0):
        self.messages = []
        self.refuse_left = refuse_first
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            if self.refuse_left > 0:
                self.refuse_left -= 1
                return "451 4.3.0 Try again later"
            self.messages.append(
                (envelope.rcpt_tos, email.message_from_bytes(envelope.content, policy=email.policy.default))
            )
        return "250 OK"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def smtp_server():
    """A real SMTP server on a free loopback port: yields (handler, port)."""
    started = []

    def start(handler=None, port=None):
        handler = handler or Collector()
        controller = Controller(handler, hostname="127.0.0.1", port=port or free_port())
        controller.start()
        started.append(controller)
        return handler, controller.port

    yield start
    for controller in started:
        controller.stop()


def mail_to(app, port, **settings):
    app.config.update({"MAIL_SERVER": "127.0.0.1", "MAIL_PORT": port, "MAIL_RETRY_SECONDS": 0, **settings})


@pytest.mark.parametrize("outcome", sorted(OUTCOMES))
def test_one_email_per_outcome_with_the_docs_wording(app, outcome):
    status, events = OUTCOMES[outcome]
    reference = make_order(app, status=status)
    with app.app_context():
        for event in events * 3:  # delivered three times: still one email
            apply_event(reference, event)
    order = get_order(app, reference)
    (queued,) = emails(app, reference)
    # Queued with the change, written in the order's language when it goes out (here: kept).
    assert (queued.status, queued.kind, queued.language, queued.body) == ("outbox", outcome, "en", None)
    (message,) = kept_emails(app, reference)
    subject_words, body_words = WORDING[outcome]
    assert message.to == "fatima@example.com"
    assert subject_words in message.subject and reference in message.subject
    assert body_words in message.body
    assert reference in message.body
    assert "12.500 KWD" in message.body
    assert f"http://127.0.0.1:5000/orders/{order.token}" in message.body
    assert message.status == "kept"
    assert message.message_id == f"<{reference}.{outcome}@example.com>"


def test_no_email_without_an_outcome(app):
    reference = make_order(app, amount_value=12500)
    paid = make_order(app, status="paid", psp_reference=PSP)
    with app.app_context():
        apply_event(reference, WebhookEvent("AUTHORISATION", True, 999, "KWD", PSP))  # needs review
        apply_event(paid, WebhookEvent("OFFER_CLOSED", True, 12500, "KWD", PSP))  # no-op
    assert emails(app) == []


def test_without_mail_server_emails_are_kept(app):
    assert not app.config["MAIL_SERVER"]
    reference = make_order(app)
    with app.app_context():
        apply_event(reference, OUTCOMES["paid"][1][0])
        assert mail.send_due() == 1
        assert mail.send_due() == 0
    (message,) = emails(app, reference)
    assert (message.status, message.attempts) == ("kept", 1)
    assert "Your payment was successful" in message.subject


def test_sent_over_smtp_when_mail_server_is_set(app, smtp_server):
    handler, port = smtp_server()
    mail_to(app, port, MAIL_FROM="KNET Demo Shop <shop@example.com>")
    reference = make_order(app)
    with app.app_context():
        apply_event(reference, OUTCOMES["paid"][1][0])
        assert mail.send_due() == 1
        assert mail.send_due() == 0  # nothing left: never sent twice
    ((recipients, message),) = handler.messages
    assert recipients == ["fatima@example.com"]
    assert message["From"] == "KNET Demo Shop <shop@example.com>"
    assert message["Subject"] == f"Your payment was successful: order {reference}"
    assert "12.500 KWD" in message.get_content()
    # The same Message-ID each time this order's email of this outcome goes out: a repeat after a
    # crash is recognisably the same message.
    assert message["Message-ID"] == f"<{reference}.paid@example.com>"
    (row,) = emails(app, reference)
    assert (row.status, row.attempts, row.last_error) == ("sent", 1, None)
    assert row.sent_at is not None


def test_smtp_down_is_retried_not_lost(app, smtp_server):
    port = free_port()  # nothing listens here yet
    mail_to(app, port)
    reference = make_order(app)
    with app.app_context():
        apply_event(reference, OUTCOMES["expired"][1][0])
        assert mail.send_due() == 0
    (row,) = emails(app, reference)
    assert (row.status, row.attempts) == ("outbox", 1)
    assert "ConnectionRefusedError" in row.last_error

    handler, _ = smtp_server(port=port)  # the server comes back
    with app.app_context():
        assert mail.send_due() == 1
    assert len(handler.messages) == 1
    (row,) = emails(app, reference)
    assert (row.status, row.attempts) == ("sent", 2)


def test_temporary_refusal_is_retried(app, smtp_server):
    handler, port = smtp_server(Collector(refuse_first=2))
    mail_to(app, port)
    reference = make_order(app)
    with app.app_context():
        apply_event(reference, OUTCOMES["failed"][1][0])
        for _ in range(3):
            mail.send_due()
    assert len(handler.messages) == 1
    (row,) = emails(app, reference)
    assert (row.status, row.attempts) == ("sent", 3)


def test_retry_waits_for_its_delay(app):
    mail_to(app, free_port(), MAIL_RETRY_SECONDS=3600)
    reference = make_order(app)
    with app.app_context():
        apply_event(reference, OUTCOMES["paid"][1][0])
        mail.send_due()
        mail.send_due()  # not due yet
    (row,) = emails(app, reference)
    assert row.attempts == 1


def test_gives_up_after_max_attempts(app):
    mail_to(app, free_port(), MAIL_MAX_ATTEMPTS=3)
    reference = make_order(app)
    with app.app_context():
        apply_event(reference, OUTCOMES["paid"][1][0])
        for _ in range(5):
            mail.send_due()
    (row,) = emails(app, reference)
    assert (row.status, row.attempts) == ("failed", 3)


def test_a_dead_senders_lease_is_reclaimed(app, smtp_server):
    handler, port = smtp_server()
    mail_to(app, port)
    reference = make_order(app)
    with app.app_context():
        apply_event(reference, OUTCOMES["paid"][1][0])
        # A sender claimed it and died: its lease ended a moment ago.
        db.session.execute(update(Email).values(status="sending", attempts=1, next_attempt_at=Email.created_at))
        db.session.commit()
        assert mail.send_due() == 1
    assert len(handler.messages) == 1


def test_concurrent_senders_send_each_email_once(app, smtp_server):
    handler, port = smtp_server()
    mail_to(app, port)
    references = [make_order(app) for _ in range(8)]
    with app.app_context():
        for reference in references:
            apply_event(reference, OUTCOMES["paid"][1][0])
    barrier = threading.Barrier(4)

    def send():
        with app.app_context():
            barrier.wait()
            mail.send_due()

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(message["To"] for _, message in handler.messages) == ["fatima@example.com"] * 8
    assert {row.status for row in emails(app)} == {"sent"}


def test_webhook_to_inbox_end_to_end(live_server_factory, smtp_server):
    handler, port = smtp_server()
    server = live_server_factory(MAIL_SERVER="127.0.0.1", MAIL_PORT=port)
    app = server.app
    reference = make_order(app)
    assert post(server, envelope(item(app, reference))).text == "[accepted]"
    wait_for(lambda: handler.messages, message="the email in the inbox")
    assert order_status(app, reference) == "paid"
    ((_, message),) = handler.messages
    assert message["Subject"] == f"Your payment was successful: order {reference}"
    assert f"{server.url}/orders/{get_order(app, reference).token}" in message.get_content()


def test_smtp_login_when_a_username_is_set(app, smtp_server):
    from aiosmtpd.smtp import AuthResult, LoginPassword

    logins = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (b"shop", b"s3cret")
        logins.append(ok)
        return AuthResult(success=ok)

    handler = Collector()
    controller = Controller(
        handler, hostname="127.0.0.1", port=free_port(), authenticator=authenticator, auth_require_tls=False
    )
    controller.start()
    try:
        mail_to(app, controller.port, MAIL_USERNAME="shop", MAIL_PASSWORD="s3cret")
        reference = make_order(app)
        with app.app_context():
            apply_event(reference, OUTCOMES["paid"][1][0])
            assert mail.send_due() == 1
    finally:
        controller.stop()
    assert logins == [True]
    assert len(handler.messages) == 1


def test_a_resend_after_a_lost_sent_mark_carries_the_same_message_id(app, smtp_server):
    """A sender died after the SMTP server accepted the email and before it marked it sent: when its
    lease ends the email goes out again, recognisably the same message (README, Email)."""
    handler, port = smtp_server()
    mail_to(app, port)
    reference = make_order(app)
    with app.app_context():
        apply_event(reference, OUTCOMES["paid"][1][0])
        assert mail.send_due() == 1
        # What the dead sender left: the row still "sending", its lease over.
        db.session.execute(update(Email).values(status="sending", next_attempt_at=Email.created_at))
        db.session.commit()
        assert mail.send_due() == 1
    first, second = (message for _, message in handler.messages)
    assert first["Message-ID"] == second["Message-ID"] == f"<{reference}.paid@example.com>"
    assert first["Subject"] == second["Subject"]
    (row,) = emails(app, reference)
    assert (row.status, row.attempts) == ("sent", 2)


def test_one_email_per_order_and_outcome_is_a_rule_of_the_table(app):
    reference = make_order(app)
    with app.app_context():
        apply_event(reference, OUTCOMES["paid"][1][0])
        order = db.session.execute(db.select(Order).filter_by(reference=reference)).scalar_one()
        with pytest.raises(IntegrityError):
            mail.queue(order, "paid")
        db.session.rollback()
    assert len(emails(app, reference)) == 1
