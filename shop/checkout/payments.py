"""The payment flow's services: what the shop sends to Adyen, and what it keeps of the answers.

Advanced flow, API only (https://docs.adyen.com/payment-methods/knet/api-only):
/paymentMethods → /payments → redirect to KNET → return → /payments/details → webhook.
Views call these functions; these call the Adyen client and the store, never the other way.
What is written is written in units of work (shop.db.transaction), never across a call to Adyen:
save what the call needs, call, then save what it answered.
"""

import hashlib
import logging
import secrets
import time
from datetime import UTC, datetime

from flask import current_app
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from shop import security
from shop.adyen import AdyenApiError, AdyenUnavailable
from shop.db import Conflict, db, transaction
from shop.models import AttemptStatus, Order, OrderStatus, PaymentAttempt
from shop.orders import history, state
from shop.orders.history import Kind
from shop.services import adyen

log = logging.getLogger(__name__)

# /payments is retried this many times more, with the same Idempotency-Key, when Adyen does not
# answer or answers 5xx: Adyen then returns the first attempt's response, never a second payment.
# All tries together stay within ADYEN_PAYMENTS_DEADLINE (25 s by default), so the request ends
# before the server's worker timeout (30 s): the first try may use the whole connect + read timeout
# (5 + 15 s), a retry only what is left. (Tests may set app.config PAYMENTS_RETRIES and
# PAYMENTS_RETRY_BACKOFF.)
PAYMENTS_RETRIES = 2
RETRY_BACKOFF_SECONDS = (0.5, 1.5)
# A retry needs at least this long to be worth making; with less left the outcome stays unknown.
MIN_TRY_SECONDS = 1.0

# resultCodes after which the shopper is not sent to KNET again for this order.
FINAL_RESULTS = ("Authorised", "Refused", "Cancelled", "Error")


class PaymentNotStarted(Exception):
    """Adyen refused the /payments request (4xx): final for this attempt; the shopper may try again.

    `status` is Adyen's HTTP status: 422 means the request (the shopper's details, the cart) was not
    accepted; 401/403 mean the shop's own credentials or account are wrong, which the shopper can't fix.
    """

    def __init__(self, message="", status=None):
        super().__init__(message)
        self.status = status

    @property
    def shop_side(self):
        return self.status in (401, 403)


class PaymentOutcomeUnknown(Exception):
    """Adyen did not answer: the payment may or may not exist. The order stays pending."""


class ResultNotForThisOrder(Exception):
    """/payments/details described another order's payment (a replayed redirectResult)."""


class UnsafeRedirect(Exception):
    """The stored action.url is not an Adyen or KNET address (or not this simulator): not followed."""


def available_methods(amount_value, locale, checkout_key=None):
    """The payment methods Adyen offers for this cart; raises AdyenError if it can't say.

    `checkout_key` ties the recorded call to the order this checkout form will make (its timeline).
    """
    config = current_app.config
    response = adyen().payment_methods(
        {
            "merchantAccount": config["ADYEN_MERCHANT_ACCOUNT"],  # whose methods to list
            "countryCode": "KW",  # KNET is offered to shoppers in Kuwait
            "amount": {"currency": "KWD", "value": amount_value},  # KNET only takes KWD
            "channel": "Web",  # a browser checkout, not an app
            "shopperLocale": locale,  # names of the methods in the shopper's language
        },
        context={"checkout_key": checkout_key},
    )
    return response.get("paymentMethods") or []


def find_knet(methods):
    """The KNET entry (`type: knet`) from /paymentMethods, or None."""
    return next((m for m in methods if isinstance(m, dict) and m.get("type") == "knet"), None)


def new_reference():
    """The merchant reference: unique, readable, well under Adyen's 80 characters."""
    day = datetime.now(UTC).strftime("%Y%m%d")
    return f"KNET-{day}-{secrets.token_hex(4).upper()}"


def orders_of(token=None, checkout_key=None):
    """The order with this token or checkout key, or None."""
    query = select(Order)
    query = query.where(Order.token == token) if token is not None else query.where(Order.checkout_key == checkout_key)
    return db.session.execute(query).scalar_one_or_none()


def orders_of_cart(cart_ref):
    """The orders made from one cart, newest first."""
    return db.session.execute(select(Order).where(Order.cart_ref == cart_ref).order_by(Order.id.desc())).scalars()


@transaction
def order_for_checkout(checkout_key, cart, shopper, locale, cart_ref=None):
    """Find or create the one order of this checkout form. Returns its (id, token).

    A double click or a second tab posts the same checkout_key, and so finds the same order.
    """
    order = orders_of(checkout_key=checkout_key)
    if order is None:
        order = Order(
            checkout_key=checkout_key,
            cart_ref=cart_ref,
            reference=new_reference(),
            amount_value=cart.total,
            currency="KWD",
            lines=cart.snapshot(),
            shopper_locale=locale,
            **shopper,
        )
        db.session.add(order)
        try:
            db.session.flush()
        except IntegrityError:
            raise Conflict("the other click made this form's order") from None  # run again: it finds it
        history.note(order.id, Kind.ORDER_CREATED, detail={"lines": len(order.lines)})
    elif order.status == OrderStatus.CREATED:
        # Not paid for yet (say Adyen refused the last request): take the cart and details as they are now.
        order.amount_value, order.lines, order.shopper_locale = cart.total, cart.snapshot(), locale
        for name, value in shopper.items():
            setattr(order, name, value)
    return order.id, order.token


def payment_request(order):
    """The /payments body for KNET, from the order saved on the server (never from the browser)."""
    config = current_app.config
    return {
        "merchantAccount": config["ADYEN_MERCHANT_ACCOUNT"],  # the account that receives the money
        "amount": {"currency": order.currency, "value": order.amount_value},  # from the server-side cart, in fils
        "reference": order.reference,  # ties the payment and its webhooks to this order
        "paymentMethod": {"type": "knet"},  # KNET needs no shopper data on our form
        # Built from configuration, never from the Host header; the token finds the order on return.
        "returnUrl": f"{config['PUBLIC_BASE_URL']}/checkout/return/{order.token}",
        "countryCode": "KW",  # KNET is a Kuwaiti scheme
        "shopperLocale": order.shopper_locale,  # language of the KNET page
        "channel": "Web",  # the shopper is in a browser
        "shopperName": {"firstName": order.shopper_first_name, "lastName": order.shopper_last_name},  # KNET requires it
        "shopperEmail": order.shopper_email,  # KNET requires it
        "telephoneNumber": order.shopper_phone,  # KNET requires it, as +965…
    }


@transaction
def _calling_attempt(order_id):
    """(order id, the attempt whose /payments is under way or unanswered, its request body)."""
    order = db.session.get(Order, order_id)
    attempt = order.latest_attempt
    if order.status != OrderStatus.PENDING or attempt is None or attempt.status != AttemptStatus.CALLING:
        return None, None
    return attempt.id, (attempt.idempotency_key, payment_request(order))


def pay(order_id):
    """Call /payments for a pending order's unanswered attempt, and keep the answer.

    The attempt and its Idempotency-Key were saved before (state.start_payment), so a retry after a
    timeout reuses the key and cannot create a second payment. Returns the attempt's id; raises
    PaymentNotStarted (Adyen refused it) or PaymentOutcomeUnknown (no usable answer).
    """
    attempt_id, call = _calling_attempt(order_id)
    if attempt_id is None:
        return None
    idempotency_key, body = call
    response, last_error = _call_payments(order_id, attempt_id, idempotency_key, body)
    if response is None:
        log.warning("order %s: /payments outcome unknown (%s)", body["reference"], last_error)
        history_note(order_id, Kind.PAYMENT_UNKNOWN, str(last_error), attempt_id=attempt_id)
        raise PaymentOutcomeUnknown(str(last_error))
    _record_payments_answer(order_id, attempt_id, response)
    return attempt_id


@transaction
def history_note(order_id, kind, note=None, **fields):
    """A timeline step of its own (a unit of work)."""
    history.note(order_id, kind, note, **fields)


@transaction
def _record_payments_answer(order_id, attempt_id, response):
    attempt = db.session.get(PaymentAttempt, attempt_id)
    action = response.get("action") or {}
    attempt.result_code = response.get("resultCode")
    attempt.psp_reference = response.get("pspReference")
    if response.get("resultCode") == "RedirectShopper" and action.get("url"):
        attempt.status = AttemptStatus.REDIRECTED
        attempt.action_type = action.get("type")
        attempt.action_method = (action.get("method") or "GET").upper()
        attempt.action_url = action["url"]
        attempt.action_data = action.get("data") or {}
        detail = {"resultCode": attempt.result_code, "method": attempt.action_method}
        history.note(order_id, Kind.PAYMENT_ANSWERED, detail=detail, attempt_id=attempt_id)
        return
    # Not a redirect (KNET always redirects): show the result as a return would.
    attempt.status = AttemptStatus.RETURNED
    history.note(order_id, Kind.PAYMENT_ANSWERED, detail={"resultCode": attempt.result_code}, attempt_id=attempt_id)
    state.record_shopper_result(order_id, response, attempt_id)


def _call_payments(order_id, attempt_id, idempotency_key, body):
    """(response, None), or (None, the last error) when no try got a usable answer.

    Tries again, with the same Idempotency-Key, after no answer, a 5xx or a 704 ("already processed
    or in progress": the first try is still running at Adyen; HTTP 422 or 409). Any other 4xx is
    final and raises PaymentNotStarted. Every try ends by the deadline.
    """
    config = current_app.config
    retries = config.get("PAYMENTS_RETRIES", PAYMENTS_RETRIES)
    backoff = config.get("PAYMENTS_RETRY_BACKOFF", RETRY_BACKOFF_SECONDS)
    deadline = time.monotonic() + config["ADYEN_PAYMENTS_DEADLINE"]
    last_error = None
    for tried in range(retries + 1):
        if tried:
            pause = backoff[min(tried - 1, len(backoff) - 1)] if backoff else 0
            if deadline - time.monotonic() - pause < MIN_TRY_SECONDS:
                log.info("order %s: no time left for another /payments try", body["reference"])
                break
            time.sleep(pause)
        try:
            response = adyen().payments(
                body, idempotency_key, context={"order_id": order_id}, timeout=_timeout_until(deadline)
            )
            return response, None
        except AdyenApiError as error:
            if error.is_final:
                log.warning("order %s: /payments refused with %s %s", body["reference"], error.status, error.error_code)
                state.payment_refused(order_id, attempt_id, error.status, error.error_code)
                raise PaymentNotStarted(error.message or "", status=error.status) from None
            last_error = error
        except AdyenUnavailable as error:
            last_error = error
    return None, last_error


def _timeout_until(deadline):
    """(connect, read) timeouts for one call that cannot run past `deadline`."""
    config = current_app.config
    left = max(deadline - time.monotonic(), MIN_TRY_SECONDS)
    connect = min(config["ADYEN_CONNECT_TIMEOUT"], left / 2)
    read = min(config["ADYEN_READ_TIMEOUT"], left - connect)
    return (connect, read)


def redirect_action(order):
    """The action to send the shopper to: only ever one the server itself received from Adyen,
    and only to an Adyen or KNET address (raises UnsafeRedirect otherwise). Notes the redirect."""
    attempt = order.latest_attempt
    if not (attempt and attempt.status == AttemptStatus.REDIRECTED and attempt.action_url):
        return None
    if not security.is_payment_page_url(attempt.action_url):
        log.error(
            "order %s: refused to send the shopper to %r: not an Adyen or KNET page",
            order.reference,
            security.origin_of(attempt.action_url),
        )
        history_note(order.id, Kind.REDIRECT_REFUSED, attempt_id=attempt.id)
        raise UnsafeRedirect(order.reference)
    detail = {"url": attempt.action_url, "method": attempt.action_method}
    history_note(order.id, Kind.REDIRECT, detail=detail, attempt_id=attempt.id)
    return attempt


def note_return(order_id, method, value):
    """The shopper is back from KNET (the redirectResult is kept shortened: a one-time bearer value)."""
    shortened = (value[:12] + "…") if value else None
    history_note(order_id, Kind.RETURN, detail={"method": method, "redirectResult": shortened})


def complete_return(order, redirect_result, is_payload=False):
    """Send the URL-decoded redirectResult (or legacy payload) to /payments/details, once decoded.

    A replay of a result already shown as final is not sent again. Returns the details response,
    or None when nothing new was asked.
    """
    if order.result_code in FINAL_RESULTS:
        return None
    attempt = order.latest_attempt
    attempt_id = attempt.id if attempt else None
    order_id = order.id
    key_name = "payload" if is_payload else "redirectResult"
    # The same redirectResult always carries the same Idempotency-Key, so a refresh or a
    # double POST gets Adyen's first answer instead of "704 request already processed".
    digest = hashlib.sha256(redirect_result.encode()).hexdigest()[:24]
    idempotency_key = f"details-{attempt_id or 0}-{digest}"
    try:
        response = adyen().payments_details(
            {"details": {key_name: redirect_result}},  # only the allowlisted key, decoded once
            idempotency_key=idempotency_key,
            context={"order_id": order_id},
        )
    except AdyenApiError as error:
        if error.in_progress:  # 704 (422 or 409), already processed or in progress: not a failure
            _details_unanswered(order_id, attempt_id, "704 request already processed or in progress")
            return None
        if not error.is_final:
            _details_unanswered(order_id, attempt_id, str(error))
        raise
    except AdyenUnavailable as error:
        _details_unanswered(order_id, attempt_id, str(error))
        raise
    reference = response.get("merchantReference")
    if reference and reference != order.reference:
        log.warning("return for order %s carried the result of %s; ignored", order.reference, reference)
        history_note(order_id, Kind.FOREIGN_RESULT, detail={"merchantReference": reference})
        raise ResultNotForThisOrder(reference)
    _record_details_answer(order_id, attempt_id, response)
    return response


@transaction
def _record_details_answer(order_id, attempt_id, response):
    if attempt_id is not None:
        db.session.execute(
            update(PaymentAttempt)
            .where(PaymentAttempt.id == attempt_id)
            .values(
                status=AttemptStatus.RETURNED,
                result_code=response.get("resultCode"),
                psp_reference=func.coalesce(response.get("pspReference"), PaymentAttempt.psp_reference),
            )
        )
    state.record_shopper_result(order_id, response, attempt_id)


@transaction
def _details_unanswered(order_id, attempt_id, why):
    """/payments/details gave no usable answer (or 704): the shopper has paid or not, the webhook
    will say. The shopper is back from KNET: never offer to send them there again for this attempt."""
    if attempt_id is not None:
        db.session.execute(
            update(PaymentAttempt)
            .where(PaymentAttempt.id == attempt_id, PaymentAttempt.status == AttemptStatus.REDIRECTED)
            .values(status=AttemptStatus.RETURNED)
        )
    history.note(order_id, Kind.DETAILS_UNKNOWN, why, attempt_id=attempt_id)
