"""POST /webhooks/adyen over real HTTP: verification, storage, acknowledgement, background processing.

Docs: https://docs.adyen.com/development-resources/webhooks (store, answer within 10 s, then process)
and https://docs.adyen.com/development-resources/webhooks/secure-webhooks/verify-hmac-signatures.
Every rejection is checked to leave the database exactly as it was.
"""

import json
import logging
import random
import threading
import time

import pytest
import requests
from sqlalchemy import select, update

from shop.db import db
from shop.models import Notification
from shop.orders import state
from shop.webhooks import processing
from tests.conftest import LiveServer
from tests.webhook_helpers import (
    auth,
    counts,
    emails,
    envelope,
    events,
    get_order,
    item,
    make_order,
    notifications,
    order_status,
    post,
    transitions,
    wait_for,
)

OTHER_KEY = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory):
    """One server for the rejection matrix. A rejected webhook changes nothing (each test checks
    that), so the tests cannot disturb each other, and the suite skips a server start-up per case."""
    server = LiveServer(tmp_path_factory.mktemp("webhooks"))
    yield server
    server.stop()


def processed(server, reference):
    """Wait until every stored notification for the order is out of pending/processing."""

    def done():
        rows = notifications(server.app, merchant_reference=reference)
        return rows and all(row.status not in ("pending", "processing") for row in rows)

    wait_for(done, message=f"notifications of {reference} processed")


# --- accepted -----------------------------------------------------------------------------------


def test_signed_authorisation_is_stored_acknowledged_then_applied(live_server):
    app = live_server.app
    reference = make_order(app)
    response = post(live_server, envelope(item(app, reference)))
    assert response.status_code == 200
    assert response.text == "[accepted]"
    assert response.headers["Content-Type"].startswith("text/plain")

    wait_for(lambda: order_status(app, reference) == "paid", message="order paid")
    processed(live_server, reference)
    (row,) = notifications(app)
    assert (row.event_code, row.success, row.amount_value, row.currency, row.status) == (
        "AUTHORISATION",
        True,
        12500,
        "KWD",
        "processed",
    )
    assert json.loads(row.raw_body)["notificationItems"][0]["NotificationRequestItem"]["merchantReference"] == reference
    assert row.original_reference == ""
    # The order's own steps (the stored row is the "received" step of the console's timeline): the
    # state change, pointing at the notification that caused it and the email it queued.
    (step,) = events(app, reference)
    assert (step.kind, step.old_status, step.new_status, step.notification_id) == (
        "transition",
        "pending",
        "paid",
        row.id,
    )
    (email,) = emails(app, reference)
    assert step.email_id == email.id


@pytest.mark.parametrize("path", ["/webhooks/adyen", "/webhooks/adyen/"])
def test_no_redirect_with_or_without_trailing_slash(shared_server, path):
    app = shared_server.app
    reference = make_order(app)
    response = post(shared_server, envelope(item(app, reference)), path=path)
    assert response.status_code == 200 and response.text == "[accepted]"


def test_get_is_not_allowed(shared_server):
    for path in ("/webhooks/adyen", "/webhooks/adyen/"):
        response = requests.get(shared_server.url + path, allow_redirects=False, timeout=5)
        assert response.status_code == 405
        assert response.headers["Allow"] == "POST"
        assert response.headers["Content-Type"].startswith("text/plain")


def test_an_unexpected_error_is_a_plain_500_that_adyen_retries(live_server, monkeypatch, caplog):
    """A bug between the checks and the insert: Adyen gets a bare 500 (and delivers again later),
    never a stack trace or the exception's text; the log gets the trace."""
    from shop.webhooks import receiver

    def broken(_body):
        raise RuntimeError("an internal detail")

    monkeypatch.setattr(receiver.parsing, "parse", broken)
    app = live_server.app
    reference = make_order(app)
    response = post(live_server, envelope(item(app, reference)))
    assert response.status_code == 500
    assert response.text == "Internal Server Error"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert notifications(app) == []
    assert "an internal detail" in caplog.text and "Traceback" in caplog.text

    monkeypatch.undo()
    assert post(live_server, envelope(item(app, reference))).text == "[accepted]"
    wait_for(lambda: order_status(app, reference) == "paid")


def test_failed_authorisation_cancels_the_order(live_server):
    app = live_server.app
    reference = make_order(app)
    assert post(live_server, envelope(item(app, reference, success="false", reason="NOT CAPTURED"))).status_code == 200
    wait_for(lambda: order_status(app, reference) == "failed")
    processed(live_server, reference)
    (email,) = wait_for(lambda: [e for e in emails(app, reference) if e.status == "kept"], message="the email kept")
    assert "the payment failed" in email.subject


def test_offer_closed_expires_the_order(live_server):
    app = live_server.app
    reference = make_order(app)
    assert post(live_server, envelope(item(app, reference, event_code="OFFER_CLOSED"))).status_code == 200
    wait_for(lambda: order_status(app, reference) == "expired")
    processed(live_server, reference)
    (email,) = wait_for(lambda: [e for e in emails(app, reference) if e.status == "kept"], message="the email kept")
    assert "the payment timed out" in email.subject


def test_duplicate_is_acknowledged_and_has_one_effect(live_server):
    app = live_server.app
    reference = make_order(app)
    body = envelope(item(app, reference))
    first = post(live_server, body)
    wait_for(lambda: order_status(app, reference) == "paid")
    second = post(live_server, body)
    assert (first.status_code, first.text, second.status_code, second.text) == (200, "[accepted]", 200, "[accepted]")
    processed(live_server, reference)
    (row,) = notifications(app)
    assert row.duplicates == 1
    assert len(events(app, reference, kind="transition")) == 1
    assert len(emails(app, reference)) == 1
    (again,) = events(app, reference, kind="webhook_duplicate")
    assert (again.notification_id, again.detail) == (row.id, {"deliveries": 2})


def test_success_true_and_false_are_different_events(live_server):
    """The dedupe key includes `success`: (psp, AUTHORISATION, false) then (psp, AUTHORISATION, true)."""
    app = live_server.app
    reference = make_order(app)
    assert post(live_server, envelope(item(app, reference, success="false"))).status_code == 200
    wait_for(lambda: order_status(app, reference) == "failed")
    assert post(live_server, envelope(item(app, reference, success="true"))).status_code == 200
    wait_for(lambda: order_status(app, reference) == "paid")
    assert len(notifications(app)) == 2
    assert get_order(app, reference).needs_refund_decision


def test_offer_closed_then_late_authorisation(live_server):
    app = live_server.app
    reference = make_order(app)
    assert post(live_server, envelope(item(app, reference, event_code="OFFER_CLOSED"))).status_code == 200
    wait_for(lambda: order_status(app, reference) == "expired")
    assert post(live_server, envelope(item(app, reference))).status_code == 200
    wait_for(lambda: order_status(app, reference) == "paid")
    processed(live_server, reference)
    order = get_order(app, reference)
    assert order.needs_refund_decision and not order.needs_review
    assert [e.kind for e in emails(app, reference)] == ["expired", "late_paid"]
    assert transitions(app, reference) == [
        ("pending", "expired", "order cancelled, the payment timed out"),
        ("expired", "paid", "the payment succeeded after the order was cancelled; needs a refund decision"),
    ]


def test_authorisation_then_offer_closed_stays_paid(live_server):
    app = live_server.app
    reference = make_order(app)
    post(live_server, envelope(item(app, reference)))
    wait_for(lambda: order_status(app, reference) == "paid")
    post(live_server, envelope(item(app, reference, event_code="OFFER_CLOSED")))
    processed(live_server, reference)
    assert order_status(app, reference) == "paid"
    assert len(emails(app, reference)) == 1


def test_amount_mismatch_is_flagged_for_review(live_server):
    app = live_server.app
    reference = make_order(app, amount_value=12500)
    post(live_server, envelope(item(app, reference, value=1250)))
    processed(live_server, reference)
    order = get_order(app, reference)
    assert (order.status, order.needs_review) == ("pending", True)
    assert emails(app, reference) == []


def test_unknown_merchant_reference_is_acknowledged_and_noted(live_server):
    app = live_server.app
    assert post(live_server, envelope(item(app, "NOBODY-1"))).text == "[accepted]"
    wait_for(lambda: notifications(app)[0].status == "processed")
    assert "no order has merchantReference 'NOBODY-1'" in notifications(app)[0].note


@pytest.mark.parametrize(
    "overrides",
    [
        {"psp": "test_AUTHORISATION_4"},  # Customer Area test webhook
        {"event_code": "REPORT_AVAILABLE"},
        {"event_code": "REFUND", "originalReference": "PSPPAYMENT000001"},
    ],
)
def test_test_and_unhandled_events_are_acknowledged_not_processed(live_server, overrides):
    app = live_server.app
    reference = make_order(app)
    response = post(live_server, envelope(item(app, reference, **overrides)))
    assert response.text == "[accepted]"
    (row,) = notifications(app)
    assert row.status == "ignored" and "acknowledged, not processed" in row.note
    assert order_status(app, reference) == "pending"
    assert emails(app, reference) == []


def test_multi_item_body_all_valid(live_server):
    app = live_server.app
    first, second = make_order(app), make_order(app)
    response = post(live_server, envelope(item(app, first), item(app, second, event_code="OFFER_CLOSED")))
    assert response.text == "[accepted]"
    wait_for(lambda: (order_status(app, first), order_status(app, second)) == ("paid", "expired"))


# --- rejected: nothing stored --------------------------------------------------------------------


def settle(app):
    """Wait for the background worker to finish earlier webhooks, so that counts hold still."""
    wait_for(
        lambda: all(row.status not in ("pending", "processing") for row in notifications(app)),
        message="background processing finished",
    )


def assert_rejected(server, body, status, auth_pair=None, **kwargs):
    reference = make_order(server.app)  # a real order the body could have touched
    settle(server.app)
    before = counts(server.app)
    response = post(server, body(server.app, reference) if callable(body) else body, auth_pair=auth_pair, **kwargs)
    assert response.status_code == status, response.text
    assert not 300 <= response.status_code < 400
    assert counts(server.app) == before
    assert order_status(server.app, reference) == "pending"
    return response


def unsigned(app, reference):
    signed = item(app, reference)
    del signed["additionalData"]
    return envelope(signed)


def empty_signature(app, reference):
    signed = item(app, reference)
    signed["additionalData"]["hmacSignature"] = ""
    return envelope(signed)


def tampered_amount(app, reference):
    signed = item(app, reference, value=1)
    signed["amount"]["value"] = 12500
    return envelope(signed)


def tampered_success(app, reference):
    signed = item(app, reference, success="false")
    signed["success"] = "true"
    return envelope(signed)


def second_item_tampered(app, reference):
    second = item(app, reference, event_code="OFFER_CLOSED")
    second["merchantReference"] = "SOMEONE-ELSE"
    return envelope(item(app, reference), second)


@pytest.mark.parametrize(
    "body",
    [
        unsigned,
        empty_signature,
        tampered_amount,
        tampered_success,
        second_item_tampered,
        lambda app, ref: envelope(item(app, ref, key=OTHER_KEY)),
    ],
    ids=["unsigned", "empty-signature", "tampered-amount", "tampered-success", "2nd-item-tampered", "wrong-key"],
)
def test_bad_signature_is_401(shared_server, body):
    assert_rejected(shared_server, body, 401)


def test_missing_basic_auth_is_401_with_challenge(shared_server):
    response = assert_rejected(shared_server, lambda app, ref: envelope(item(app, ref)), 401, auth_pair=False)
    assert response.headers["WWW-Authenticate"].startswith("Basic")


@pytest.mark.parametrize(
    "pair",
    [("adyen-webhook", "wrong"), ("someone", "sim-webhook-password"), ("", ""), ("adyen-webhook", "")],
)
def test_wrong_basic_auth_is_401(shared_server, pair):
    assert_rejected(shared_server, lambda app, ref: envelope(item(app, ref)), 401, auth_pair=pair)


def test_other_authorization_schemes_are_401(shared_server):
    body = lambda app, ref: envelope(item(app, ref))  # noqa: E731
    assert_rejected(shared_server, body, 401, auth_pair=False, headers={"Authorization": "Bearer abc"})
    assert_rejected(shared_server, body, 401, auth_pair=False, headers={"Authorization": "Basic %%%"})


def test_wrong_merchant_account_is_400(shared_server):
    assert_rejected(
        shared_server, lambda app, ref: envelope(item(app, ref, merchantAccountCode="SomeoneElseECOM")), 400
    )


def test_live_flag_must_match_the_environment(shared_server):
    assert_rejected(shared_server, lambda app, ref: envelope(item(app, ref), live="true"), 400)


def test_live_environment_accepts_only_live_true(live_server_factory):
    server = live_server_factory(
        ENV={
            "ADYEN_ENVIRONMENT": "test",
            "ADYEN_API_KEY": "k",
            "ADYEN_MERCHANT_ACCOUNT": "ShopECOM",
            "ADYEN_HMAC_KEY": OTHER_KEY,
            "WEBHOOK_USERNAME": "u",
            "WEBHOOK_PASSWORD": "p",
            "SECRET_KEY": "s",
        }
    )
    # Live mode insists on https and a live URL prefix at start-up; the view only reads this setting.
    server.app.config["ADYEN_ENVIRONMENT"] = "live"
    assert_rejected(server, lambda app, ref: envelope(item(app, ref), live="false"), 400)
    reference = make_order(server.app)
    assert post(server, envelope(item(server.app, reference), live="true")).text == "[accepted]"


def test_previous_hmac_key_accepted_while_rotating(live_server_factory):
    server = live_server_factory(ENV={"ADYEN_HMAC_KEY_PREVIOUS": OTHER_KEY})
    app = server.app
    reference = make_order(app)
    assert post(server, envelope(item(app, reference, key=OTHER_KEY))).text == "[accepted]"
    app.config["ADYEN_HMAC_KEY_PREVIOUS"] = None  # the rotation is over
    assert_rejected(server, lambda app, ref: envelope(item(app, ref, key=OTHER_KEY)), 401)


def good_item(app, reference):
    return item(app, reference)


def with_field(**changes):
    """A signed item with fields changed after signing (the shape check comes first: 400)."""

    def body(app, reference):
        signed = item(app, reference)
        for field, value in changes.items():
            if value is KeyError:
                signed.pop(field, None)
            else:
                signed[field] = value
        return envelope(signed)

    return body


MALFORMED = {
    "empty": b"",
    "not-json": b"[accepted]",
    "not-utf8": b'{"live": "false", "notificationItems": ["\xff\xfe"]}',
    "array": b"[]",
    "null": b"null",
    "no-items": b'{"live": "false"}',
    "empty-items": b'{"live": "false", "notificationItems": []}',
    "item-not-object": b'{"live": "false", "notificationItems": [1]}',
    "no-wrapper": b'{"live": "false", "notificationItems": [{}]}',
    "live-bool": lambda app, ref: envelope(item(app, ref), live=False),
    "no-live": lambda app, ref: json.dumps({"notificationItems": [{"NotificationRequestItem": item(app, ref)}]}),
    "deep-nesting": b"[" * 20000 + b"]" * 20000,  # RecursionError in json, under the size cap
    "nan": b'{"live": "false", "notificationItems": [{"NotificationRequestItem": {"amount": {"value": NaN}}}]}',
    "huge-int": lambda app, ref: envelope(item(app, ref)).replace("12500", "9" * 5000),
    "no-psp": with_field(pspReference=KeyError),
    "empty-psp": with_field(pspReference=""),
    "psp-number": with_field(pspReference=7914073381342284),
    "psp-too-long": with_field(pspReference="P" * 5000),
    "no-merchant-reference": with_field(merchantReference=KeyError),
    "no-merchant-account": with_field(merchantAccountCode=KeyError),
    "no-event-code": with_field(eventCode=KeyError),
    "no-success": with_field(success=KeyError),
    "success-bool": with_field(success=True),
    "success-capital": with_field(success="True"),
    "no-amount": with_field(amount=KeyError),
    "amount-string": with_field(amount={"value": "12500", "currency": "KWD"}),
    "amount-float": with_field(amount={"value": 12500.0, "currency": "KWD"}),
    "amount-bool": with_field(amount={"value": True, "currency": "KWD"}),
    "amount-negative": with_field(amount={"value": -1, "currency": "KWD"}),
    "amount-huge": with_field(amount={"value": 10**20, "currency": "KWD"}),
    "no-currency": with_field(amount={"value": 12500}),
    "currency-short": with_field(amount={"value": 12500, "currency": "KW"}),
    "original-reference-number": with_field(originalReference=5),
    "additional-data-list": with_field(additionalData=["hmacSignature"]),
    "reason-nul": with_field(reason="NOT\u0000CAPTURED"),  # reason is not signed; PostgreSQL refuses NUL
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_body_is_400_and_nothing_stored(shared_server, name):
    assert_rejected(shared_server, MALFORMED[name], 400)


def test_oversized_body_is_413(shared_server):
    assert_rejected(shared_server, b'{"live": "false", "pad": "' + b"x" * 200_000 + b'"}', 413)


def test_fuzzed_bodies_never_500(shared_server):
    """Random mutations of a good body: always a 4xx (or an accepted 200), never a 500 or a redirect."""
    app = shared_server.app
    reference = make_order(app)
    good = envelope(item(app, reference)).encode()
    rng = random.Random(20250101)
    session = requests.Session()
    values = [None, True, 0, -1, 1.5, "", "x", [], {}, [{}], {"a": 1}, 2**70, "true", "false"]
    statuses = set()
    for _ in range(150):
        data = json.loads(good)
        target = data
        path = []
        # Walk into a random place in the JSON and replace, delete or add something there.
        while isinstance(target, (dict, list)) and target and rng.random() < 0.7:
            key = rng.choice(list(target)) if isinstance(target, dict) else rng.randrange(len(target))
            path.append(key)
            if not isinstance(target[key], (dict, list)):
                break
            target = target[key]
        if path:
            parent = data
            for key in path[:-1]:
                parent = parent[key]
            choice = rng.random()
            if choice < 0.6:
                parent[path[-1]] = rng.choice(values)
            elif isinstance(parent, dict):
                del parent[path[-1]]
            else:
                parent.append(rng.choice(values))
        body = json.dumps(data).encode()
        if rng.random() < 0.3:  # and some byte-level damage
            position = rng.randrange(len(body))
            body = body[:position] + bytes([rng.randrange(256)]) + body[position + 1 :]
        response = post(shared_server, body, session=session)
        statuses.add(response.status_code)
        assert response.status_code in (200, 400, 401), (response.status_code, body[:200])
    assert {400, 401} <= statuses


# --- concurrency, slowness, faults ---------------------------------------------------------------


def test_twenty_concurrent_deliveries_make_one_row_one_transition_one_email(live_server):
    app = live_server.app
    reference = make_order(app)
    body = envelope(item(app, reference))
    barrier = threading.Barrier(20)
    answers = []

    def deliver():
        barrier.wait()
        response = post(live_server, body)
        answers.append((response.status_code, response.text))

    threads = [threading.Thread(target=deliver) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert answers == [(200, "[accepted]")] * 20
    wait_for(lambda: order_status(app, reference) == "paid")
    processed(live_server, reference)
    (row,) = notifications(app)
    assert row.duplicates == 19
    assert len(events(app, reference, kind="transition")) == 1
    assert len(emails(app, reference)) == 1


def test_slow_processing_does_not_delay_the_answer(live_server, monkeypatch):
    app = live_server.app
    reference = make_order(app)
    release = threading.Event()
    real_apply = state.apply_webhook

    def slow_apply(*args, **kwargs):
        release.wait(30)  # business logic that takes far longer than Adyen's 10 s
        return real_apply(*args, **kwargs)

    monkeypatch.setattr(state, "apply_webhook", slow_apply)
    try:
        started = time.monotonic()
        response = post(live_server, envelope(item(app, reference)))
        elapsed = time.monotonic() - started
        assert response.text == "[accepted]"
        assert elapsed < 1.0
        wait_for(lambda: notifications(app)[0].status == "processing", message="processing under way")
        assert order_status(app, reference) == "pending"
    finally:
        release.set()
    wait_for(lambda: order_status(app, reference) == "paid")


def test_failing_processing_is_retried_until_it_works(live_server_factory, monkeypatch):
    server = live_server_factory(WEBHOOK_RETRY_SECONDS=0.05)
    app = server.app
    reference = make_order(app)
    broken = threading.Event()
    broken.set()
    real_apply = state.apply_webhook

    def faulty_apply(*args, **kwargs):
        if broken.is_set():
            raise RuntimeError("injected fault in the business logic")
        return real_apply(*args, **kwargs)

    monkeypatch.setattr(state, "apply_webhook", faulty_apply)
    started = time.monotonic()
    response = post(server, envelope(item(app, reference)))
    assert response.text == "[accepted]" and time.monotonic() - started < 1.0

    wait_for(lambda: notifications(app)[0].attempts >= 2, message="two failed attempts")
    row = notifications(app)[0]
    assert row.status in ("pending", "processing")
    assert "injected fault" in (row.last_error or "") or row.status == "processing"
    assert order_status(app, reference) == "pending"

    broken.clear()  # the fault is repaired
    wait_for(lambda: order_status(app, reference) == "paid")
    processed(server, reference)
    (row,) = notifications(app)
    assert row.status == "processed" and row.last_error is None
    assert len(emails(app, reference)) == 1


def test_processing_gives_up_after_the_attempt_limit(app, monkeypatch):
    app.config.update(WEBHOOK_RETRY_SECONDS=0, WEBHOOK_MAX_ATTEMPTS=3)
    reference = make_order(app)
    store_one(app, item(app, reference))
    monkeypatch.setattr(state, "apply_webhook", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("always broken")))
    with app.app_context():
        for _ in range(5):
            processing.process_due()
    (row,) = notifications(app)
    assert (row.status, row.attempts) == ("failed", 3)
    assert "always broken" in row.last_error


def test_storage_failure_is_500_so_adyen_retries(live_server):
    app = live_server.app
    reference = make_order(app)
    with app.app_context():
        engine = db.engine

    def move_table(old, new):
        with engine.begin() as connection:
            connection.exec_driver_sql(f"ALTER TABLE {old} RENAME TO {new}")

    # The database refuses the insert (here: the table is not there), as a full disk or a lost
    # server would.
    move_table("notifications", "notifications_away")
    try:
        response = post(live_server, envelope(item(app, reference)))
        assert response.status_code == 500
        assert response.text == "could not store the notification"
    finally:
        move_table("notifications_away", "notifications")
    assert notifications(app) == []
    # Adyen's retry then gets through.
    assert post(live_server, envelope(item(app, reference))).text == "[accepted]"
    wait_for(lambda: order_status(app, reference) == "paid")


def store_one(app, signed_item):
    from shop.webhooks import parsing

    with app.app_context():
        return processing.store(parsing.parse_item(signed_item), envelope(signed_item))


def test_workers_claim_each_notification_once(app, monkeypatch):
    """Several workers (threads here, processes in production) never apply one notification twice."""
    references = [make_order(app) for _ in range(10)]
    for reference in references:
        store_one(app, item(app, reference))
    calls = []
    real_apply = state.apply_webhook
    monkeypatch.setattr(
        state, "apply_webhook", lambda order_id, event: calls.append(order_id) or real_apply(order_id, event)
    )
    barrier = threading.Barrier(6)

    def work():
        with app.app_context():
            barrier.wait()
            processing.process_due()

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(calls) == sorted(get_order(app, reference).id for reference in references)
    assert {row.status for row in notifications(app)} == {"processed"}
    assert all(order_status(app, reference) == "paid" for reference in references)


def test_an_expired_lease_is_reclaimed(app):
    """A worker died mid-processing: once its lease ends another worker takes the row over."""
    reference = make_order(app)
    stored = store_one(app, item(app, reference))
    with app.app_context():
        db.session.execute(
            update(Notification)
            .where(Notification.id == stored.notification_id)
            .values(status="processing", attempts=1, next_attempt_at=Notification.received_at)
        )
        db.session.commit()
        assert processing.process_due() == 1
    (row,) = notifications(app)
    assert (row.status, row.attempts) == ("processed", 2)
    assert order_status(app, reference) == "paid"


def test_a_live_lease_is_left_alone(app):
    reference = make_order(app)
    store_one(app, item(app, reference))
    with app.app_context():
        row_id = db.session.execute(select(Notification.id)).scalar_one()
        assert processing.QUEUE.claim_one(row_id) is not None
        assert processing.QUEUE.claim_one(row_id) is None  # claimed already: its lease has not ended
        assert processing.process_due() == 0
    assert order_status(app, reference) == "pending"


def test_logs_carry_no_secrets(live_server, caplog):
    caplog.set_level(logging.DEBUG)
    app = live_server.app
    reference = make_order(app)
    signed = item(app, reference)
    post(live_server, envelope(signed))
    post(live_server, envelope(signed), auth_pair=("adyen-webhook", "a-wrong-password-123"))
    tampered = dict(signed, additionalData={"hmacSignature": "AAAAbogusSignatureAAAA="})
    post(live_server, envelope(tampered))
    wait_for(lambda: order_status(app, reference) == "paid")
    text = caplog.text
    assert "webhook accepted" in text and "invalid HMAC signature" in text
    for secret in (
        signed["additionalData"]["hmacSignature"],
        "AAAAbogusSignatureAAAA=",
        app.config["ADYEN_HMAC_KEY"],
        app.config["WEBHOOK_PASSWORD"],
        "a-wrong-password-123",
        "Authorization",
        "YWR5ZW4td2ViaG9vaz",  # the start of base64("adyen-webhook:...")
    ):
        assert secret not in text


def test_webhook_needs_no_cookie_or_csrf_token(live_server):
    app = live_server.app
    reference = make_order(app)
    response = requests.post(
        live_server.url + "/webhooks/adyen",
        data=envelope(item(app, reference)),
        auth=auth(app),
        headers={"Content-Type": "application/json"},
        allow_redirects=False,
        timeout=5,
    )
    assert response.text == "[accepted]"
    assert "Set-Cookie" not in response.headers
