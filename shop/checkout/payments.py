"""The payment flow's services: what the shop sends to Adyen, and what it keeps of the answers.

Advanced flow, API only (https://docs.adyen.com/payment-methods/knet/api-only):
/paymentMethods → /payments → redirect to KNET → return → /payments/details → webhook.
Views call these functions; these call the Adyen client and the store, never the other way.
"""

import hashlib
import logging
import secrets
import time
from datetime import datetime, timezone

from flask import current_app
from sqlalchemy.exc import IntegrityError

from shop.adyen import AdyenApiError, AdyenUnavailable
from shop.db import db
from shop.models import AttemptStatus, Order, OrderStatus, PaymentAttempt
from shop.orders import state
from shop.services import adyen

log = logging.getLogger(__name__)

# /payments is retried this many times more, with the same Idempotency-Key, when Adyen does not
# answer or answers 5xx: Adyen then returns the first attempt's response, never a second payment.
PAYMENTS_RETRIES = 2
RETRY_BACKOFF_SECONDS = (0.5, 1.5)

# resultCodes after which the shopper is not sent to KNET again for this order.
FINAL_RESULTS = ("Authorised", "Refused", "Cancelled", "Error")


class PaymentNotStarted(Exception):
    """Adyen refused the /payments request (4xx): final for this attempt; the shopper may try again."""


class PaymentOutcomeUnknown(Exception):
    """Adyen did not answer: the payment may or may not exist. The order stays pending."""


class ResultNotForThisOrder(Exception):
    """/payments/details described another order's payment (a replayed redirectResult)."""


def available_methods(amount_value, locale):
    """The payment methods Adyen offers for this cart; raises AdyenError if it can't say."""
    config = current_app.config
    response = adyen().payment_methods(
        {
            "merchantAccount": config["ADYEN_MERCHANT_ACCOUNT"],  # whose methods to list
            "countryCode": "KW",  # KNET is offered to shoppers in Kuwait
            "amount": {"currency": "KWD", "value": amount_value},  # KNET only takes KWD
            "channel": "Web",  # a browser checkout, not an app
            "shopperLocale": locale,  # names of the methods in the shopper's language
        }
    )
    return response.get("paymentMethods") or []


def find_knet(methods):
    """The KNET entry (`type: knet`) from /paymentMethods, or None."""
    return next((m for m in methods if isinstance(m, dict) and m.get("type") == "knet"), None)


def new_reference():
    """The merchant reference: unique, readable, well under Adyen's 80 characters."""
    day = datetime.now(timezone.utc).strftime("%Y%m%d")
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
            state.add_event(order.id, "order", f"Order {order.reference} created from the cart ({len(order.lines)} lines)")
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
    for retry in range(PAYMENTS_RETRIES + 1):
        try:
            response = adyen().payments(body, attempt.idempotency_key, context={"order_id": order.id})
            break
        except AdyenApiError as error:
            if error.is_final:
                return _rejected(order, attempt, error)
            last_error = error
        except AdyenUnavailable as error:
            last_error = error
        if retry < PAYMENTS_RETRIES:
            time.sleep(RETRY_BACKOFF_SECONDS[retry])
    else:
        log.warning("order %s: /payments outcome unknown after %d tries", order.reference, PAYMENTS_RETRIES + 1)
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


def _rejected(order, attempt, error):
    attempt.status = AttemptStatus.REJECTED
    attempt.error_code = error.error_code
    db.session.commit()
    log.warning("order %s: /payments refused with %s %s", order.reference, error.status, error.error_code)
    # No payment exists, so the order may be paid for again (after the shopper fixes the cause).
    state.compare_and_set(
        order.id,
        lambda o: {
            "status": OrderStatus.CREATED,
            "_events": [("transition", f"pending → created: /payments refused ({error.status} {error.error_code})", None)],
        }
        if o.status == OrderStatus.PENDING
        else None,
    )
    raise PaymentNotStarted(error.message or "")


def redirect_action(order):
    """The action to send the shopper to: only ever one the server itself received from Adyen."""
    attempt = order.latest_attempt
    if attempt and attempt.status == AttemptStatus.REDIRECTED and attempt.action_url:
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
        if error.error_code == "704":  # already processed or in progress: not a failure
            state.add_event(order.id, "return", "/payments/details: 704 already processed; the webhook decides")
            db.session.commit()
            return None
        raise
    reference = response.get("merchantReference")
    if reference and reference != order.reference:
        log.warning("return for order %s carried the result of %s; ignored", order.reference, reference)
        state.add_event(
            order.id, "return", f"Ignored a redirectResult that belongs to another order ({reference})"
        )
        db.session.commit()
        raise ResultNotForThisOrder(reference)
    if attempt:
        attempt.status = AttemptStatus.RETURNED
        attempt.result_code = response.get("resultCode")
        attempt.psp_reference = response.get("pspReference") or attempt.psp_reference
        db.session.commit()
    state.record_shopper_result(order.id, response)
    return response
