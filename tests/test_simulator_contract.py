"""The simulated Checkout API against Adyen's own v71 spec, where Adyen catches integrations out.

Every answer here is checked against the spec's response schema for its endpoint and status
(shop/simulator/checkout_v71_schemas.json, read with jsonschema, Draft 2020-12 as OpenAPI 3.1
says), and carries a pspReference header. Each case also goes through the official Adyen library,
unchanged: a mistake Adyen refuses is refused here too, and nothing the spec allows is refused.
"""

import threading
import uuid

import Adyen
import pytest
import requests
from Adyen.exceptions import AdyenAPIResponseError

from shop.simulator import faults
from tests.conftest import LiveServer
from tests.simulator_helpers import (
    API_PATH,
    GOOD_CARD,
    SPEC,
    VALIDATORS,
    api_headers,
    conforms,
    payment_request,
    redirect_result_from,
    submit_page,
)

IN_PROGRESS = "request already processed or in progress"


def post(live, endpoint, body=None, raw=None, headers=None):
    """POST to the simulator (JSON `body`, or `raw` bytes as they are) and check the answer."""
    kwargs = {"data": raw, "headers": {"Content-Type": "application/json"}} if raw is not None else {"json": body}
    kwargs["headers"] = dict(kwargs.get("headers", {}), **api_headers(live), **(headers or {}))
    response = requests.post(live.url + API_PATH + endpoint, timeout=20, **kwargs)
    conforms(endpoint, response)
    if raw is None and 200 <= response.status_code < 300:
        assert not list(VALIDATORS[SPEC["operations"][endpoint]["request"]].iter_errors(body))
    return response


def library(live):
    """The official library's Checkout payments API, pointed at the simulator."""
    adyen = Adyen.Adyen(xapikey=live.app.config["ADYEN_API_KEY"], platform="test", http_force="requests")
    adyen.checkout.payments_api.baseUrl = live.url + API_PATH
    return adyen.checkout.payments_api


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    live = LiveServer(tmp_path_factory.mktemp("simulator-contract"), BACKGROUND_WORKER=False)
    yield live
    live.stop()


def methods_body(live, **extra):
    return dict({"merchantAccount": live.app.config["ADYEN_MERCHANT_ACCOUNT"], "countryCode": "KW"}, **extra)


def paid_redirect_result(live):
    started = post(live, "/payments", payment_request(live), headers={"Idempotency-Key": str(uuid.uuid4())})
    assert started.status_code == 200
    returned = submit_page(live, started.json()["action"], **GOOD_CARD)
    return redirect_result_from(returned.headers["Location"]), started.headers["pspReference"]


# Valid requests are answered, whatever the spec allows ---------------------------------------------------


def test_valid_requests_get_answers_of_the_spec_shape(server):
    methods = post(server, "/paymentMethods", methods_body(server, amount={"currency": "KWD", "value": 12500}))
    assert {"name": "KNET", "type": "knet"} in methods.json()["paymentMethods"]
    redirect_result, psp_reference = paid_redirect_result(server)
    answer = post(server, "/payments/details", {"details": {"redirectResult": redirect_result}}).json()
    assert (answer["resultCode"], answer["pspReference"]) == ("Authorised", psp_reference)


def test_details_answer_like_adyens_additional_data_and_no_brand_outside_cards(server):
    redirect_result, _ = paid_redirect_result(server)
    result = library(server).payments_details({"details": {"redirectResult": redirect_result}})
    assert result.message["paymentMethod"] == {"type": "knet"}  # "brand: only returned if type is scheme"
    assert result.message["additionalData"] == {
        "merchantReference": result.message["merchantReference"],
        "paymentMethod": "knet",
        "paymentMethodVariant": "knet",
    }


def test_fields_the_simulator_does_not_read_are_accepted_when_the_spec_allows_them(server):
    body = payment_request(
        server,
        channel="iOS",
        shopperLocale="ar-KW",
        lineItems=[{"id": "dates", "description": "Medjool dates", "quantity": 2, "amountIncludingTax": 6250}],
        metadata={"basket": "web-1"},
        shopperIP="192.0.2.1",
        browserInfo={
            "userAgent": "Mozilla/5.0",
            "acceptHeader": "text/html",
            "language": "ar",
            "colorDepth": 24,
            "screenHeight": 800,
            "screenWidth": 400,
            "timeZoneOffset": -180,
            "javaEnabled": False,
        },
    )
    assert post(server, "/payments", body).status_code == 200
    assert library(server).payments(body).message["resultCode"] == "RedirectShopper"


def test_a_body_as_large_as_the_spec_allows_is_not_refused(server):
    # paymentData may be 200,000 characters and each details field 20,000: far over the shop's own
    # 64 KiB form limit, and still a valid request (answered 422 only because nothing matches it).
    body = {
        "details": {"redirectResult": "X6XtfGC3!" + "A" * 19_991, "payload": "B" * 20_000},
        "paymentData": "C" * 200_000,
    }
    response = post(server, "/payments/details", body)
    assert (response.status_code, response.json()["errorCode"]) == (422, "14_018")
    with pytest.raises(Adyen.AdyenAPIUnprocessableEntity) as raised:
        library(server).payments_details(body)
    assert raised.value.error_code == "14_018"


# Client mistakes get Adyen's answers, never a 500 -----------------------------------------------------------


UNREADABLE_BODIES = {
    "amount above int64": b'{"amount": {"currency": "KWD", "value": 9223372036854775808}}',
    "lone surrogate": b'{"reference": "a\\ud800"}',
    "973 levels deep": b'{"metadata": ' + b"[" * 972 + b"]" * 972 + b"}",
    "4,301-digit integer": b'{"amount": {"currency": "KWD", "value": ' + b"9" * 4301 + b"}}",
    "NaN": b'{"amount": {"currency": "KWD", "value": NaN}}',
    "not UTF-8": b'{"reference": "\xff"}',
}


@pytest.mark.parametrize("raw", UNREADABLE_BODIES.values(), ids=UNREADABLE_BODIES.keys())
def test_input_adyen_cannot_read_is_400_702_not_500(server, raw):
    response = post(server, "/payments", raw=raw)
    body = response.json()
    assert (response.status_code, body["errorCode"], body["errorType"]) == (400, "702", "validation")
    assert body["message"].startswith("Unexpected input")


@pytest.mark.parametrize(
    "fields",
    [
        {"amount": {"currency": "KWD", "value": 2**63}},
        {"reference": "a\ud800"},
        {"metadata": {"x": [[[[["deep"]]]]]}},
    ],
    ids=["amount above int64", "lone surrogate", "nested where the spec has a string"],
)
def test_the_library_gets_400_702_for_them_too(server, fields):
    # (The library cannot send a 4,301-digit integer at all: Python refuses to write one.)
    with pytest.raises(Adyen.AdyenAPIValidationError) as raised:
        library(server).payments(payment_request(server, **fields))
    assert (raised.value.status_code, raised.value.error_code) == (400, "702")


WRONG_FIELDS = {
    "enum": ({"channel": "Nope"}, "Unexpected input: channel"),
    "string": ({"shopperLocale": 123}, "Unexpected input: shopperLocale"),
    "array": ({"lineItems": "x"}, "Unexpected input: lineItems"),
    "unknown field": ({"shopperColour": "blue"}, "Structure of PaymentRequest contains the following unknown fields"),
    "unknown KNET field": ({"paymentMethod": {"type": "knet", "issuer": "KNET1"}}, "Structure of PaymentDetails"),
    "int32": ({"installments": {"value": 2**31}}, "Unexpected input: installments.value"),
}


@pytest.mark.parametrize("fields, message", WRONG_FIELDS.values(), ids=WRONG_FIELDS.keys())
def test_fields_of_the_wrong_type_or_unknown_are_refused_as_at_adyen(server, fields, message):
    body = payment_request(server, **fields)
    response = post(server, "/payments", body)
    assert (response.status_code, response.json()["errorCode"]) == (400, "702")
    assert response.json()["message"].startswith(message)
    with pytest.raises(Adyen.AdyenAPIValidationError) as raised:
        library(server).payments(body)
    assert raised.value.error_code == "702"


@pytest.mark.parametrize("return_url", ["abc", "javascript:alert(1)", "/checkout/return/x"])
def test_a_return_url_that_is_not_an_absolute_url_is_422(server, return_url):
    body = payment_request(server, returnUrl=return_url)
    response = post(server, "/payments", body)
    assert (response.status_code, response.json()["errorCode"]) == (422, "14_030")
    with pytest.raises(Adyen.AdyenAPIUnprocessableEntity):
        library(server).payments(body)


def test_a_constraint_the_spec_sets_is_422(server):
    body = {"details": {"redirectResult": "X6XtfGC3!" + "A" * 20_000}}  # maxLength 20,000
    response = post(server, "/payments/details", body)
    assert (response.status_code, response.json()["errorCode"]) == (422, "000")
    assert "details.redirectResult" in response.json()["message"]


def test_an_idempotency_key_over_64_characters_is_refused(server):
    response = post(server, "/payments", payment_request(server), headers={"Idempotency-Key": "k" * 65})
    assert (response.status_code, response.json()["errorCode"]) == (400, "702")
    assert "Idempotency-Key" in response.json()["message"]
    assert post(server, "/payments", payment_request(server), headers={"Idempotency-Key": "k" * 64}).status_code == 200
    with pytest.raises(Adyen.AdyenAPIValidationError):
        library(server).payments(payment_request(server), idempotency_key=str(uuid.uuid4()) * 2)


def test_a_body_over_the_limit_is_a_413_service_error(server):
    response = post(server, "/payments/details", raw=b'{"paymentData": "' + b"C" * (2 * 1024 * 1024) + b'"}')
    assert (response.status_code, response.json()["errorCode"]) == (413, "000")


@pytest.mark.parametrize(
    "method, path, status",
    [
        ("POST", "/_sim/checkout/v71/refunds", 404),
        ("POST", "/_sim/checkout/v66/payments", 404),
        ("POST", "/_sim/checkout", 404),
        ("GET", "/_sim/checkout/v71/payments", 405),
        ("PUT", "/_sim/checkout/v71/payments/details", 405),
    ],
)
def test_unknown_paths_and_methods_get_service_error_json(server, method, path, status):
    response = requests.request(method, server.url + path, json={}, headers=api_headers(server), timeout=10)
    assert response.status_code == status
    conforms("/payments", response)
    if status == 405:
        assert response.headers["Allow"] == "POST"


def test_the_library_reads_a_404_as_adyens(server):
    checkout = library(server)
    checkout.baseUrl = server.url + "/_sim/checkout/v66"
    with pytest.raises(Adyen.AdyenAPICommunicationError) as raised:
        checkout.payments(payment_request(server))
    assert (raised.value.status_code, raised.value.error_code) == (404, "000")


# 704: a repeated /payments/details, and a request still in progress -------------------------------------


def test_a_repeated_details_call_without_a_key_is_704_at_adyen_too(server):
    redirect_result, psp_reference = paid_redirect_result(server)
    checkout = library(server)
    assert checkout.payments_details({"details": {"redirectResult": redirect_result}}).psp == psp_reference
    with pytest.raises(Adyen.AdyenAPIUnprocessableEntity) as raised:
        checkout.payments_details({"details": {"redirectResult": redirect_result}})
    assert raised.value.error_code == "704"
    assert IN_PROGRESS in str(raised.value.message)
    # Not retryable: the redirectResult was used, retrying changes nothing.
    assert "transient-error" not in {name.lower() for name in raised.value.headers}


def test_two_details_calls_at_once_without_a_key_answer_once(server):
    redirect_result, _ = paid_redirect_result(server)
    answers = []

    def call():
        answers.append(
            requests.post(
                server.url + API_PATH + "/payments/details",
                json={"details": {"redirectResult": redirect_result}},
                headers=api_headers(server),
                timeout=20,
            )
        )

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answer.status_code for answer in answers) == [200, 422, 422, 422]
    for answer in answers:
        conforms("/payments/details", answer)


@pytest.mark.parametrize("status", [422, 409])
def test_in_progress_comes_as_422_or_409_with_transient_error(live_server_factory, status):
    live = live_server_factory(ENV={"SIMULATOR_704_STATUS": str(status)}, BACKGROUND_WORKER=False)
    key = str(uuid.uuid4())
    assert post(live, "/payments", payment_request(live), headers={"Idempotency-Key": key}).status_code == 200
    with live.app.app_context():
        faults.inject("/payments", "http_704_on_repeat", count=1)
    again = post(live, "/payments", payment_request(live), headers={"Idempotency-Key": key})
    assert (again.status_code, again.json()["errorCode"], again.json()["message"]) == (status, "704", IN_PROGRESS)
    assert again.headers["transient-error"] == "true"
    assert again.headers["Idempotency-Key"] == key
    # The retry, later, with the same key: the first answer.
    assert post(live, "/payments", payment_request(live), headers={"Idempotency-Key": key}).status_code == 200

    with live.app.app_context():
        faults.inject("/payments", "http_704_on_repeat", count=1)
    with pytest.raises(AdyenAPIResponseError) as raised:  # the library's class for a 409 (a 422 is a subclass)
        library(live).payments(payment_request(live), idempotency_key=key)
    assert (raised.value.status_code, raised.value.error_code) == (status, "704")
    assert raised.value.headers["transient-error"] == "true"
