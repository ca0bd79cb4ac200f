"""The simulator's refunds, reversals and cancels, as Adyen's v71 spec and webhooks have them.

The official Adyen library calls them unchanged; every answer is checked against the spec's response
schema for its status; each outcome arrives as a signed webhook whose originalReference is the
payment's pspReference, checked with the shop's own HMAC code; and the faults refund_refused,
refund_failed and late_authorisation do what the faults page says.
"""

import uuid

import Adyen
import pytest
import requests
from Adyen.exceptions import AdyenAPIResponseError, AdyenAPIUnprocessableEntity

from shop.adyen.signature import is_valid, signing_string
from shop.db import db
from shop.simulator import faults, payments
from tests.console_helpers import FAST, order_id_from, post_form, run_scenario, settled
from tests.simulator_helpers import (
    API_PATH,
    GOOD_CARD,
    PSP_REFERENCE,
    VALIDATORS,
    WebhookReceiver,
    api_headers,
    conforms,
    pay,
    start_payment,
    wait_for,
)
from tests.webhook_helpers import in_app, notifications

REFUNDS = "/payments/{paymentPspReference}/refunds"
REVERSALS = "/payments/{paymentPspReference}/reversals"
CANCELS = "/payments/{paymentPspReference}/cancels"
PAID = 12500  # fils: payment_request's amount


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A simulator that queues its webhooks but sends none (the API's answers are what is tested)."""
    from tests.conftest import LiveServer

    live = LiveServer(tmp_path_factory.mktemp("simulator-modifications"), BACKGROUND_WORKER=False)
    yield live
    live.stop()


@pytest.fixture
def receiver():
    stand_in = WebhookReceiver()
    yield stand_in
    stand_in.stop()


@pytest.fixture
def sending(live_server_factory, receiver):
    """A simulator that posts its webhooks to `receiver` at once."""
    return live_server_factory(
        SIMULATOR_WEBHOOK_URL=receiver.url, SIMULATOR_WEBHOOK_DELAY=0, SIMULATOR_RETRY_SCALE=0.001
    )


def modifications_api(live):
    """The official library's modifications API, pointed at the simulator."""
    adyen = Adyen.Adyen(xapikey=live.app.config["ADYEN_API_KEY"], platform="test", http_force="requests")
    adyen.checkout.modifications_api.baseUrl = live.url + API_PATH
    return adyen.checkout.modifications_api


def paid(live):
    """The pspReference of a KNET payment of 12.500 KWD the shopper has just paid."""
    response, psp_reference, _ = pay(live)
    assert response.status_code == 303
    return psp_reference


def account(live):
    return live.app.config["ADYEN_MERCHANT_ACCOUNT"]


def refund_body(live, value=PAID, currency="KWD", **extra):
    return dict({"merchantAccount": account(live), "amount": {"currency": currency, "value": value}}, **extra)


def modify(live, endpoint, psp_reference, body, key=None):
    """POST a modification and check the answer against the spec (201 or a ServiceError)."""
    headers = api_headers(live, **({"Idempotency-Key": key} if key else {}))
    path = endpoint.replace("{paymentPspReference}", psp_reference)
    response = requests.post(live.url + API_PATH + path, json=body, headers=headers, timeout=20)
    conforms(endpoint, response)
    return response


def error_of(response):
    return response.status_code, response.json()["errorCode"], response.json()["message"]


# The official library, unchanged ------------------------------------------------------------------------


def test_the_official_library_refunds_reverses_and_cancels(server):
    api = modifications_api(server)
    psp_reference = paid(server)
    refund = api.refund_captured_payment(
        refund_body(server, 5000, reference="REFUND-1", merchantRefundReason="CUSTOMER REQUEST"),
        psp_reference,
        idempotency_key=str(uuid.uuid4()),
    )
    assert refund.status_code == 201
    assert not list(VALIDATORS["PaymentRefundResponse"].iter_errors(refund.message))
    assert refund.message["status"] == "received"
    assert refund.message["paymentPspReference"] == psp_reference
    assert refund.message["amount"] == {"currency": "KWD", "value": 5000}
    assert refund.message["reference"] == "REFUND-1"
    assert refund.message["merchantRefundReason"] == "CUSTOMER REQUEST"
    assert PSP_REFERENCE.match(refund.message["pspReference"]) and refund.message["pspReference"] != psp_reference

    reversal = api.refund_or_cancel_payment({"merchantAccount": account(server)}, paid(server))
    assert reversal.status_code == 201
    assert not list(VALIDATORS["PaymentReversalResponse"].iter_errors(reversal.message))
    cancel = api.cancel_authorised_payment_by_psp_reference(
        {"merchantAccount": account(server), "reference": "CANCEL-1"}, paid(server)
    )
    assert cancel.status_code == 201
    assert not list(VALIDATORS["PaymentCancelResponse"].iter_errors(cancel.message))
    assert len({refund.message["pspReference"], reversal.message["pspReference"], cancel.message["pspReference"]}) == 3


def test_the_official_library_gets_adyens_error_for_an_unknown_payment(server):
    with pytest.raises(AdyenAPIUnprocessableEntity) as raised:
        modifications_api(server).refund_captured_payment(refund_body(server), "NOSUCHPAYMENT000")
    assert (raised.value.status_code, raised.value.error_code) == (422, "167")


# Adyen's refusals ----------------------------------------------------------------------------------------


def test_a_payment_that_was_never_authorised_cannot_be_modified(server):
    _, refused, _ = pay(server, card=dict(GOOD_CARD, pin="9999"))
    _, waiting, _ = start_payment(server)  # the shopper is still on the KNET page
    for psp_reference in (refused, waiting, "NOSUCHPAYMENT000"):
        for endpoint, body in ((REFUNDS, refund_body(server)), (REVERSALS, {"merchantAccount": account(server)})):
            answer = modify(server, endpoint, psp_reference, body)
            assert error_of(answer) == (422, "167", "Original pspReference required for this operation")


def test_refunds_never_add_up_to_more_than_was_paid(server):
    psp_reference = paid(server)
    assert modify(server, REFUNDS, psp_reference, refund_body(server, 5000)).status_code == 201
    assert modify(server, REFUNDS, psp_reference, refund_body(server, 5000)).status_code == 201
    over = modify(server, REFUNDS, psp_reference, refund_body(server, 2501))
    assert error_of(over) == (422, "137", "Invalid amount specified")
    assert modify(server, REFUNDS, psp_reference, refund_body(server, 2500)).status_code == 201
    nothing_left = modify(server, REFUNDS, psp_reference, refund_body(server, 1))
    assert error_of(nothing_left)[:2] == (422, "137")
    # A reversal is of the whole payment: not after a refund.
    assert error_of(modify(server, REVERSALS, psp_reference, {"merchantAccount": account(server)}))[:2] == (422, "137")


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"amount": {"currency": "EUR", "value": 100}}, (422, "138", "Unsupported currency specified")),
        ({"amount": {"currency": "KWD", "value": 0}}, (422, "137", "Invalid amount specified")),
        ({"amount": {"currency": "KWD", "value": PAID + 1}}, (422, "137", "Invalid amount specified")),
        ({"amount": None}, (422, "100", "Required object 'amount' is not provided.")),
        ({"merchantAccount": "SomeoneElsesAccount"}, (403, "901", "Invalid Merchant Account")),
        ({"merchantAccount": None}, (403, "901", "Invalid Merchant Account")),
        ({"reference": "R" * 81}, (422, "130", "Reference is longer than 80 characters")),
        ({"merchantRefundReason": "BORED"}, (400, "702", None)),
        ({"originalReference": "X"}, (400, "702", None)),
    ],
    ids=[
        "currency",
        "zero",
        "more-than-paid",
        "no-amount",
        "merchant-account",
        "no-merchant-account",
        "long-reference",
        "reason-not-adyens",
        "unknown-field",
    ],
)
def test_a_refund_adyen_refuses_is_refused_and_takes_nothing(server, change, expected):
    psp_reference = paid(server)
    body = refund_body(server)
    for name, value in change.items():
        if value is None:
            body.pop(name)
        else:
            body[name] = value
    status, code, message = error_of(modify(server, REFUNDS, psp_reference, body))
    assert (status, code) == expected[:2]
    if expected[2]:
        assert message == expected[2]
    # Nothing was taken: the whole payment can still be refunded.
    assert modify(server, REFUNDS, psp_reference, refund_body(server)).status_code == 201


def test_the_wrong_api_key_is_401(server):
    response = requests.post(
        server.url + API_PATH + f"/payments/{paid(server)}/refunds",
        json=refund_body(server),
        headers={"X-API-Key": "wrong"},
        timeout=10,
    )
    assert (response.status_code, response.json()["errorCode"]) == (401, "000")


# Idempotency ----------------------------------------------------------------------------------------------


def test_the_same_idempotency_key_gets_the_same_answer_and_makes_one_refund(server):
    psp_reference = paid(server)
    key = str(uuid.uuid4())
    first = modify(server, REFUNDS, psp_reference, refund_body(server, 10000), key=key)
    again = modify(server, REFUNDS, psp_reference, refund_body(server, 10000), key=key)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert first.headers["pspReference"] == again.headers["pspReference"] == first.json()["pspReference"]
    assert again.headers["Idempotency-Key"] == key
    # One refund of 10.000 was made, so 2.500 is left, not 12.500.
    assert modify(server, REFUNDS, psp_reference, refund_body(server, 2501)).status_code == 422
    assert modify(server, REFUNDS, psp_reference, refund_body(server, 2500), key=str(uuid.uuid4())).status_code == 201
    assert len(queued(server, "REFUND", psp_reference)) == 2


def test_a_refusal_is_not_kept_for_the_key_once_fixed_it_goes_through_with_it(server):
    psp_reference = paid(server)
    key = str(uuid.uuid4())
    refused = modify(server, REFUNDS, psp_reference, refund_body(server, merchantRefundReason="BORED"), key=key)
    assert refused.status_code == 400
    assert modify(server, REFUNDS, psp_reference, refund_body(server), key=key).status_code == 201


def test_a_refund_that_timed_out_is_answered_on_retry_with_the_same_key(server):
    psp_reference = paid(server)
    key = str(uuid.uuid4())
    with server.app.app_context():
        faults.inject(REFUNDS, "timeout", count=1, seconds=0.5)
    with pytest.raises(requests.Timeout):
        requests.post(
            server.url + API_PATH + f"/payments/{psp_reference}/refunds",
            json=refund_body(server),
            headers=api_headers(server, **{"Idempotency-Key": key}),
            timeout=0.2,
        )
    retried = wait_for(lambda: _answered(modify(server, REFUNDS, psp_reference, refund_body(server), key=key)))
    assert retried.status_code == 201
    assert len(queued(server, "REFUND", psp_reference)) == 1


def _answered(response):
    return response if response.status_code != 422 or response.json()["errorCode"] != "704" else None


def queued(live, event_code, original_reference):
    """The items queued for `original_reference` of `event_code`."""
    from shop.db import db
    from shop.simulator.models import SimWebhookDelivery

    def rows():
        found = db.session.query(SimWebhookDelivery).filter_by(event_code=event_code).all()
        items = [row.payload["notificationItems"][0]["NotificationRequestItem"] for row in found]
        return [item for item in items if item.get("originalReference") == original_reference]

    return in_app(live.app, rows)()


# The webhooks ------------------------------------------------------------------------------------------------


def signed_by_the_shops_key(live, item):
    return is_valid(item, [live.app.config["ADYEN_HMAC_KEY"]])


def test_a_refund_is_told_by_a_signed_refund_webhook_with_original_reference(sending, receiver):
    psp_reference = paid(sending)
    answer = modify(sending, REFUNDS, psp_reference, refund_body(sending, 4000, reference="ORDER-9-R1")).json()
    item = wait_for(lambda: receiver.items("REFUND"))[0]
    assert item["pspReference"] == answer["pspReference"]
    assert item["originalReference"] == psp_reference
    assert item["merchantReference"] == "ORDER-9-R1"
    assert item["amount"] == {"currency": "KWD", "value": 4000}
    assert (item["success"], item["reason"]) == ("true", "")
    assert item["merchantAccountCode"] == account(sending)
    assert signed_by_the_shops_key(sending, item)
    # originalReference is the second field of what is signed: change it and the signature fails.
    assert signing_string(item).split(":")[:2] == [answer["pspReference"], psp_reference]
    assert not signed_by_the_shops_key(sending, dict(item, originalReference="0000000000000000"))


def test_a_reversal_is_told_by_cancel_or_refund_and_a_cancel_by_cancellation(sending, receiver):
    reversed_payment, cancelled_payment = paid(sending), paid(sending)
    modify(sending, REVERSALS, reversed_payment, {"merchantAccount": account(sending), "reference": "REV-1"})
    modify(sending, CANCELS, cancelled_payment, {"merchantAccount": account(sending)})
    reversal = wait_for(lambda: receiver.items("CANCEL_OR_REFUND"))[0]
    cancellation = wait_for(lambda: receiver.items("CANCELLATION"))[0]
    assert (reversal["originalReference"], reversal["merchantReference"]) == (reversed_payment, "REV-1")
    assert reversal["additionalData"]["modification.action"] == "refund"
    assert reversal["amount"] == {"currency": "KWD", "value": PAID}
    assert cancellation["originalReference"] == cancelled_payment
    assert cancellation["success"] == "true"
    assert all(signed_by_the_shops_key(sending, item) for item in (reversal, cancellation))
    # Both took the whole payment.
    assert modify(sending, REFUNDS, reversed_payment, refund_body(sending, 1)).status_code == 422
    assert modify(sending, REFUNDS, cancelled_payment, refund_body(sending, 1)).status_code == 422


# Faults ------------------------------------------------------------------------------------------------------


def test_refund_refused_is_received_then_told_success_false_with_a_reason(sending, receiver):
    psp_reference = paid(sending)
    with sending.app.app_context():
        faults.inject(REFUNDS, "refund_refused", count=1, reason="Refund not allowed by the issuer")
    answer = modify(sending, REFUNDS, psp_reference, refund_body(sending))
    assert (answer.status_code, answer.json()["status"]) == (201, "received")
    item = wait_for(lambda: receiver.items("REFUND"))[0]
    assert (item["success"], item["reason"]) == ("false", "Refund not allowed by the issuer")
    assert item["originalReference"] == psp_reference and signed_by_the_shops_key(sending, item)
    # Nothing was refunded: the whole amount can be refunded again, and this time it is.
    modify(sending, REFUNDS, psp_reference, refund_body(sending))
    assert [i["success"] for i in wait_for(lambda: receiver.items("REFUND")[1:] or None)] == ["true"]


def test_refund_failed_is_a_successful_refund_then_refund_failed(sending, receiver):
    psp_reference = paid(sending)
    with sending.app.app_context():
        faults.inject(REVERSALS, "refund_failed", count=1, seconds=0)
    answer = modify(sending, REVERSALS, psp_reference, {"merchantAccount": account(sending)}).json()
    first = wait_for(lambda: receiver.items("CANCEL_OR_REFUND"))[0]
    failed = wait_for(lambda: receiver.items("REFUND_FAILED"))[0]
    assert first["success"] == "true"
    assert (failed["success"], failed["reason"]) == ("true", "Refund Failed")  # as Webhooks-v1's example
    assert failed["pspReference"] == first["pspReference"] == answer["pspReference"]
    assert failed["originalReference"] == psp_reference and signed_by_the_shops_key(sending, failed)
    assert [item["eventCode"] for item in receiver.items() if item.get("originalReference")] == [
        "CANCEL_OR_REFUND",
        "REFUND_FAILED",
    ]
    # The money came back to the payment: it can be refunded.
    assert modify(sending, REFUNDS, psp_reference, refund_body(sending)).status_code == 201


def test_late_authorisation_follows_offer_closed_and_the_late_payment_can_be_refunded(sending, receiver):
    answer, psp_reference, _ = start_payment(sending)
    with sending.app.app_context():
        faults.inject("webhooks", "late_authorisation", count=1, seconds=0)
        assert payments.expire_soon(psp_reference, 0)
    closed = wait_for(lambda: receiver.items("OFFER_CLOSED"))[0]
    late = wait_for(lambda: receiver.items("AUTHORISATION"))[0]
    assert closed["pspReference"] == late["pspReference"] == psp_reference
    assert late["success"] == "true" and late["eventDate"] >= closed["eventDate"]
    assert [item["eventCode"] for item in receiver.items()] == ["OFFER_CLOSED", "AUTHORISATION"]
    # The KNET page stays closed for the shopper; the payment is Adyen's to refund.
    assert requests.get(answer["action"]["url"], timeout=10).status_code == 410
    assert modify(sending, REFUNDS, psp_reference, refund_body(sending)).status_code == 201


def test_the_fault_page_offers_the_new_faults_with_their_settings(server):
    page = requests.get(server.url + "/_sim/faults", timeout=10).text
    for kind in ("late_authorisation", "refund_refused", "refund_failed"):
        assert kind in page
    assert 'name="reason"' in page


@pytest.mark.parametrize("reason", ["", "x" * 201])
def test_a_refund_refused_reason_must_be_a_short_text(server, reason):
    with server.app.app_context(), pytest.raises(ValueError, match="reason"):
        faults.inject(REFUNDS, "refund_refused", reason=reason)


def test_refund_faults_apply_to_refunds_and_reversals_only(server):
    with server.app.app_context(), pytest.raises(ValueError, match="refund_refused applies to"):
        faults.inject(CANCELS, "refund_refused")


def test_api_faults_apply_to_the_modification_endpoints_too(server):
    psp_reference = paid(server)
    with server.app.app_context():
        faults.inject(REFUNDS, "http_500", count=1)
    with pytest.raises(AdyenAPIResponseError):
        modifications_api(server).refund_captured_payment(refund_body(server), psp_reference)
    # It did nothing: the whole amount is still there.
    assert modify(server, REFUNDS, psp_reference, refund_body(server)).status_code == 201


# What the Customer Area sends by itself ------------------------------------------------------------------


def test_the_deliveries_page_sends_the_customer_areas_test_notification_and_report_available(live_server):
    """Pressed on the simulator's console, both go signed to the shop, which acknowledges them and
    changes no order."""
    http = requests.Session()
    outbox = http.get(live_server.url + "/console/deliveries", timeout=10)
    assert "Send the test notification" in outbox.text
    assert post_form(http, outbox, "/console/deliveries/customer-area-test").status_code == 200
    outbox = http.get(live_server.url + "/console/deliveries", timeout=10)
    assert post_form(http, outbox, "/console/deliveries/report-available").status_code == 200

    def stored():
        rows = notifications(live_server.app)
        return rows if len(rows) == 2 and all(row.status not in ("pending", "processing") for row in rows) else None

    test, report = wait_for(stored, message="both stored by the shop")
    assert (test.event_code, test.psp_reference, test.merchant_reference) == (
        "AUTHORISATION",
        "test_AUTHORISATION_1",
        "testMerchantRef1",
    )
    assert report.event_code == "REPORT_AVAILABLE"
    assert report.psp_reference.startswith("payments_accounting_report_") and report.psp_reference.endswith(".csv")
    assert report.reason.startswith("https://ca-test.adyen.com/reports/download/MerchantAccount/")
    assert report.reason.endswith("/" + report.psp_reference)
    assert {row.status for row in (test, report)} == {"ignored"}, [(row.status, row.note) for row in (test, report)]

    def outbox_delivered():
        page = http.get(live_server.url + "/console/deliveries", timeout=10).text
        return page.count('<span class="status status-delivered">delivered</span>') == 2

    # The sender records the shop's 200 just after the shop has stored the item.
    wait_for(outbox_delivered, message="both shown delivered in the outbox")


# Demo scenarios ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, final, refunded, reason",
    [
        ("refunded", "refunded", [12500], "CUSTOMER REQUEST"),
        ("partly_refunded", "partially_refunded", [3125, 3125], "CUSTOMER REQUEST"),
        ("late_refunded", "refunded", [12500], "DUPLICATE"),
    ],
)
def test_a_refund_demo_scenario_ends_with_its_refunds_told_by_the_simulators_webhooks(
    live_server_factory, name, final, refunded, reason
):
    from shop.models import Order, Refund

    server = live_server_factory(ENV=FAST)
    landed = run_scenario(server, name)
    assert landed.status_code == 200, landed.text[:500]
    order_id = order_id_from(landed.url)
    status = in_app(server.app, lambda: db.session.get(Order, order_id).status)
    wait_for(lambda: status() == final, timeout=20, message=f"the order {final}")
    wait_for(lambda: settled(server.app), message="every webhook applied")
    with server.app.app_context():
        order = db.session.get(Order, order_id)
        rows = db.session.query(Refund).filter_by(order_id=order_id).order_by(Refund.id).all()
        assert [(row.amount_value, row.reason, row.status) for row in rows] == [
            (amount, reason, "succeeded") for amount in refunded
        ]
        assert order.needs_refund_decision is (name == "late_refunded")
        payment_psp, reference = order.psp_reference, order.reference
        refund_psps = [row.psp_reference for row in rows]
    # Each refund's REFUND came from the simulator, about the order's payment.
    items = [item for item in queued(server, "REFUND", payment_psp)]
    assert sorted(item["pspReference"] for item in items) == sorted(refund_psps)
    assert {item["success"] for item in items} == {"true"}
    if name == "late_refunded":
        events = [row.event_code for row in notifications(server.app, merchant_reference=reference)]
        assert events[:2] == ["OFFER_CLOSED", "AUTHORISATION"]
