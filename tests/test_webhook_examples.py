"""Every example of Adyen's Webhooks spec, signed with the shop's HMAC key and posted over HTTP:
each one is acknowledged ([accepted]), and stored to be applied, ignored or flagged as it says.

The examples are tests/fixtures/webhooks-v1-examples.json, copied unchanged from Adyen's OpenAPI
spec (Adyen/adyen-openapi, MIT licence: tests/fixtures/README.md) by
scripts/extract_webhook_examples.py. Their placeholder signatures are replaced by real ones.
"""

import copy
import json
from pathlib import Path

import pytest
import requests

from shop.adyen.signature import sign, sign_payload
from tests.conftest import LiveServer
from tests.shopper import text_of
from tests.webhook_helpers import auth, counts, make_order, notifications, order_status, wait_for

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "webhooks-v1-examples.json").read_text(encoding="utf-8"))
EXAMPLES = FIXTURE["examples"]
STANDARD = sorted(name for name, example in EXAMPLES.items() if "notificationItems" in example["value"])
# What the shop does with the events it acts on, once addressed to it; every other one is ignored.
APPLIED = {"AUTHORISATION": "paid", "OFFER_CLOSED": "expired"}
# Refund events are processed: the examples' originalReference names no payment of this shop, so they
# change nothing (tests/test_refund_webhooks.py applies them to refunds the shop asked for).
REFUND_EVENTS = ("REFUND", "REFUND_FAILED", "REFUNDED_REVERSED", "CANCEL_OR_REFUND", "CANCELLATION")


def test_the_fixture_holds_every_example_of_the_spec():
    assert len(EXAMPLES) == 42 and len(STANDARD) == 39
    assert FIXTURE["source"].startswith("https://github.com/Adyen/adyen-openapi/blob/")


def items_of(body):
    return [wrapper["NotificationRequestItem"] for wrapper in body["notificationItems"]]


def signed(app, body):
    """(bytes, headers) for a body: each Standard item signed in its additionalData; an other
    webhook signed as a whole in the HmacSignature header."""
    key = app.config["ADYEN_HMAC_KEY"]
    headers = {"Content-Type": "application/json"}
    if "notificationItems" in body:
        for fields in items_of(body):
            fields.setdefault("additionalData", {}).pop("hmacSignature", None)
            fields["additionalData"]["hmacSignature"] = sign(fields, key)
        return json.dumps(body).encode(), headers
    data = json.dumps(body).encode()
    return data, dict(headers, HmacSignature=sign_payload(data, key))


def deliver(server, data, headers):
    return requests.post(server.url + "/webhooks/adyen", data=data, headers=headers, auth=auth(server.app), timeout=10)


def addressed_to(app, body, reference):
    """The example as this shop's Adyen would send it: its merchant account, the test
    environment, and the merchantReference of one of its orders."""
    body["live"] = "false"
    for fields in items_of(body):
        fields["merchantAccountCode"] = app.config["ADYEN_MERCHANT_ACCOUNT"]
        fields["merchantReference"] = reference
    return body


@pytest.fixture(scope="module")
def published_server(tmp_path_factory):
    server = LiveServer(tmp_path_factory.mktemp("examples-published"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def shop_server(tmp_path_factory):
    server = LiveServer(tmp_path_factory.mktemp("examples-addressed"))
    yield server
    server.stop()


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_each_example_as_published_is_acknowledged_and_never_applied(published_server, name):
    """As published, the examples are for YOUR_MERCHANT_ACCOUNT (three of them live): signed by
    Adyen but not this shop's, so flagged. The three "other webhooks" (notices of change) name no
    merchant account: ignored, since the shop does not act on them."""
    app = published_server.app
    body = copy.deepcopy(EXAMPLES[name]["value"])
    data, headers = signed(app, body)
    response = deliver(published_server, data, headers)
    assert (response.status_code, response.text) == (200, "[accepted]")
    (row,) = [row for row in notifications(app) if row.raw_body == data.decode()]
    if name in STANDARD:
        (fields,) = items_of(body)
        assert (row.psp_reference, row.event_code) == (fields["pspReference"], fields["eventCode"])
        assert row.status == "flagged"
        assert "merchantAccountCode 'YOUR_MERCHANT_ACCOUNT' is not this shop's" in row.note
        assert ("live is 'true'" in row.note) == (body["live"] == "true")
    else:
        assert (row.status, row.event_code) == ("ignored", body["type"])
        assert "(not a Standard notification), which this shop does not act on" in row.note
        assert row.psp_reference == body["data"]["pspReference"]


@pytest.mark.parametrize("name", STANDARD)
def test_each_example_addressed_to_the_shop_is_applied_or_ignored_as_its_event_says(shop_server, name):
    app = shop_server.app
    (fields,) = items_of(EXAMPLES[name]["value"])
    amount = fields["amount"]
    reference = make_order(app, amount_value=amount["value"], currency=amount["currency"])
    body = addressed_to(app, copy.deepcopy(EXAMPLES[name]["value"]), reference)
    response = deliver(shop_server, *signed(app, body))
    assert (response.status_code, response.text) == (200, "[accepted]")
    expected = APPLIED.get(fields["eventCode"])
    if fields["eventCode"] in REFUND_EVENTS:
        wait_for(lambda: notifications(app, merchant_reference=reference)[0].status == "processed")
        assert "no refund of this shop matches" in notifications(app, merchant_reference=reference)[0].note
        assert order_status(app, reference) == "pending"
    elif expected:
        wait_for(lambda: order_status(app, reference) == expected, message=f"the order {expected}")
        wait_for(lambda: notifications(app, merchant_reference=reference)[0].status == "processed")
    else:
        (row,) = notifications(app, merchant_reference=reference)
        assert row.status == "ignored"
        assert f"this shop does not act on {fields['eventCode']}: acknowledged, not processed" == row.note
        assert order_status(app, reference) == "pending"


def test_all_examples_in_one_body_are_acknowledged_each_judged_on_its_own(live_server):
    """39 items in one delivery (no count limit but the body's size), for one order: the
    AUTHORISATION pays it, OFFER_CLOSED then changes nothing, the five refund events match no refund
    of this shop's payment, the 32 others are ignored; and the console's inbox shows each of them with why."""
    app = live_server.app
    reference = make_order(app, amount_value=1000, currency="EUR")
    body = {"live": "false", "notificationItems": []}
    for name in STANDARD:
        body["notificationItems"] += addressed_to(app, copy.deepcopy(EXAMPLES[name]["value"]), reference)[
            "notificationItems"
        ]
    response = deliver(live_server, *signed(app, body))
    assert (response.status_code, response.text) == (200, "[accepted]")
    wait_for(lambda: order_status(app, reference) == "paid", message="the AUTHORISATION applied")

    def settled():
        return all(row.status not in ("pending", "processing") for row in notifications(app))

    wait_for(settled, message="both applied")
    rows = notifications(app)
    assert len(rows) == 39
    statuses = {row.event_code: row.status for row in rows}
    assert {code for code, status in statuses.items() if status == "processed"} == {*APPLIED, *REFUND_EVENTS}
    assert list(statuses.values()).count("ignored") == 32
    assert order_status(app, reference) == "paid"
    page = text_of(requests.get(live_server.url + "/console/webhooks", timeout=10).text)
    assert "Stored: 39 · ignored 32 · processed 7" in page
    assert "this shop does not act on REPORT_AVAILABLE" in page


@pytest.mark.parametrize(
    "header", [None, "", "bm90IGEgc2lnbmF0dXJl", "forged"], ids=["none", "empty", "wrong", "other-key"]
)
def test_an_other_webhook_without_its_signature_is_401_and_nothing_stored(live_server, header):
    app = live_server.app
    name = "post-DIRECT_DEBIT_NOTICE_OF_CHANGE_NOTIFICATION-ach_notice_of_change"
    data, headers = signed(app, copy.deepcopy(EXAMPLES[name]["value"]))
    if header == "forged":  # signed with a key that is not the shop's
        headers["HmacSignature"] = sign_payload(data, "00" * 32)
    elif header is None:
        del headers["HmacSignature"]
    else:
        headers["HmacSignature"] = header
    before = counts(app)
    response = deliver(live_server, data, headers)
    assert (response.status_code, response.text) == (401, "invalid signature")
    assert counts(app) == before
