"""Adyen's Checkout API as its test platform answers it: /paymentMethods, /payments, /payments/details.

Mounted at /_sim/checkout/v71 (v70 and v72 paths too, as the contracts of the three are the same
for these calls). Any Adyen client pointed there works unchanged, the official libraries included.

API reference: https://docs.adyen.com/api-explorer/Checkout/71/overview
Errors (ServiceError): https://docs.adyen.com/development-resources/error-codes
Idempotency: https://docs.adyen.com/development-resources/api-idempotency
"""

import hashlib
import hmac
import json
import logging
import socket
import time

from flask import current_app, request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import HTTPException

from shop import security
from shop.db import db
from shop.simulator import bp, faults, payments
from shop.simulator.models import SimIdempotentResponse
from shop.simulator.references import new_psp_reference, page_signature

log = logging.getLogger(__name__)

# Adyen answers JSON with this exact Content-Type (seen in Adyen/adyen-dotnet-api-library#588).
JSON_CONTENT_TYPE = "application/json;charset=UTF-8"
API_PATH = "/checkout/<any(v70, v71, v72):version>"

MAX_REFERENCE_LENGTH = 80  # PaymentRequest.reference: "Maximum length: 80 characters"
MAX_RETURN_URL_LENGTH = 8000  # PaymentRequest.returnUrl maxLength in v70/v71

KNET_COUNTRY = "KW"
KNET_CURRENCY = "KWD"
CARD_BRANDS = ["visa", "mc", "amex", "maestro"]


class ServiceError(Exception):
    """An Adyen error answer: HTTP status and the ServiceError body {status, errorCode, message, errorType}."""

    def __init__(self, status, error_code, message, error_type="validation", with_psp_reference=True):
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message
        self.error_type = error_type
        self.with_psp_reference = with_psp_reference

    def body(self, psp_reference):
        body = {
            "status": self.status,
            "errorCode": self.error_code,
            "message": self.message,
            "errorType": self.error_type,
        }
        # Adyen's 401 and 400 examples carry no pspReference; its 403, 422 and 500 examples do.
        if self.with_psp_reference:
            body["pspReference"] = psp_reference
        return body


def unauthorized():
    return ServiceError(401, "000", "HTTP Status Response - Unauthorized", "security", with_psp_reference=False)


def invalid_merchant_account():
    return ServiceError(403, "901", "Invalid Merchant Account", "security")


@bp.errorhandler(Exception)
def _internal_error(error):
    """An unexpected failure answers like Adyen's 500 on the API, and plainly on the KNET page."""
    if isinstance(error, HTTPException):  # 400, 404, 413…: the shop's own short page (plain text on the API)
        return security.error_page(error)
    db.session.rollback()
    log.exception("simulator failed on %s", request.path)
    if "/checkout/" in request.path:
        error = ServiceError(500, "903", "Internal error", "internal")
        return _error_response(error, request.headers.get("Idempotency-Key"))
    return "The simulated payment service had an internal error.", 500


# Routes ----------------------------------------------------------------------------------------


@bp.post(API_PATH + "/paymentMethods")
def payment_methods(version):
    """POST /paymentMethods: https://docs.adyen.com/api-explorer/Checkout/71/post/paymentMethods"""
    return _serve("/paymentMethods", _payment_methods)


@bp.post(API_PATH + "/payments")
def payments_endpoint(version):
    """POST /payments: https://docs.adyen.com/api-explorer/Checkout/71/post/payments"""
    return _serve("/payments", _payments)


@bp.post(API_PATH + "/payments/details")
def payments_details(version):
    """POST /payments/details: https://docs.adyen.com/api-explorer/Checkout/71/post/payments/details"""
    return _serve("/payments/details", _payments_details)


# The request pipeline: authenticate, parse, replay or reserve the Idempotency-Key, answer ---------


def _serve(endpoint, handler):
    """Answer one API call, with the fault injected for this endpoint, if any (see faults.py)."""
    fault = faults.take_api_fault(endpoint)
    if fault is not None:
        log.info("simulator %s: injected fault %s", endpoint, fault.kind)
        if fault.kind == "refuse":
            return _drop_connection()
        if fault.kind in _FAULT_ERRORS:
            return _error_response(_FAULT_ERRORS[fault.kind](fault), request.headers.get("Idempotency-Key"))
        if fault.kind == "slow":
            time.sleep(float(fault.param("delay_ms")) / 1000)
    response = _answer(endpoint, handler)
    if fault is not None and fault.kind == "timeout":
        # The work is done and its answer stored for the Idempotency-Key; only this answer is late.
        db.session.rollback()  # hold no transaction while sleeping
        time.sleep(faults.timeout_seconds(fault))
    return response


_FAULT_ERRORS = {
    "http_500": lambda fault: ServiceError(500, "903", "Internal error", "internal"),
    "http_422": lambda fault: ServiceError(422, fault.param("error_code"), fault.param("message")),
    "http_401": lambda fault: unauthorized(),
}


def _drop_connection():
    """Close the connection without an answer, as a refused or reset connection looks to a client.

    Needs the server's socket (werkzeug's development server and gunicorn both pass it in the
    environ); without it the call is answered 502 with no Adyen body, which the shop also takes as
    "no usable answer".
    """
    sock = request.environ.get("werkzeug.socket") or request.environ.get("gunicorn.socket")
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    return current_app.response_class(b"", status=502)


def _answer(endpoint, handler):
    idempotency_key = request.headers.get("Idempotency-Key")
    if not _has_valid_api_key():
        log.info("simulator %s: 401, missing or wrong API key", endpoint)
        return _error_response(unauthorized(), idempotency_key)
    try:
        body = _json_body()
    except ServiceError as error:
        return _error_response(error, idempotency_key)

    reservation = None
    if idempotency_key:
        try:
            stored, reservation = _reserve(endpoint, idempotency_key)
        except ServiceError as error:
            return _error_response(error, idempotency_key)
        if stored is not None:
            if endpoint == "/payments/details" and faults.take_repeat_704(endpoint):
                log.info("simulator %s: injected fault: 704 for a repeated request", endpoint)
                return _error_response(
                    ServiceError(422, "704", "request already processed or in progress"), idempotency_key
                )
            log.info("simulator %s: replaying the stored answer for a repeated Idempotency-Key", endpoint)
            return _json_response(stored.status_code, stored.response_json, stored.psp_reference, idempotency_key)

    # Handlers validate everything before they add anything to the session.
    try:
        status, answer, psp_reference = handler(body)
    except ServiceError as error:
        psp_reference = new_psp_reference()
        status, answer = error.status, error.body(psp_reference)
    if reservation is not None:
        reservation.status_code = status
        reservation.response_json = answer
        reservation.psp_reference = psp_reference
    db.session.commit()
    log.info("simulator %s -> %s", endpoint, status)
    return _json_response(status, answer, psp_reference, idempotency_key)


def _has_valid_api_key():
    # Flask matches header names case-insensitively: X-API-Key, X-API-KEY (urllib) and x-api-key (requests).
    provided = request.headers.get("X-API-Key", "")
    expected = current_app.config["ADYEN_API_KEY"] or ""
    return bool(provided) and hmac.compare_digest(provided.encode("utf-8"), expected.encode("utf-8"))


def _json_body():
    raw = request.get_data(cache=True)
    try:
        body = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ServiceError(400, "702", "Unexpected input: the body is not UTF-8", with_psp_reference=False) from None
    except json.JSONDecodeError as error:
        found = error.doc[error.pos : error.pos + 1] or "end of input"
        message = f"Unexpected input: {found!r} at line {error.lineno} column {error.colno}"
        raise ServiceError(400, "702", message, with_psp_reference=False) from None
    if not isinstance(body, dict):
        raise ServiceError(400, "702", "Unexpected input: expected a JSON object", with_psp_reference=False)
    return body


def _reserve(endpoint, idempotency_key):
    """(stored response, None) for a key seen before, else (None, a reserved row in the session).

    The unique (endpoint, key) row is inserted before any work: a concurrent request with the same
    key waits on it and then replays the first answer instead of creating a second payment.
    Keys are scoped per endpoint here; Adyen scopes them to the company account (a simplification).
    """
    key_hash = hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()
    reservation = SimIdempotentResponse(endpoint=endpoint, key_hash=key_hash, idempotency_key=idempotency_key)
    db.session.add(reservation)
    try:
        db.session.flush()
        return None, reservation
    except IntegrityError:
        db.session.rollback()
    stored = db.session.execute(
        select(SimIdempotentResponse).where(
            SimIdempotentResponse.endpoint == endpoint, SimIdempotentResponse.key_hash == key_hash
        )
    ).scalar_one_or_none()
    if stored is not None and stored.status_code is not None:
        return stored, None
    # Adyen's answer for a key whose first request has not finished (seen in odoo/odoo#287020).
    raise ServiceError(422, "704", "request already processed or in progress")


def _json_response(status, body, psp_reference, idempotency_key):
    response = current_app.response_class(json.dumps(body), status=status)
    response.headers["Content-Type"] = JSON_CONTENT_TYPE
    # Adyen sends the pspReference as a header on every answer, even where the body has none.
    response.headers["pspReference"] = psp_reference
    if idempotency_key:
        response.headers["Idempotency-Key"] = idempotency_key
    return response


def _error_response(error, idempotency_key):
    psp_reference = new_psp_reference()
    return _json_response(error.status, error.body(psp_reference), psp_reference, idempotency_key)


# Validation shared by the handlers ---------------------------------------------------------------


def _check_merchant_account(body):
    account = body.get("merchantAccount")
    expected = current_app.config["ADYEN_MERCHANT_ACCOUNT"]
    if not isinstance(account, str) or account != expected:
        raise invalid_merchant_account()


def _amount(body, required):
    """The validated Amount {currency, value}, or None when optional and absent."""
    amount = body.get("amount")
    if amount is None:
        if required:
            raise ServiceError(422, "100", "Required object 'amount' is not provided")
        return None
    value = amount.get("value") if isinstance(amount, dict) else None
    currency = amount.get("currency") if isinstance(amount, dict) else None
    valid_value = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    valid_currency = isinstance(currency, str) and len(currency) == 3 and currency.isalpha() and currency.isupper()
    if not (valid_value and valid_currency):
        # Code 137 "Invalid amount specified" as seen in public Adyen test fixtures (unconfirmed in docs).
        raise ServiceError(422, "137", "Invalid amount specified")
    return {"currency": currency, "value": value}


# /paymentMethods ------------------------------------------------------------------------------


def _payment_methods(body):
    _check_merchant_account(body)
    amount = _amount(body, required=False)
    methods = [{"brands": list(CARD_BRANDS), "name": "Cards", "type": "scheme"}]
    # KNET only for a Kuwaiti shopper paying in dinars; without country or amount, no KNET.
    if body.get("countryCode") == KNET_COUNTRY and amount and amount["currency"] == KNET_CURRENCY:
        methods.insert(0, {"name": "KNET", "type": "knet"})
    methods.append({"brands": ["visa", "mc"], "name": "Apple Pay", "type": "applepay"})

    allowed = body.get("allowedPaymentMethods")
    if isinstance(allowed, list) and allowed:
        methods = [method for method in methods if method["type"] in allowed]
    blocked = body.get("blockedPaymentMethods")
    if isinstance(blocked, list):
        methods = [method for method in methods if method["type"] not in blocked]
    return 200, {"paymentMethods": methods}, new_psp_reference()


# /payments ------------------------------------------------------------------------------------


def _payments(body):
    _check_merchant_account(body)
    amount = _amount(body, required=True)

    reference = body.get("reference")
    if not isinstance(reference, str) or not reference.strip():
        raise ServiceError(422, "130", "Reference Missing")
    if len(reference) > MAX_REFERENCE_LENGTH:
        # Same code family as "Reference Missing"; Adyen's exact code for a long reference is unconfirmed.
        raise ServiceError(422, "130", f"Reference is longer than {MAX_REFERENCE_LENGTH} characters")

    payment_method = body.get("paymentMethod")
    method_type = payment_method.get("type") if isinstance(payment_method, dict) else None
    if not isinstance(method_type, str) or not method_type:
        raise ServiceError(422, "14_006", "Required object 'paymentMethod' is not provided.")

    return_url = body.get("returnUrl")
    if not isinstance(return_url, str) or not return_url.strip():
        raise ServiceError(422, "14_030", "Required field 'returnUrl' is not provided.")
    if len(return_url) > MAX_RETURN_URL_LENGTH or return_url.strip().lower().startswith(("javascript:", "data:")):
        raise ServiceError(422, "14_030", "Invalid returnUrl.")  # code reused from "missing" (unconfirmed)

    if method_type != "knet":
        # The simulator's merchant account has only KNET configured, as a test account would.
        raise ServiceError(
            422,
            "905_1",
            f"Could not find an acquirer account for the provided txvariant ({method_type}), "
            f"currency ({amount['currency']}), and action (AUTH).",
            "configuration",
        )
    country = body.get("countryCode")
    if amount["currency"] != KNET_CURRENCY or country != KNET_COUNTRY:
        # Adyen's exact answer here is unconfirmed; 905_1 is what an account without a matching
        # acquirer setup returns, and KNET exists only for KW shoppers paying in KWD.
        raise ServiceError(
            422,
            "905_1",
            f"Could not find an acquirer account for the provided txvariant (knet), currency "
            f"({amount['currency']}), and action (AUTH). KNET needs amount.currency KWD and countryCode KW "
            f"(got {amount['currency']} and {country!r}).",
            "configuration",
        )

    psp_reference = new_psp_reference()
    payment = payments.create_payment(dict(body, amount=amount), psp_reference)
    # The pspReference comes in the header only: Adyen's docs say redirect payments get it in
    # /payments/details.
    return 200, {"resultCode": "RedirectShopper", "action": _redirect_action(payment)}, psp_reference


def _redirect_action(payment):
    """CheckoutRedirectAction to the simulated KNET page, by GET or (if asked) by POST with data."""
    page_url = current_app.config["PUBLIC_BASE_URL"] + "/_sim/knet/kpg/PaymentHTTP.htm"
    if payment.redirect_to_issuer_method == "POST" or current_app.config["SIMULATOR_ACTION_METHOD"] == "POST":
        return {
            "data": {
                "paymentId": payment.page_token,
                "sig": page_signature(payment.page_token, current_app.config["SECRET_KEY"]),
            },
            "method": "POST",
            "paymentMethodType": payment.payment_method_type,
            "type": "redirect",
            "url": page_url,
        }
    return {
        "method": "GET",
        "paymentMethodType": payment.payment_method_type,
        "type": "redirect",
        "url": f"{page_url}?paymentId={payment.page_token}",
    }


# /payments/details ----------------------------------------------------------------------------


def _payments_details(body):
    details = body.get("details")
    if not isinstance(details, dict):
        # Adyen's code for a missing `details` is unconfirmed; 14_018 is its "invalid payload" family.
        raise ServiceError(422, "14_018", "Required field 'details' is not provided.")
    # redirectResult, or `payload` from older integrations (the official Flask example accepts both).
    value = details.get("redirectResult") or details.get("payload")
    if not isinstance(value, str) or not value:
        raise ServiceError(422, "14_018", "Required field 'details.redirectResult' is not provided.")
    # Compared exactly as issued: a value still percent-encoded, decoded twice or with `+` turned
    # into a space is a shop bug, and resolves to nothing.
    payment = payments.by_redirect_result(value)
    if payment is None:
        raise ServiceError(422, "14_018", "Invalid payload provided")

    # Repeated calls give the same answer. (Real Adyen may answer a repeat without an
    # Idempotency-Key with 422 "request already processed or in progress"; unconfirmed.)
    answer = {
        "amount": {"currency": payment.currency, "value": payment.amount_value},
        "merchantReference": payment.merchant_reference,
        "pspReference": payment.psp_reference,
        "resultCode": payment.result_code,
    }
    if payment.result_code == "Authorised":
        answer["paymentMethod"] = {"brand": payment.payment_method_type, "type": payment.payment_method_type}
    if payment.refusal_reason:
        answer["refusalReason"] = payment.refusal_reason
        answer["refusalReasonCode"] = payment.refusal_reason_code
    return 200, answer, payment.psp_reference
