"""The simulated Checkout API v71 over real HTTP: errors, headers, idempotency, KNET, the Adyen library."""

import threading
import uuid

import Adyen
import pytest
import requests
from sqlalchemy import func, select

from shop.db import db
from shop.simulator.models import SimPayment
from tests.conftest import LiveServer
from tests.simulator_helpers import (
    API_PATH,
    GOOD_CARD,
    PSP_REFERENCE,
    api_headers,
    api_post,
    details,
    page_token,
    payment_request,
    redirect_result_from,
    start_payment,
    submit_page,
)


def assert_service_error(response, status, error_code, error_type="validation", with_psp_reference=True):
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json;charset=UTF-8"
    body = response.json()
    assert body["status"] == status
    assert body["errorCode"] == error_code
    assert body["errorType"] == error_type
    assert body["message"]
    assert PSP_REFERENCE.match(response.headers["pspReference"])
    if with_psp_reference:
        assert body["pspReference"] == response.headers["pspReference"]
    else:
        assert "pspReference" not in body
    return body


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One live server for this module: each test creates and reads only its own payments.

    No background worker: the webhooks these payments queue are the sender tests' business.
    """
    live = LiveServer(tmp_path_factory.mktemp("simulator-api"), BACKGROUND_WORKER=False)
    yield live
    live.stop()


def payment_count(live, reference):
    with live.app.app_context():
        return db.session.scalar(
            select(func.count()).select_from(SimPayment).where(SimPayment.merchant_reference == reference)
        )


# Authentication and merchant account -----------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["/paymentMethods", "/payments", "/payments/details"])
def test_missing_api_key_is_401(server, endpoint):
    response = api_post(server, endpoint, payment_request(server), headers={})
    body = assert_service_error(response, 401, "000", "security", with_psp_reference=False)
    assert body["message"] == "HTTP Status Response - Unauthorized"


def test_wrong_api_key_is_401(server):
    body = payment_request(server)
    response = api_post(server, "/payments", body, headers={"X-API-Key": "wrong"})
    assert_service_error(response, 401, "000", "security", with_psp_reference=False)
    assert payment_count(server, body["reference"]) == 0


@pytest.mark.parametrize("header_name", ["x-api-key", "X-API-KEY"])
def test_api_key_header_name_is_case_insensitive(server, header_name):
    key = server.app.config["ADYEN_API_KEY"]
    response = api_post(server, "/payments", payment_request(server), headers={header_name: key})
    assert response.status_code == 200, response.text


def methods_request(live, **overrides):
    """A valid /paymentMethods body (a PaymentMethodsRequest); `None` overrides remove a field."""
    body = {"merchantAccount": live.app.config["ADYEN_MERCHANT_ACCOUNT"], "countryCode": "KW", "channel": "Web"}
    body.update(overrides)
    return {key: value for key, value in body.items() if value is not None}


@pytest.mark.parametrize("endpoint", ["/paymentMethods", "/payments"])
@pytest.mark.parametrize("account", ["SomeoneElseECOM", None])
def test_other_merchant_account_is_403(server, endpoint, account):
    make = methods_request if endpoint == "/paymentMethods" else payment_request
    response = api_post(server, endpoint, make(server, merchantAccount=account))
    body = assert_service_error(response, 403, "901", "security")
    assert body["message"] == "Invalid Merchant Account"


# Request validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, error_code, message",
    [
        ({"returnUrl": None}, "14_030", "Required field 'returnUrl' is not provided."),
        ({"reference": None}, "130", "Reference Missing"),
        ({"reference": ""}, "130", "Reference Missing"),
        ({"reference": "R" * 81}, "130", None),
        ({"amount": None}, "100", "Required object 'amount' is not provided"),
        ({"amount": {"currency": "KWD", "value": -1}}, "137", "Invalid amount specified"),
        ({"amount": {"currency": "kwd", "value": 12500}}, "137", "Invalid amount specified"),
        ({"paymentMethod": None}, "14_006", "Required object 'paymentMethod' is not provided."),
        ({"paymentMethod": {}}, "14_006", "Required object 'paymentMethod' is not provided."),
    ],
)
def test_payments_validation_errors_are_422(server, overrides, error_code, message):
    request_body = payment_request(server, **overrides)
    response = api_post(server, "/payments", request_body)
    body = assert_service_error(response, 422, error_code)
    if message:
        assert body["message"] == message
    if request_body.get("reference"):
        assert payment_count(server, request_body["reference"]) == 0


def test_reference_of_80_characters_is_accepted(server):
    response = api_post(server, "/payments", payment_request(server, reference="R" * 80))
    assert response.status_code == 200


@pytest.mark.parametrize(
    "body",
    [{}, {"details": {}}, {"details": {"redirectResult": "X6XtfGC3!bm90IG91cnM="}}],
)
def test_payments_details_without_a_known_redirect_result_is_422(server, body):
    response = api_post(server, "/payments/details", body)
    assert_service_error(response, 422, "14_018")


@pytest.mark.parametrize(
    "endpoint, body, field",
    [
        ("/payments", {"amount": {"currency": "KWD", "value": "12.500"}}, "amount.value"),
        ("/payments/details", {"details": "X6XtfGC3!abc"}, "details"),
    ],
)
def test_a_value_of_the_wrong_json_type_is_400_702(server, endpoint, body, field):
    request_body = payment_request(server, **body) if endpoint == "/payments" else body
    error = assert_service_error(api_post(server, endpoint, request_body), 400, "702", with_psp_reference=False)
    assert error["message"].startswith(f"Unexpected input: {field}")


@pytest.mark.parametrize("raw", ['{"merchantAccount": "x",', "not json", "[1, 2]", ""])
def test_malformed_json_is_400_702(server, raw):
    response = requests.post(
        server.url + API_PATH + "/payments",
        data=raw.encode(),
        headers=dict(api_headers(server), **{"Content-Type": "application/json"}),
        timeout=10,
    )
    body = assert_service_error(response, 400, "702", with_psp_reference=False)
    assert body["message"].startswith("Unexpected input")


# Headers and references -------------------------------------------------------------------------


def test_every_answer_has_a_psp_reference_header_and_adyen_content_type(server):
    methods = api_post(
        server,
        "/paymentMethods",
        {"merchantAccount": server.app.config["ADYEN_MERCHANT_ACCOUNT"], "countryCode": "KW"},
    )
    payment = api_post(server, "/payments", payment_request(server))
    for response in (methods, payment):
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/json;charset=UTF-8"
        assert PSP_REFERENCE.match(response.headers["pspReference"])
    # Redirect payments get their pspReference in the header; the body has it after /payments/details.
    assert "pspReference" not in payment.json()
    assert methods.headers["pspReference"] != payment.headers["pspReference"]


@pytest.mark.parametrize("version", ["v70", "v71", "v72"])
def test_versions_70_to_72_are_served(server, version):
    response = requests.post(
        f"{server.url}/_sim/checkout/{version}/payments",
        json=payment_request(server),
        headers=api_headers(server),
        timeout=10,
    )
    assert response.status_code == 200


def test_unknown_version_is_not_found(server):
    response = requests.post(
        f"{server.url}/_sim/checkout/v66/payments", json={}, headers=api_headers(server), timeout=10
    )
    assert response.status_code == 404


# Idempotency-Key --------------------------------------------------------------------------------


def test_idempotency_key_replays_the_first_answer_and_is_echoed(server):
    key = str(uuid.uuid4())
    body = payment_request(server)
    first = api_post(server, "/payments", body, headers=api_headers(server, **{"Idempotency-Key": key}))
    second = api_post(server, "/payments", body, headers=api_headers(server, **{"Idempotency-Key": key}))
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert first.headers["pspReference"] == second.headers["pspReference"]
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"] == key
    assert payment_count(server, body["reference"]) == 1

    other = api_post(server, "/payments", body, headers=api_headers(server, **{"Idempotency-Key": "other"}))
    assert other.json()["action"]["url"] != first.json()["action"]["url"]
    assert payment_count(server, body["reference"]) == 2


def test_idempotency_key_replays_a_422_and_echoes_it(server):
    headers = api_headers(server, **{"Idempotency-Key": "key-422"})
    first = api_post(server, "/payments", payment_request(server, returnUrl=None), headers=headers)
    # Even with the mistake fixed, the same key gives the first answer back.
    second = api_post(server, "/payments", payment_request(server), headers=headers)
    assert first.status_code == second.status_code == 422
    assert first.json() == second.json()
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"] == "key-422"


@pytest.mark.parametrize("endpoint", ["/paymentMethods", "/payments/details"])
def test_idempotency_key_is_honoured_on_every_endpoint(server, endpoint):
    body = {
        "/paymentMethods": {"merchantAccount": server.app.config["ADYEN_MERCHANT_ACCOUNT"]},
        "/payments/details": {"details": {"redirectResult": "X6XtfGC3!unknown"}},
    }[endpoint]
    headers = api_headers(server, **{"Idempotency-Key": f"key{endpoint}"})
    first = api_post(server, endpoint, body, headers=headers)
    second = api_post(server, endpoint, body, headers=headers)
    assert first.status_code == second.status_code
    assert first.json() == second.json()
    assert first.headers["pspReference"] == second.headers["pspReference"]
    assert second.headers["Idempotency-Key"] == f"key{endpoint}"


def test_concurrent_requests_with_one_key_make_one_payment(server):
    body = payment_request(server)
    headers = api_headers(server, **{"Idempotency-Key": "same-key-at-once"})
    answers = []

    def call():
        answers.append(api_post(server, "/payments", body, headers=headers))

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {answer.status_code for answer in answers} == {200}
    assert len({answer.headers["pspReference"] for answer in answers}) == 1
    assert payment_count(server, body["reference"]) == 1


# KNET in /paymentMethods and /payments -----------------------------------------------------------


@pytest.mark.parametrize(
    "country, amount, offered",
    [
        ("KW", {"currency": "KWD", "value": 12500}, True),
        ("KW", {"currency": "EUR", "value": 1000}, False),
        ("NL", {"currency": "KWD", "value": 12500}, False),
        ("KW", None, False),
        (None, {"currency": "KWD", "value": 12500}, False),
    ],
)
def test_knet_is_offered_only_for_kuwait_in_dinars(server, country, amount, offered):
    body = {"merchantAccount": server.app.config["ADYEN_MERCHANT_ACCOUNT"], "channel": "Web"}
    if country:
        body["countryCode"] = country
    if amount:
        body["amount"] = amount
    response = api_post(server, "/paymentMethods", body)
    assert response.status_code == 200
    methods = response.json()["paymentMethods"]
    assert ({"name": "KNET", "type": "knet"} in methods) is offered
    assert any(method["type"] == "scheme" and method["name"] == "Cards" and method["brands"] for method in methods)


def test_payment_methods_filters_allowed_types(server):
    body = {
        "merchantAccount": server.app.config["ADYEN_MERCHANT_ACCOUNT"],
        "countryCode": "KW",
        "amount": {"currency": "KWD", "value": 12500},
        "allowedPaymentMethods": ["knet"],
    }
    assert api_post(server, "/paymentMethods", body).json() == {"paymentMethods": [{"name": "KNET", "type": "knet"}]}


@pytest.mark.parametrize(
    "overrides",
    [{"amount": {"currency": "EUR", "value": 1000}}, {"countryCode": "NL"}, {"countryCode": None}],
)
def test_knet_payment_outside_kuwait_or_dinars_is_422(server, overrides):
    response = api_post(server, "/payments", payment_request(server, **overrides))
    body = assert_service_error(response, 422, "905_1", "configuration")
    assert "KWD" in body["message"] and "KW" in body["message"]


def test_knet_payment_answers_redirect_shopper_with_an_absolute_get_action(server):
    answer, psp_reference, _ = start_payment(server)
    assert answer["resultCode"] == "RedirectShopper"
    action = answer["action"]
    assert action["type"] == "redirect"
    assert action["method"] == "GET"
    assert action["paymentMethodType"] == "knet"
    assert action["url"].startswith(server.url + "/_sim/knet/")
    assert "data" not in action
    assert PSP_REFERENCE.match(psp_reference)
    assert requests.get(action["url"], timeout=10).status_code == 200


def test_redirect_to_issuer_by_post_gives_a_post_action_with_data(server):
    answer, _, _ = start_payment(server, redirectToIssuerMethod="POST")
    action = answer["action"]
    assert action["method"] == "POST"
    assert action["url"].startswith(server.url + "/_sim/knet/")
    assert set(action["data"]) == {"paymentId", "sig"}

    page = requests.post(action["url"], data=action["data"], timeout=10)
    assert page.status_code == 200
    assert "Card Number" in page.text

    forged = requests.post(action["url"], data={"paymentId": action["data"]["paymentId"], "sig": "forged"}, timeout=10)
    assert forged.status_code == 400


def test_payment_is_stored_with_its_request_fields(server):
    answer, psp_reference, body = start_payment(server, redirectFromIssuerMethod="POST")
    with server.app.app_context():
        payment = db.session.execute(select(SimPayment).where(SimPayment.psp_reference == psp_reference)).scalar_one()
        assert payment.page_token == page_token(answer["action"])
        assert payment.merchant_reference == body["reference"]
        assert (payment.amount_value, payment.currency) == (12500, "KWD")
        assert payment.return_url == body["returnUrl"]
        assert payment.shopper_name == "Fatima Al-Sabah"
        assert payment.shopper_email == "fatima@example.com"
        assert payment.telephone_number == "+96550000000"
        assert payment.redirect_from_issuer_method == "POST"
        assert payment.status == "awaiting_shopper"
        assert payment.created_at is not None


def test_payments_details_answers_a_redirect_result_once_unless_its_key_replays_it(server):
    answer, psp_reference, body = start_payment(server)
    returned = submit_page(server, answer["action"], **GOOD_CARD)
    redirect_result = redirect_result_from(returned.headers["Location"])
    keyed = api_headers(server, **{"Idempotency-Key": str(uuid.uuid4())})
    first = details(server, redirect_result, headers=keyed)
    assert first.status_code == 200
    assert first.json()["pspReference"] == first.headers["pspReference"] == psp_reference
    assert first.json()["merchantReference"] == body["reference"]
    # The same key: Adyen's first answer again, as often as asked.
    assert details(server, redirect_result, headers=keyed).json() == first.json()
    # Without it (or with another key) the redirectResult is used up: 704, and not worth retrying.
    for headers in (None, api_headers(server, **{"Idempotency-Key": str(uuid.uuid4())})):
        repeat = details(server, redirect_result, headers=headers)
        error = assert_service_error(repeat, 422, "704")
        assert error["message"] == "request already processed or in progress"
        assert "transient-error" not in repeat.headers


def test_legacy_payload_key_resolves_like_redirect_result(server):
    answer, _, _ = start_payment(server)
    returned = submit_page(server, answer["action"], **GOOD_CARD)
    value = redirect_result_from(returned.headers["Location"])
    response = api_post(server, "/payments/details", {"details": {"payload": value}})
    assert response.status_code == 200
    assert response.json()["resultCode"] == "Authorised"


# The official Adyen Python library, unchanged, against the simulator ---------------------------------


@pytest.mark.parametrize("http_client", ["requests", "urllib"])
def test_official_adyen_library_end_to_end(server, http_client):
    config = server.app.config
    adyen = Adyen.Adyen(xapikey=config["ADYEN_API_KEY"], platform="test", http_force=http_client)
    # The library's only knob for another host: the service's baseUrl (it replaces checkout-test.adyen.com/v72).
    adyen.checkout.payments_api.baseUrl = server.url + API_PATH
    checkout = adyen.checkout.payments_api

    methods = checkout.payment_methods(
        {
            "merchantAccount": config["ADYEN_MERCHANT_ACCOUNT"],
            "countryCode": "KW",
            "amount": {"currency": "KWD", "value": 12500},
            "channel": "Web",
        }
    )
    assert {"name": "KNET", "type": "knet"} in methods.message["paymentMethods"]

    started = checkout.payments(payment_request(server), idempotency_key=str(uuid.uuid4()))
    assert started.message["resultCode"] == "RedirectShopper"
    assert PSP_REFERENCE.match(started.psp)  # read from the pspReference header

    returned = submit_page(server, started.message["action"], **GOOD_CARD)
    redirect_result = redirect_result_from(returned.headers["Location"])
    result = checkout.payments_details({"details": {"redirectResult": redirect_result}})
    assert result.message["resultCode"] == "Authorised"
    assert result.psp == started.psp
    assert result.message["paymentMethod"] == {"type": "knet"}  # `brand` is for cards only
    assert result.message["additionalData"]["paymentMethod"] == "knet"

    with pytest.raises(Adyen.AdyenAPIUnprocessableEntity) as raised:
        checkout.payments(payment_request(server, returnUrl=None))
    assert raised.value.error_code == "14_030"

    wrong_key = Adyen.Adyen(xapikey="wrong", platform="test", http_force=http_client)
    wrong_key.checkout.payments_api.baseUrl = server.url + API_PATH
    with pytest.raises(Adyen.AdyenAPIAuthenticationError):
        wrong_key.checkout.payments_api.payment_methods({"merchantAccount": config["ADYEN_MERCHANT_ACCOUNT"]})
