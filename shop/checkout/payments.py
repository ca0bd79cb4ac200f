"""The payment flow's services: what the shop sends to Adyen, and what it keeps of the answers.

Advanced flow, API only (https://docs.adyen.com/payment-methods/knet/api-only):
/paymentMethods → /payments → redirect to KNET → return → /payments/details → webhook.
Views call these functions; these call the Adyen client and the store, never the other way.
"""

import hashlib
import logging
import secrets
import time
from datetime import UTC, datetime

from flask import current_app
from sqlalchemy.exc import IntegrityError

from shop import security
from shop.adyen import AdyenApiError, AdyenUnavailable
from shop.db import db
from shop.models import AttemptStatus, Order, OrderStatus, PaymentAttempt
from shop.orders import state
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


def order_for_checkout(checkout_key, cart, shopper, locale):
    """Find or create the one order of this checkout form. Returns (order, created).

    A double click or a second tab posts the same checkout_key, and so finds the same order.
    """
    order = db.session.execute(db.select(Order).filter_by(checkout_key=checkout_key)).scalar_one_or_none()
    if order is None:
        order = Order(
            checkout_key=checkout_key,
            reference=new_reference(),
            amount_value=cart.total,
            currency="KWD",
            lines=cart.snapshot(),
            shopper_locale=locale,
            **shopper,
        )
        db.session.add(order)
        try:
            db.session.commit()
            state.add_event(
                order.id, "order", f"Order {order.reference} created from the cart ({_count(len(order.lines), 'line')})"
            )
            db.session.commit()
            return order, True
        except IntegrityError:  # the other click won the race: use its order
            db.session.rollback()
            order = db.session.execute(db.select(Order).filter_by(checkout_key=checkout_key)).scalar_one()
            return order, False
    if order.status == OrderStatus.CREATED:
        # Not paid for yet (say Adyen refused the last request): take the cart and details as they are now.
        order.amount_value, order.lines, order.shopper_locale = cart.total, cart.snapshot(), locale
        for name, value in shopper.items():
            setattr(order, name, value)
        db.session.commit()
    return order, False


def _count(number, noun):
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


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


def pay(order):
    """Call /payments for an order that is pending, and keep the action. Returns the attempt.

    The attempt and its Idempotency-Key are saved before the call, so a retry after a timeout
    reuses the key and cannot create a second payment.
    """
    attempt = order.latest_attempt
    if attempt is None or attempt.status != AttemptStatus.CALLING:
        attempt = PaymentAttempt(order_id=order.id)
        db.session.add(attempt)
        db.session.commit()

    body = payment_request(order)
    response, last_error = _call_payments(order, attempt, body)
    if response is None:
        log.warning("order %s: /payments outcome unknown (%s)", order.reference, last_error)
        state.add_event(order.id, "payment", f"/payments got no usable answer ({last_error}); the outcome is unknown")
        db.session.commit()
        raise PaymentOutcomeUnknown(str(last_error))

    action = response.get("action") or {}
    attempt.result_code = response.get("resultCode")
    attempt.psp_reference = response.get("pspReference")
    if response.get("resultCode") == "RedirectShopper" and action.get("url"):
        attempt.status = AttemptStatus.REDIRECTED
        attempt.action_type = action.get("type")
        attempt.action_method = (action.get("method") or "GET").upper()
        attempt.action_url = action["url"]
        attempt.action_data = action.get("data") or {}
        state.add_event(order.id, "payment", "/payments answered RedirectShopper: the shopper goes to KNET")
        db.session.commit()
        return attempt
    # Not a redirect (KNET always redirects): show the result as a return would.
    attempt.status = AttemptStatus.RETURNED
    db.session.commit()
    state.record_shopper_result(order.id, response)
    return attempt


def _call_payments(order, attempt, body):
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
                log.info("order %s: no time left for another /payments try", order.reference)
                break
            time.sleep(pause)
        try:
            response = adyen().payments(
                body, attempt.idempotency_key, context={"order_id": order.id}, timeout=_timeout_until(deadline)
            )
            return response, None
        except AdyenApiError as error:
            if error.is_final:
                _rejected(order, attempt, error)
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


def _rejected(order, attempt, error):
    attempt.status = AttemptStatus.REJECTED
    attempt.error_code = error.error_code
    db.session.commit()
    log.warning("order %s: /payments refused with %s %s", order.reference, error.status, error.error_code)
    # No payment exists, so the order may be paid for again (after the shopper fixes the cause).
    state.compare_and_set(
        order.id,
        lambda o: (
            {
                "status": OrderStatus.CREATED,
                "_events": [
                    ("transition", f"pending → created: /payments refused ({error.status} {error.error_code})", None)
                ],
            }
            if o.status == OrderStatus.PENDING
            else None
        ),
    )
    raise PaymentNotStarted(error.message or "", status=error.status)


def redirect_action(order):
    """The action to send the shopper to: only ever one the server itself received from Adyen,
    and only to an Adyen or KNET address (raises UnsafeRedirect otherwise)."""
    attempt = order.latest_attempt
    if attempt and attempt.status == AttemptStatus.REDIRECTED and attempt.action_url:
        if not security.is_payment_page_url(attempt.action_url):
            log.error(
                "order %s: refused to send the shopper to %r: not an Adyen or KNET page",
                order.reference,
                security.origin_of(attempt.action_url),
            )
            state.add_event(
                order.id, "redirect", "Refused to send the shopper to an address that is not Adyen's or KNET's"
            )
            db.session.commit()
            raise UnsafeRedirect(order.reference)
        return attempt
    return None


def complete_return(order, redirect_result, is_payload=False):
    """Send the URL-decoded redirectResult (or legacy payload) to /payments/details, once decoded.

    A replay of a result already shown as final is not sent again. Returns the details response,
    or None when nothing new was asked.
    """
    if order.result_code in FINAL_RESULTS:
        return None
    attempt = order.latest_attempt
    key_name = "payload" if is_payload else "redirectResult"
    # The same redirectResult always carries the same Idempotency-Key, so a refresh or a
    # double POST gets Adyen's first answer instead of "704 request already processed".
    digest = hashlib.sha256(redirect_result.encode()).hexdigest()[:24]
    idempotency_key = f"details-{attempt.id if attempt else 0}-{digest}"
    try:
        response = adyen().payments_details(
            {"details": {key_name: redirect_result}},  # only the allowlisted key, decoded once
            idempotency_key=idempotency_key,
            context={"order_id": order.id},
        )
    except AdyenApiError as error:
        if error.in_progress:  # 704 (422 or 409), already processed or in progress: not a failure
            _back_from_knet(attempt)
            state.add_event(order.id, "return", "/payments/details: 704 already processed; the webhook decides")
            db.session.commit()
            return None
        if not error.is_final:
            _details_unknown(order, attempt, error)
        raise
    except AdyenUnavailable as error:
        _details_unknown(order, attempt, error)
        raise
    reference = response.get("merchantReference")
    if reference and reference != order.reference:
        log.warning("return for order %s carried the result of %s; ignored", order.reference, reference)
        state.add_event(order.id, "return", f"Ignored a redirectResult that belongs to another order ({reference})")
        db.session.commit()
        raise ResultNotForThisOrder(reference)
    if attempt:
        attempt.status = AttemptStatus.RETURNED
        attempt.result_code = response.get("resultCode")
        attempt.psp_reference = response.get("pspReference") or attempt.psp_reference
        db.session.commit()
    state.record_shopper_result(order.id, response)
    return response


def _back_from_knet(attempt):
    """The shopper is back from KNET: never offer to send them there again for this attempt."""
    if attempt is not None and attempt.status == AttemptStatus.REDIRECTED:
        attempt.status = AttemptStatus.RETURNED


def _details_unknown(order, attempt, error):
    """/payments/details gave no usable answer: the shopper has paid or not, the webhook will say."""
    _back_from_knet(attempt)
    state.add_event(order.id, "return", f"/payments/details got no usable answer ({error}); the webhook decides")
    db.session.commit()
