"""Checkout pages: the form and payment methods, the redirect to KNET, the return, the result."""

import logging
import secrets

from flask import abort, flash, jsonify, redirect, render_template, request, session, url_for
from flask_babel import gettext
from flask_babel import lazy_gettext as _l

from shop import csrf, i18n, security
from shop.adyen import AdyenApiError, AdyenError
from shop.checkout import bp, payments
from shop.checkout.forms import CheckoutForm
from shop.db import db
from shop.models import Order, OrderStatus
from shop.orders import state
from shop.storefront.cart import Cart

log = logging.getLogger(__name__)

# What the docs tell the shopper for each resultCode KNET can return
# (https://docs.adyen.com/payment-methods/knet/api-only#present-the-payment-result).
# Lazy strings: translated when the page is rendered, into its language (shop/translations).
RESULT_MESSAGES = {
    "Authorised": ("ok", _l("Payment successful"), _l("Your payment was successful. Thank you for your order.")),
    "Pending": (
        "wait",
        _l("Order received"),
        _l("We've received your order and are waiting for the payment to be completed."),
    ),
    "Received": (
        "wait",
        _l("Order received"),
        _l("We've received your order and are waiting for the payment to be completed."),
    ),
    "Cancelled": (
        "bad",
        _l("Payment cancelled"),
        _l(
            "You cancelled the payment on KNET's page. Do you want to continue with your order? "
            "You can try again or choose a different payment method."
        ),
    ),
    "Error": (
        "bad",
        _l("Payment error"),
        _l("There was an error processing your payment. You can try again or choose a different payment method."),
    ),
    "Refused": (
        "bad",
        _l("Payment refused"),
        _l("The payment was refused by KNET. Please try again using a different payment method."),
    ),
}

# What the webhook-decided order state tells the shopper (the webhook table of the same page).
STATUS_MESSAGES = {
    OrderStatus.PAID: ("ok", _l("Payment successful"), _l("Your payment was successful. We are preparing your order.")),
    OrderStatus.FAILED: (
        "bad",
        _l("Order cancelled"),
        _l("The payment failed, so we cancelled the order. You can try again or choose a different payment method."),
    ),
    OrderStatus.EXPIRED: (
        "bad",
        _l("Order cancelled"),
        _l("The payment timed out, so we cancelled the order. You can try again when you are ready."),
    ),
}

WAITING = (
    "wait",
    _l("Waiting for the payment result"),
    _l("We're confirming your payment with KNET."),
)


def _checkout_key():
    """The key of this checkout form, kept in the session; a new one once its order has left `created`."""
    key = session.get("checkout_key")
    if key:
        order = db.session.execute(db.select(Order).filter_by(checkout_key=key)).scalar_one_or_none()
        if order is None or order.status == OrderStatus.CREATED:
            return key
    key = secrets.token_urlsafe(24)
    session["checkout_key"] = key
    return key


def _order_or_404(token):
    order = db.session.execute(db.select(Order).filter_by(token=token)).scalar_one_or_none()
    if order is None:
        abort(404)
    # An order's pages speak its language unless the shopper chose one (a link from an email).
    i18n.prefer_order_language(order.shopper_locale)
    return order


def _payment_methods(cart, locale, checkout_key=None):
    """(knet_entry, problem): the KNET method if Adyen offers it, else a plain sentence why not."""
    try:
        methods = payments.available_methods(cart.total, locale, checkout_key)
    except AdyenError:
        log.exception("could not load payment methods")
        return None, gettext("We can't load the payment methods right now. Please try again in a moment.")
    knet = payments.find_knet(methods)
    if knet is None:
        return None, gettext("KNET is not available for this order right now, so it can't be paid here.")
    return knet, None


def _not_started_message(error):
    """Adyen refused /payments (4xx): nothing was charged. A 401/403 is the shop's own set-up."""
    if error.shop_side:
        return gettext("We can't take payments right now, so nothing was charged. Please try again later.")
    return gettext("The payment could not be started. Please check your details and try again.")


@bp.route("/checkout", methods=["GET", "POST"])
def checkout():
    cart = Cart.from_session()
    if cart.is_empty:
        flash(gettext("Your cart is empty. Add a product before checking out."), "error")
        return redirect(url_for("storefront.cart"), code=303)
    locale = i18n.shopper_locale()  # en-KW or ar-KW: the page's language, for the KNET page too
    form = CheckoutForm(data=session.get("shopper") if request.method == "GET" else None)
    key = _checkout_key()

    if request.method == "POST" and form.validate_on_submit():
        if form.checkout_key.data != session.get("checkout_key"):
            flash(
                gettext(
                    "This checkout page was out of date, so nothing was charged. Please check the details and pay."
                ),
                "error",
            )
            return redirect(url_for("checkout.checkout"), code=303)
        shopper = {
            "shopper_first_name": form.first_name.data,
            "shopper_last_name": form.last_name.data,
            "shopper_email": form.email.data,
            "shopper_phone": form.phone.data,
        }
        session["shopper"] = {
            "first_name": form.first_name.data,
            "last_name": form.last_name.data,
            "email": form.email.data,
            "phone": form.phone.data,
        }
        order, _ = payments.order_for_checkout(form.checkout_key.data, cart, shopper, locale)
        if not state.start_payment(order.id):
            # A second click or tab: the first one is paying; send this one where the first went.
            return redirect(url_for("checkout.go_to_payment", token=order.token), code=303)
        try:
            payments.pay(order)
        except payments.PaymentNotStarted as error:
            flash(_not_started_message(error), "error")
            return redirect(url_for("checkout.checkout"), code=303)
        except payments.PaymentOutcomeUnknown:
            return redirect(url_for("checkout.result", token=order.token), code=303)
        return redirect(url_for("checkout.go_to_payment", token=order.token), code=303)

    form.checkout_key.data = key
    knet, problem = _payment_methods(cart, locale, key)
    status = 422 if request.method == "POST" else 200
    return render_template("checkout/checkout.html", form=form, cart=cart, knet=knet, problem=problem), status


@bp.get("/orders/<token>/pay")
def go_to_payment(token):
    """Send the shopper to KNET: 303 for a GET action, an auto-submitted form for a POST action."""
    order = _order_or_404(token)
    try:
        attempt = payments.redirect_action(order)
    except payments.UnsafeRedirect:  # never follow an address that is not Adyen's or KNET's
        return render_template(
            "checkout/message.html",
            title=gettext("We couldn't open the payment page"),
            message=gettext("Nothing was charged. Please try again later or contact us with your order reference."),
            order=order,
        ), 502
    if attempt is None or order.result_code in payments.FINAL_RESULTS:
        return redirect(url_for("checkout.result", token=token), code=303)
    state.add_event(
        order.id,
        "redirect",
        f"Shopper sent to KNET by {attempt.action_method}",
        {"url": attempt.action_url, "method": attempt.action_method},
    )
    db.session.commit()
    if attempt.action_method == "POST":
        security.allow_form_action(attempt.action_url)  # CSP form-action: this page posts to KNET
        return render_template("checkout/redirect_post.html", url=attempt.action_url, data=attempt.action_data)
    return redirect(attempt.action_url, code=303)


@bp.route("/checkout/return/<token>", methods=["GET", "POST"])
@csrf.exempt  # the shopper comes back from KNET's site, which can't carry our CSRF token
def shopper_return(token):
    """Where KNET sends the shopper back, by GET or POST, with `redirectResult` appended.

    The order is found by the token in the URL, not the session cookie: a cross-site POST
    arrives without it. https://docs.adyen.com/online-payments/api-only/handling-redirects
    """
    order = _order_or_404(token)
    sources = (request.form, request.args) if request.method == "POST" else (request.args,)
    redirect_result = next((s.get("redirectResult") for s in sources if s.get("redirectResult")), None)
    payload = next((s.get("payload") for s in sources if s.get("payload")), None)
    value = redirect_result or payload
    state.add_event(
        order.id,
        "return",
        f"Shopper back from KNET by {request.method}",
        {"redirectResult": (value[:12] + "…") if value else None, "method": request.method},
    )
    db.session.commit()
    # The language switch on these pages goes to the order, never back through this return.
    i18n.set_language_next(url_for("checkout.result", token=token))
    if not value or len(value) > 20000:
        return render_template(
            "checkout/message.html",
            title=gettext("We couldn't read the payment result"),
            message=gettext(
                "The link you followed has no payment result. If you paid, we'll confirm it by email; "
                "you can also check the order page."
            ),
            order=order,
        ), 400
    try:
        payments.complete_return(order, value, is_payload=not redirect_result)
    except payments.ResultNotForThisOrder:
        i18n.set_language_next(url_for("storefront.catalog"))
        return render_template(
            "checkout/message.html",
            title=gettext("This payment result is not for this order"),
            message=gettext("Nothing was changed. Please open the order from your confirmation email."),
            order=None,
        ), 400
    except AdyenApiError as error:
        log.warning("order %s: /payments/details refused with %s %s", order.reference, error.status, error.error_code)
    except AdyenError:
        log.warning("order %s: /payments/details unavailable; the webhook will decide", order.reference)
    return redirect(url_for("checkout.result", token=token), code=303)


def _outcome(order):
    """(state, tone, title, message) of the order's page. `state` names what the page shows, for the
    status endpoint: the webhook's verdict when it has come, else the redirect's resultCode."""
    if order.status in STATUS_MESSAGES:
        return (order.status, *STATUS_MESSAGES[order.status])
    if order.result_code in RESULT_MESSAGES:
        return (order.result_code.lower(), *RESULT_MESSAGES[order.result_code])
    return ("waiting", *WAITING)


def _is_waiting(order, tone):
    return order.status not in OrderStatus.FINAL and tone == "wait"


@bp.get("/orders/<token>")
def result(token):
    """The order's result page. While it waits for the result, static/js/live-status.js asks
    result_status and brings the page up to date; without JavaScript, "Check again" reloads it."""
    order = _order_or_404(token)
    state_name, tone, title, message = _outcome(order)
    placed = order.status == OrderStatus.PAID or (tone in ("ok", "wait") and order.result_code)
    if placed and session.get("checkout_key") == order.checkout_key:
        Cart.from_session().clear()
    # security.py sends these pages with Cache-Control: no-store.
    return render_template(
        "checkout/result.html",
        order=order,
        state=state_name,
        tone=tone,
        title=title,
        message=message,
        waiting=_is_waiting(order, tone),
        can_retry=tone == "bad",
    )


@bp.get("/orders/<token>/status")
def result_status(token):
    """What the order's page shows, in one word, for the page's script: nothing a holder of the
    token could not read on the page itself (no amount, reference or shopper data)."""
    order = _order_or_404(token)
    state_name, tone, _title, _message = _outcome(order)
    return jsonify(state=state_name, waiting=_is_waiting(order, tone))


@bp.post("/orders/<token>/try-again")
def try_again(token):
    """Try again from a failed order's page: to the checkout, with the order's items in the cart.

    A Pending or Received payment emptied the cart (the order was placed); when the webhook then
    fails it, the items are put back, rebuilt from the order's lines and the catalog (ids and
    quantities only, never anything the browser sent). A cart with something in it is left alone."""
    order = _order_or_404(token)
    _state, tone, _title, _message = _outcome(order)
    if tone != "bad":  # nothing to try again (paid, or still waiting): back to what the page says now
        return redirect(url_for("checkout.result", token=token), code=303)
    cart = Cart.from_session()
    if cart.is_empty and cart.restore(order.lines):
        flash(
            gettext(
                "Order %(reference)s was not paid, and nothing was charged. Its items are back in your cart: "
                "check your details and pay again.",
                reference=order.reference,
            ),
            "success",
        )
    return redirect(url_for("checkout.checkout"), code=303)


@bp.post("/orders/<token>/pay")
def retry_payment(token):
    """Ask /payments again after no answer: same attempt, same Idempotency-Key, so never two payments."""
    order = _order_or_404(token)
    attempt = order.latest_attempt
    if order.status == OrderStatus.PENDING and attempt is not None and attempt.status == "calling":
        try:
            payments.pay(order)
        except payments.PaymentNotStarted as error:
            flash(_not_started_message(error), "error")
            return redirect(url_for("checkout.checkout"), code=303)
        except payments.PaymentOutcomeUnknown:
            flash(
                gettext("We still can't reach the payment provider. Your order is saved; please try again shortly."),
                "error",
            )
            return redirect(url_for("checkout.result", token=token), code=303)
    return redirect(url_for("checkout.go_to_payment", token=token), code=303)
