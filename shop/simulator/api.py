"""Adyen's Checkout API as its test platform answers it: /paymentMethods, /payments, /payments/details,
and the modifications /payments/{paymentPspReference}/refunds, /reversals and /cancels.

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
import re
import socket
import time

from flask import current_app, request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import HTTPException

from shop import security
from shop.db import db
from shop.simulator import bp, faults, modifications, payments, schema
from shop.simulator.models import ModificationKind, SimIdempotentResponse
from shop.simulator.references import new_psp_reference, page_signature

log = logging.getLogger(__name__)

# Adyen answers JSON with this exact Content-Type (seen in Adyen/adyen-dotnet-api-library#588).
JSON_CONTENT_TYPE = "application/json;charset=UTF-8"
API_PATH = "/checkout/<any(v70, v71, v72):version>"
ENDPOINT_PATH = re.compile(
    r"^v7[0-2]/(paymentMethods|payments|payments/details|payments/[^/]+/(refunds|reversals|cancels))$"
)

MAX_REFERENCE_LENGTH = 80  # PaymentRequest.reference: "Maximum length: 80 characters"
MAX_RETURN_URL_LENGTH = 8000  # PaymentRequest.returnUrl maxLength in v70/v71
# "A unique identifier for the message with a maximum of 64 characters" (the spec's Idempotency-Key).
MAX_IDEMPOTENCY_KEY_LENGTH = 64
# Bodies up to 1 MiB, whatever the shop's own limit for its forms (64 KiB): the spec lets a
# /payments/details request carry over 500,000 characters in its bounded fields alone (paymentData
# up to 200,000, the details up to 320,000).
MAX_BODY_BYTES = 1024 * 1024
# An absolute URL: a scheme (http, https or an app's own) and something after "//".
_ABSOLUTE_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://\S+$")
IN_PROGRESS = "request already processed or in progress"

KNET_COUNTRY = "KW"
KNET_CURRENCY = "KWD"
CARD_BRANDS = ["visa", "mc", "amex", "maestro"]


class ServiceError(Exception):
    """An Adyen error answer: HTTP status and the ServiceError body {status, errorCode, message, errorType}."""

    def __init__(self, status, error_code, message, error_type="validation", with_psp_reference=True, headers=None):
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message
        self.error_type = error_type
        self.with_psp_reference = with_psp_reference
        self.headers = headers or {}

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


def in_progress(transient):
    """704, as HTTP 422 or 409 (SIMULATOR_704_STATUS: Adyen's docs name both). `transient`: the
    first request with this Idempotency-Key is still running, so a retry with it later will get its
    answer (Adyen's `transient-error: true` header); without it, the repeat is final."""
    return ServiceError(
        current_app.config["SIMULATOR_704_STATUS"],
        "704",
        IN_PROGRESS,
        headers={"transient-error": "true"} if transient else None,
    )


def from_violation(violation):
    """A schema.Violation as Adyen's answer (its 400s carry no pspReference in the body)."""
    return ServiceError(
        violation.status, violation.error_code, violation.message, with_psp_reference=violation.status != 400
    )


def _is_api_request():
    return request.path.startswith(bp.url_prefix + "/checkout")


@bp.before_request
def _api_body_limit():
    if _is_api_request():
        request.max_content_length = MAX_BODY_BYTES


@bp.errorhandler(Exception)
def _internal_error(error):
    """On the API every error is Adyen's ServiceError JSON; on the KNET page, a short plain page."""
    if isinstance(error, HTTPException):
        if not _is_api_request():
            return security.error_page(error)  # 400, 404, 413…: the shop's own short page
        # A body over MAX_BODY_BYTES (413), or a request werkzeug could not read (400).
        error = ServiceError(error.code, "000", f"HTTP Status Response - {error.name}", with_psp_reference=False)
        return _error_response(error, None)
    db.session.rollback()
    log.exception("simulator failed on %s", request.path)
    if _is_api_request():
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


@bp.post(API_PATH + "/payments/<payment_psp_reference>/refunds")
def refunds_endpoint(version, payment_psp_reference):
    """POST /payments/{paymentPspReference}/refunds:
    https://docs.adyen.com/api-explorer/Checkout/71/post/payments/(paymentPspReference)/refunds"""
    return _serve(faults.REFUNDS, _modification(ModificationKind.REFUND, payment_psp_reference))


@bp.post(API_PATH + "/payments/<payment_psp_reference>/reversals")
def reversals_endpoint(version, payment_psp_reference):
    """POST /payments/{paymentPspReference}/reversals (cancel or refund):
    https://docs.adyen.com/api-explorer/Checkout/71/post/payments/(paymentPspReference)/reversals"""
    return _serve(faults.REVERSALS, _modification(ModificationKind.REVERSAL, payment_psp_reference))


@bp.post(API_PATH + "/payments/<payment_psp_reference>/cancels")
def cancels_endpoint(version, payment_psp_reference):
    """POST /payments/{paymentPspReference}/cancels:
    https://docs.adyen.com/api-explorer/Checkout/71/post/payments/(paymentPspReference)/cancels"""
    return _serve(faults.CANCELS, _modification(ModificationKind.CANCEL, payment_psp_reference))


@bp.route("/checkout", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
@bp.route("/checkout/<path:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def unknown_api_path(rest=""):
    """Anything else under /_sim/checkout: Adyen's ServiceError JSON, never a plain-text 404 or 405.
    ("Not Found" is one of the documented messages of the generic code 000; the 405 follows the 401's
    "HTTP Status Response - …" wording. Adyen's exact answers here are unconfirmed.)"""
    if ENDPOINT_PATH.match(rest):
        error = ServiceError(405, "000", "HTTP Status Response - Method Not Allowed", with_psp_reference=False)
        response = _error_response(error, None)
        response.headers["Allow"] = "POST"
        return response
    return _error_response(ServiceError(404, "000", "Not Found", with_psp_reference=False), None)


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
    if idempotency_key and len(idempotency_key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        # Adyen documents the limit, not its answer to a longer key: 400 702, as for other input it
        # cannot read (unconfirmed). The key is not echoed: it was not taken.
        message = f"Unexpected input: Idempotency-Key is longer than {MAX_IDEMPOTENCY_KEY_LENGTH} characters"
        return _error_response(ServiceError(400, "702", message, with_psp_reference=False), None)
    try:
        body = schema.parse(request.get_data(cache=True))
    except schema.Unreadable as error:
        return _error_response(from_violation(error.violation), idempotency_key)
    violations = schema.violations(endpoint, body)
    if violations and violations[0].status == 400:
        # Refused before any work, so not stored for the Idempotency-Key: the fixed request may reuse it.
        return _error_response(from_violation(violations[0]), idempotency_key)

    reservation = None
    if idempotency_key:
        try:
            stored, reservation = _reserve(endpoint, idempotency_key)
        except ServiceError as error:
            return _error_response(error, idempotency_key)
        if stored is not None:
            if faults.take_repeat_704(endpoint):
                log.info("simulator %s: injected fault: 704 for a repeat while the first is in progress", endpoint)
                return _error_response(in_progress(transient=True), idempotency_key)
            log.info("simulator %s: replaying the stored answer for a repeated Idempotency-Key", endpoint)
            return _json_response(stored.status_code, stored.response_json, stored.psp_reference, idempotency_key)

    # Handlers validate everything before they add anything to the session; the 422s the schema
    # found are theirs to raise (after the merchant account check, which answers first).
    try:
        status, answer, psp_reference = handler(body, violations)
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
    # Adyen's answer for a key whose first request has not finished: 704 with transient-error: true
    # (https://docs.adyen.com/development-resources/api-idempotency#transient-errors; odoo/odoo#238688).
    raise in_progress(transient=True)


def _json_response(status, body, psp_reference, idempotency_key, headers=None):
    response = current_app.response_class(json.dumps(body), status=status)
    response.headers["Content-Type"] = JSON_CONTENT_TYPE
    # Adyen sends the pspReference as a header on every answer, even where the body has none.
    response.headers["pspReference"] = psp_reference
    if idempotency_key:
        response.headers["Idempotency-Key"] = idempotency_key
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _error_response(error, idempotency_key):
    psp_reference = new_psp_reference()
    return _json_response(error.status, error.body(psp_reference), psp_reference, idempotency_key, error.headers)


def _refuse(violations):
    """Raise the first thing the request schema found wrong (a 422; the 400s were answered already)."""
    if violations:
        raise from_violation(violations[0])


# Validation shared by the handlers ---------------------------------------------------------------


def _check_merchant_account(body):
    account = body.get("merchantAccount")
    expected = current_app.config["ADYEN_MERCHANT_ACCOUNT"]
    if not isinstance(account, str) or account != expected:
        raise invalid_merchant_account()


def _amount(body, required):
    """The validated Amount {currency, value}, or None when optional and absent. (The schema has
    made sure of its shape: an object with an integer value and a 3-character currency.)"""
    amount = body.get("amount")
    if amount is None:
        if required:
            raise ServiceError(422, "100", "Required object 'amount' is not provided")
        return None
    value, currency = amount["value"], amount["currency"]
    if value < 0 or not (currency.isascii() and currency.isalpha() and currency.isupper()):
        # Code 137 "Invalid amount specified" as seen in public Adyen test fixtures (unconfirmed in docs).
        raise ServiceError(422, "137", "Invalid amount specified")
    return {"currency": currency, "value": value}


# /paymentMethods ------------------------------------------------------------------------------


def _payment_methods(body, violations):
    _check_merchant_account(body)
    _refuse(violations)
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


def _payments(body, violations):
    _check_merchant_account(body)
    _refuse(violations)
    amount = _amount(body, required=True)

    reference = body["reference"]
    if not reference.strip():
        raise ServiceError(422, "130", "Reference Missing")
    if len(reference) > MAX_REFERENCE_LENGTH:
        # Same code family as "Reference Missing"; Adyen's exact code for a long reference is unconfirmed.
        raise ServiceError(422, "130", f"Reference is longer than {MAX_REFERENCE_LENGTH} characters")

    method_type = body["paymentMethod"]["type"]
    if not isinstance(method_type, str) or not method_type:
        raise ServiceError(422, "14_006", "Required object 'paymentMethod' is not provided.")

    return_url = body["returnUrl"]
    if not return_url.strip():
        raise ServiceError(422, "14_030", "Required field 'returnUrl' is not provided.")
    if len(return_url) > MAX_RETURN_URL_LENGTH or not _ABSOLUTE_URL.match(return_url):
        # Where the shopper is sent back to, so an absolute URL (javascript:, data: or "abc" is not).
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


def _payments_details(body, violations):
    _refuse(violations)
    details = body["details"]
    # redirectResult, or `payload` from older integrations (the official Flask example accepts both).
    value = details.get("redirectResult") or details.get("payload")
    if not value:
        raise ServiceError(422, "14_018", "Required field 'details.redirectResult' is not provided.")
    # Compared exactly as issued: a value still percent-encoded, decoded twice or with `+` turned
    # into a space is a shop bug, and resolves to nothing.
    payment = payments.by_redirect_result(value)
    if payment is None:
        raise ServiceError(422, "14_018", "Invalid payload provided")
    # The redirectResult is used up by its first /payments/details: a repeat is 704, unless its
    # Idempotency-Key replays the first answer (the shop sends one for exactly that reason).
    # Integrators who repeat without a key have shown "payment failed" for a paid order
    # (Adyen/adyen-magento2#2211, #1166).
    if not payments.mark_details_requested(payment):
        log.info(
            "simulator /payments/details: 704, the redirectResult of %s was submitted before", payment.psp_reference
        )
        raise in_progress(transient=False)

    answer = {
        # Adyen sends what the Customer Area's "Additional data" settings select; these are common ones.
        "additionalData": {
            "merchantReference": payment.merchant_reference,
            "paymentMethod": payment.payment_method_type,
            "paymentMethodVariant": payment.payment_method_type,
        },
        "amount": {"currency": payment.currency, "value": payment.amount_value},
        "merchantReference": payment.merchant_reference,
        "pspReference": payment.psp_reference,
        "resultCode": payment.result_code,
    }
    if payment.result_code == "Authorised":
        # `brand` only for paymentMethod.type scheme (ResponsePaymentMethod in the spec).
        answer["paymentMethod"] = {"type": payment.payment_method_type}
    if payment.refusal_reason:
        answer["refusalReason"] = payment.refusal_reason
        answer["refusalReasonCode"] = payment.refusal_reason_code
    return 200, answer, payment.psp_reference


# /payments/{paymentPspReference}/refunds, /reversals, /cancels --------------------------------------


def _modification(kind, payment_psp_reference):
    """The handler for one modification endpoint: 201 `received` with a pspReference of its own; the
    outcome follows as a webhook (modifications.py)."""

    def handle(body, violations):
        _check_merchant_account(body)
        _refuse(violations)
        amount = _amount(body, required=True) if kind == ModificationKind.REFUND else None
        reference = body.get("reference")
        if reference is not None and len(reference) > MAX_REFERENCE_LENGTH:
            raise ServiceError(422, "130", f"Reference is longer than {MAX_REFERENCE_LENGTH} characters")
        request = modifications.Request(
            kind,
            payment_psp_reference,
            body["merchantAccount"],
            amount,
            reference or None,
            body.get("merchantRefundReason"),
        )
        try:
            modification = modifications.receive(request)
        except modifications.Refused as refused:
            raise ServiceError(refused.status, refused.error_code, refused.message) from None
        answer = {
            "merchantAccount": body["merchantAccount"],
            "paymentPspReference": payment_psp_reference,
            "pspReference": modification.psp_reference,
            "status": "received",
        }
        if reference is not None:
            answer["reference"] = reference
        if kind == ModificationKind.REFUND:
            answer["amount"] = amount
            if body.get("merchantRefundReason") is not None:
                answer["merchantRefundReason"] = body["merchantRefundReason"]
        return 201, answer, modification.psp_reference

    return handle
