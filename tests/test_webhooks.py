"""POST /webhooks/adyen over real HTTP: verification, storage, acknowledgement, background processing.

Docs: https://docs.adyen.com/development-resources/webhooks (store, answer within 10 s, then process)
and https://docs.adyen.com/development-resources/webhooks/secure-webhooks/verify-hmac-signatures.
Every rejection is checked to leave the database exactly as it was.
"""

import html
import json
import logging
import random
import threading
import time

import pytest
import requests
from sqlalchemy import select, update

from shop.adyen.signature import sign
from shop.db import db
from shop.models import Notification
from shop.orders import state
from shop.webhooks import parsing, processing
from tests.conftest import LiveServer
from tests.shopper import text_of
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
        {"event_code": "CAPTURE", "originalReference": "PSPPAYMENT000001"},  # refunds: tests/test_refunds.py
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


def report_available(app, psp="settlement_detail_report_batch_12.csv"):
    """REPORT_AVAILABLE as Adyen sends it: the pspReference is the report's file name."""
    return item(
        app,
        "",
        psp=psp,
        event_code="REPORT_AVAILABLE",
        value=0,
        currency="EUR",
        reason="https://ca-test.adyen.com/reports/download/MerchantAccount/ShopECOM/" + psp,
    )


def test_a_report_beside_an_authorisation_both_acknowledged_the_payment_applied(live_server):
    """The issue's case: a 37-character file name as pspReference no longer sinks the batch."""
    app = live_server.app
    reference = make_order(app)
    report = report_available(app)
    assert len(report["pspReference"]) == 37
    response = post(live_server, envelope(report, item(app, reference)))
    assert (response.status_code, response.text) == (200, "[accepted]")
    wait_for(lambda: order_status(app, reference) == "paid", message="the AUTHORISATION applied")
    processed(live_server, reference)
    stored_report, payment = notifications(app)
    assert (stored_report.psp_reference, stored_report.status) == ("settlement_detail_report_batch_12.csv", "ignored")
    assert "this shop does not act on REPORT_AVAILABLE" in stored_report.note
    assert (payment.merchant_reference, payment.status) == (reference, "processed")
    assert len(emails(app, reference)) == 1


def test_more_than_six_items_are_all_acknowledged_and_applied(live_server):
    """No count limit but the body's size: twelve payments and a report in one body."""
    app = live_server.app
    references = [make_order(app) for _ in range(12)]
    items = [item(app, reference) for reference in references] + [report_available(app)]
    assert post(live_server, envelope(*items)).text == "[accepted]"
    wait_for(lambda: all(order_status(app, r) == "paid" for r in references), message="twelve orders paid")
    settle(app)
    assert sorted(row.status for row in notifications(app)) == ["ignored"] + ["processed"] * 12


def test_a_customer_area_test_notification_is_acknowledged_and_ignored(live_server):
    """Developers > Webhooks > Test configuration sends pspReference test_AUTHORISATION_1,
    merchantReference testMerchantRef1."""
    app = live_server.app
    test = item(app, "testMerchantRef1", psp="test_AUTHORISATION_1", value=1000, currency="EUR")
    assert post(live_server, envelope(test)).text == "[accepted]"
    (row,) = notifications(app)
    assert (row.status, row.merchant_reference) == ("ignored", "testMerchantRef1")
    assert "a test webhook from the Customer Area" in row.note
    page = html.unescape(requests.get(live_server.url + "/console/webhooks", timeout=10).text)
    assert "test_AUTHORISATION_1" in page and "a test webhook from the Customer Area" in page


def test_one_bad_signature_refuses_the_whole_batch(shared_server):
    """Tampered: nothing of it is stored, not even its well-signed items or its report."""

    def body(app, reference):
        forged = item(app, "SOMEONE-ELSE", event_code="OFFER_CLOSED", key=OTHER_KEY)
        return envelope(report_available(app, psp=f"report_{reference}.csv"), item(app, reference), forged)

    assert_rejected(shared_server, body, 401)


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


# --- authenticated but not for this shop: acknowledged, flagged, never applied ---------------------


def assert_flagged(server, body, reference, caplog, mismatch):
    """[accepted]; one row, flagged with `mismatch` in its note and in a WARNING; the order untouched,
    also once the worker has run; the console's inbox shows the row and counts it."""
    app = server.app
    settle(app)
    caplog.clear()
    response = post(server, body)
    assert (response.status_code, response.text) == (200, "[accepted]")
    (row,) = [row for row in notifications(app) if row.merchant_reference == reference]
    assert row.status == "flagged" and row.processed_at is not None
    assert mismatch in row.note and "acknowledged, not processed" in row.note
    warnings = [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "NOT applied" in r.getMessage()
    ]
    assert len(warnings) == 1 and mismatch in warnings[0] and reference in warnings[0]
    with app.app_context():
        processing.process_due()  # what the worker does: a flagged row is never claimed
    assert order_status(app, reference) == "pending"
    assert emails(app, reference) == [] and events(app, reference, kind="transition") == []
    assert notifications(app, id=row.id)[0].status == "flagged"
    page = requests.get(server.url + "/console/webhooks", timeout=10).text
    assert "flagged:</strong> signed by Adyen but for another" in page and mismatch in html.unescape(page)
    return row


def test_another_merchant_account_is_acknowledged_flagged_not_applied(live_server, caplog):
    """A company-level webhook sends every merchant account's events."""
    app = live_server.app
    reference = make_order(app)
    body = envelope(item(app, reference, merchantAccountCode="SomeoneElseECOM"))
    mismatch = "merchantAccountCode 'SomeoneElseECOM' is not this shop's"
    assert_flagged(live_server, body, reference, caplog, mismatch)
    assert "<strong>1 flagged:</strong>" in requests.get(live_server.url + "/console/webhooks", timeout=10).text
    # The order's timeline shows it received and why it was not applied.
    order_page = requests.get(f"{live_server.url}/console/orders/{get_order(app, reference).id}", timeout=10)
    timeline = text_of(order_page.text)
    assert f"first delivery, not for this shop: {mismatch}" in timeline and ", flagged" in timeline


@pytest.mark.parametrize(
    "live, shown",
    [("true", "'true'"), (True, "True"), ("False", "'False'"), (KeyError, "missing")],
    ids=["true", "json-true", "capital", "missing"],
)
def test_a_live_flag_not_this_shops_is_acknowledged_flagged_not_applied(live_server, caplog, live, shown):
    app = live_server.app
    reference = make_order(app)
    body = json.loads(envelope(item(app, reference)))
    if live is KeyError:
        del body["live"]
    else:
        body["live"] = live
    expected = f"live is {shown} but this shop runs in simulator mode (expects 'false')"
    assert_flagged(live_server, json.dumps(body), reference, caplog, expected)


def test_a_live_shop_flags_test_webhooks_and_applies_live_ones(live_server_factory, caplog):
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
    # Live mode insists on https and a live URL prefix at start-up; the receiver only reads this setting.
    server.app.config["ADYEN_ENVIRONMENT"] = "live"
    reference = make_order(server.app)
    # A test-environment event must not move a live order.
    response = post(server, envelope(item(server.app, reference), live="false"))
    assert (response.status_code, response.text) == (200, "[accepted]")
    (row,) = notifications(server.app)
    assert row.status == "flagged" and "live is 'false' but this shop runs in live mode" in row.note
    assert any("NOT applied" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    other = make_order(server.app)
    assert post(server, envelope(item(server.app, other), live="true")).text == "[accepted]"
    wait_for(lambda: order_status(server.app, other) == "paid", message="the live webhook applied")
    assert order_status(server.app, reference) == "pending"


def test_previous_hmac_key_accepted_while_rotating(live_server_factory):
    server = live_server_factory(ENV={"ADYEN_HMAC_KEY_PREVIOUS": OTHER_KEY})
    app = server.app
    reference = make_order(app)
    assert post(server, envelope(item(app, reference, key=OTHER_KEY))).text == "[accepted]"
    app.config["ADYEN_HMAC_KEY_PREVIOUS"] = None  # the rotation is over
    assert_rejected(server, lambda app, ref: envelope(item(app, ref, key=OTHER_KEY)), 401)


def with_field(**changes):
    """A signed item with fields changed after signing."""

    def body(app, reference):
        signed = item(app, reference)
        for field, value in changes.items():
            if value is KeyError:
                signed.pop(field, None)
            else:
                signed[field] = value
        return envelope(signed)

    return body


# Bodies that are not a notification at all: nothing to authenticate.
NOT_A_NOTIFICATION = {
    "empty": b"",
    "not-json": b"[accepted]",
    "not-utf8": b'{"live": "false", "notificationItems": ["\xff\xfe"]}',
    "array": b"[]",
    "null": b"null",
    "no-items": b'{"live": "false"}',
    "items-not-array": lambda app, ref: json.dumps({"live": "false", "notificationItems": item(app, ref)}),
    "empty-items": b'{"live": "false", "notificationItems": []}',
    "item-not-object": b'{"live": "false", "notificationItems": [1]}',
    "no-wrapper": b'{"live": "false", "notificationItems": [{}]}',
    # A signed item beside one without its NotificationRequestItem wrapper: the body cannot be verified.
    "second-not-wrapped": lambda app, ref: json.dumps(
        {"live": "false", "notificationItems": [{"NotificationRequestItem": item(app, ref)}, item(app, ref)]}
    ),
    "deep-nesting": b"[" * 20000 + b"]" * 20000,  # RecursionError in json, under the size cap
    "nan": b'{"live": "false", "notificationItems": [{"NotificationRequestItem": {"amount": {"value": NaN}}}]}',
    "huge-int": lambda app, ref: envelope(item(app, ref)).replace("12500", "9" * 5000),  # beyond json's digits
}


@pytest.mark.parametrize("name", sorted(NOT_A_NOTIFICATION))
def test_a_body_that_is_not_a_notification_is_400_and_nothing_stored(shared_server, name):
    response = assert_rejected(shared_server, NOT_A_NOTIFICATION[name], 400)
    assert response.text.startswith("malformed notification: ")


# A signed field changed after signing (str() of each value is signed, so a type change counts).
TAMPERED = {
    "no-psp": with_field(pspReference=KeyError),
    "empty-psp": with_field(pspReference=""),
    "psp-number": with_field(pspReference=7914073381342284),
    "psp-longer": with_field(pspReference="P" * 5000),
    "no-merchant-reference": with_field(merchantReference=KeyError),
    "no-merchant-account": with_field(merchantAccountCode=KeyError),
    "no-event-code": with_field(eventCode=KeyError),
    "no-success": with_field(success=KeyError),
    "success-bool": with_field(success=True),
    "success-capital": with_field(success="True"),
    "no-amount": with_field(amount=KeyError),
    "amount-float": with_field(amount={"value": 12500.0, "currency": "KWD"}),
    "amount-bool": with_field(amount={"value": True, "currency": "KWD"}),
    "amount-negative": with_field(amount={"value": -12500, "currency": "KWD"}),
    "no-currency": with_field(amount={"value": 12500}),
    "currency-lower": with_field(amount={"value": 12500, "currency": "kwd"}),
    "original-reference-number": with_field(originalReference=5),
    "additional-data-list": with_field(additionalData=["hmacSignature"]),
    "nested-psp": with_field(pspReference=json.loads("[" * 500 + "]" * 500)),
}


@pytest.mark.parametrize("name", sorted(TAMPERED))
def test_a_field_changed_after_signing_is_401_and_nothing_stored(shared_server, name):
    assert_rejected(shared_server, TAMPERED[name], 401)


def signed_with(**changes):
    """An item for the order with fields changed (KeyError: removed), then signed: authenticated."""

    def build(app, reference):
        fields = item(app, reference)
        for field, value in changes.items():
            if value is KeyError:
                fields.pop(field)
            else:
                fields[field] = value
        fields["additionalData"] = {"hmacSignature": sign(fields, app.config["ADYEN_HMAC_KEY"])}
        return fields

    return build


# Signed by Adyen, but with fields the shop cannot use: acknowledged, stored as ignored with why.
UNUSABLE = {
    "no-psp": (signed_with(pspReference=KeyError), "pspReference is missing"),
    "empty-psp": (signed_with(pspReference=""), "pspReference is empty"),
    "psp-number": (signed_with(pspReference=7914073381342284), "pspReference is not a string"),
    "psp-nul": (signed_with(pspReference="PSP\u0000REF"), "pspReference holds a NUL"),
    "no-event-code": (signed_with(eventCode=KeyError), "eventCode is missing"),
    "event-code-object": (signed_with(eventCode={"a": 1}), "eventCode is not a string"),
    "no-merchant-reference": (signed_with(merchantReference=KeyError), "merchantReference is missing"),
    "merchant-reference-list": (signed_with(merchantReference=["A"]), "merchantReference is not a string"),
    "original-reference-number": (signed_with(originalReference=5), "originalReference is not a string"),
    "no-success": (signed_with(success=KeyError), 'success is not "true" or "false"'),
    "success-bool": (signed_with(success=True), 'success is not "true" or "false"'),
    "success-capital": (signed_with(success="True"), 'success is not "true" or "false"'),
    "no-amount": (signed_with(amount=KeyError), "amount is not an object"),
    # str() is signed: "12500" signs as 12500 does, so this one needs no re-signing to pass.
    "amount-string": (with_field(amount={"value": "12500", "currency": "KWD"}), "amount.value is not an int64"),
    "amount-float": (signed_with(amount={"value": 12500.0, "currency": "KWD"}), "amount.value is not an int64"),
    "amount-bool": (signed_with(amount={"value": True, "currency": "KWD"}), "amount.value is not an int64"),
    "amount-past-int64": (signed_with(amount={"value": 2**63, "currency": "KWD"}), "amount.value is not an int64"),
    "no-currency": (signed_with(amount={"value": 12500}), "amount.currency is not a 3-letter code"),
    "currency-long": (signed_with(amount={"value": 12500, "currency": "KWDX"}), "amount.currency is not a 3-letter"),
    "reason-number": (signed_with(reason=5), "reason is not a string"),
    "event-date-list": (signed_with(eventDate=[2025]), "eventDate is not a string"),
}


@pytest.mark.parametrize("name", sorted(UNUSABLE))
def test_a_signed_item_with_fields_the_shop_cannot_use_is_acknowledged_and_ignored(shared_server, name):
    build, problem = UNUSABLE[name]
    app = shared_server.app
    reference = make_order(app)
    settle(app)
    built = build(app, reference)
    body = built if isinstance(built, str) else envelope(built)
    response = post(shared_server, body)
    assert (response.status_code, response.text) == (200, "[accepted]")
    raw = json.loads(body)["notificationItems"][0]["NotificationRequestItem"]
    (row,) = notifications(app, event_key=parsing.event_key(raw))
    assert row.status == "ignored"
    assert problem in row.note and "acknowledged, not processed" in row.note
    assert json.loads(row.raw_body) == json.loads(body)  # kept as sent
    settle(app)
    assert order_status(app, reference) == "pending" and emails(app, reference) == []
    # Delivered again: counted, still ignored.
    assert post(shared_server, body).text == "[accepted]"
    assert [(r.status, r.duplicates) for r in notifications(app, event_key=row.event_key)] == [("ignored", 1)]


def test_a_nul_in_an_unsigned_field_is_stored_replaced_and_the_item_applied(live_server):
    """reason and eventDate are not signed, and only shown: a NUL there (PostgreSQL text cannot
    hold one) is stored as U+FFFD; the raw body keeps the \\u0000 escape as sent."""
    app = live_server.app
    reference = make_order(app)
    signed = item(app, reference, success="false", reason="NOT\u0000CAPTURED", eventDate="2025\u0000")
    assert post(live_server, envelope(signed)).text == "[accepted]"
    wait_for(lambda: order_status(app, reference) == "failed", message="the failure applied")
    (row,) = notifications(app)
    assert (row.reason, row.event_date) == ("NOT\ufffdCAPTURED", "2025\ufffd")
    assert "NOT\\u0000CAPTURED" in row.raw_body


def test_fields_of_any_length_are_stored_whole(live_server):
    """No maxLength in Adyen's spec: a 40 000-character merchantReference and a 10 000-character
    pspReference (random, so that PostgreSQL cannot compress them under its index row limit) are
    stored whole and processed, beside a payment in the same body that is applied."""
    app = live_server.app
    rng = random.Random(12)
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    reference = make_order(app)
    long_psp = "".join(rng.choice(letters) for _ in range(10_000))
    long_reference = "".join(rng.choice(letters) for _ in range(40_000))
    nobody = item(app, long_reference, psp=long_psp, event_code="OFFER_CLOSED")
    assert post(live_server, envelope(item(app, reference), nobody)).text == "[accepted]"
    wait_for(lambda: order_status(app, reference) == "paid", message="the order paid")
    processed(live_server, long_reference)
    paid, long_one = notifications(app)
    assert (paid.merchant_reference, paid.status) == (reference, "processed")
    assert (long_one.psp_reference, long_one.merchant_reference, long_one.status) == (
        long_psp,
        long_reference,
        "processed",
    )
    assert "no order has merchantReference" in long_one.note


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


def test_a_claim_takes_no_more_rows_than_asked(app):
    """A worker that claims one row leaves the others due for the next claim (on PostgreSQL a claim
    of one once took every due row, and the rest waited for their lease to end)."""
    references = [make_order(app) for _ in range(3)]
    for reference in references:
        store_one(app, item(app, reference))
    with app.app_context():
        (claimed,) = processing.QUEUE.claim(1)
    rows = {row.id: row.status for row in notifications(app)}
    assert rows.pop(claimed.id) == "processing"
    assert sorted(rows.values()) == ["pending", "pending"]


def test_one_failing_notification_does_not_hold_up_the_rest_of_its_batch(app, monkeypatch):
    """A claimed batch is applied in one transaction; when one of its notifications fails, each is
    applied on its own: the others take effect once, the failing one waits for its retry."""
    app.config.update(WEBHOOK_RETRY_SECONDS=60)
    references = [make_order(app) for _ in range(4)]
    for reference in references:
        store_one(app, item(app, reference))
    bad = references[1]
    real_decide = state.decide_webhook

    def decide(order, event):
        if order.reference == bad:
            raise RuntimeError("injected fault in one notification")
        return real_decide(order, event)

    monkeypatch.setattr(state, "decide_webhook", decide)
    with app.app_context():
        assert processing.process_due() == 3
    assert [order_status(app, reference) for reference in references] == ["paid", "pending", "paid", "paid"]
    rows = {row.merchant_reference: row for row in notifications(app)}
    assert rows[bad].status == "pending" and "injected fault" in rows[bad].last_error
    for reference in references:
        if reference != bad:
            assert (rows[reference].status, rows[reference].attempts) == ("processed", 1)
            assert len(transitions(app, reference)) == 1
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
    real_apply, real_apply_many = state.apply_webhook, state.apply_webhooks

    def apply_many(webhooks):  # a claimed batch, applied together
        results = real_apply_many(webhooks)
        calls.extend(order_id for order_id, _ in results)
        return results

    monkeypatch.setattr(
        state, "apply_webhook", lambda order_id, event: calls.append(order_id) or real_apply(order_id, event)
    )
    monkeypatch.setattr(state, "apply_webhooks", apply_many)
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


def test_the_webhook_route_is_listed_and_flask_answers_it_as_the_receiver_does(app):
    """`flask routes` shows POST /webhooks/adyen like every other route; the Receiver in front of
    Flask answers it first, and Flask's own view gives the very same answers."""
    from werkzeug.test import Client

    rules = {rule.rule: (rule.endpoint, rule.methods) for rule in app.url_map.iter_rules()}
    endpoint, methods = rules["/webhooks/adyen"]
    assert endpoint == "webhooks.adyen" and "POST" in methods
    reference = make_order(app)
    body = envelope(item(app, reference))
    headers = {"Content-Type": "application/json", "Authorization": _basic(app)}
    in_front, flask_itself = Client(app.wsgi_app), Client(app.wsgi_app.wsgi_app)
    for client in (in_front, flask_itself):
        accepted = client.post("/webhooks/adyen", data=body, headers=headers)
        refused = client.post("/webhooks/adyen", data=body, headers={"Content-Type": "application/json"})
        assert (accepted.status_code, accepted.get_data(as_text=True)) == (200, "[accepted]")
        assert (refused.status_code, refused.get_data(as_text=True)) == (401, "unauthorized")
        assert "object-src 'none'" in accepted.headers["Content-Security-Policy"]
    (row,) = notifications(app)
    assert row.duplicates == 1  # the second delivery was counted as what it is


def _basic(app):
    import base64

    pair = f"{app.config['WEBHOOK_USERNAME']}:{app.config['WEBHOOK_PASSWORD']}".encode()
    return "Basic " + base64.b64encode(pair).decode()
