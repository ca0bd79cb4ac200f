"""Checkout pages: the form and payment methods, the redirect to KNET, the return, the result.

One cart, one payment: while an order of the shopper's checkout is being paid (another tab, the Back
button, a refresh), /checkout shows that order and what the shopper can do (go back to KNET, check
the result, or start a new payment on purpose), instead of a second order for the same cart. Once
any order of the cart is paid or received, the cart is emptied. Views read and call the payment
services (shop/checkout/payments.py); they never write to the database themselves.
"""

import logging
import secrets

from flask import abort, flash, jsonify, redirect, render_template, request, session, url_for
from flask_babel import gettext
from flask_babel import lazy_gettext as _l

from shop import i18n, security
from shop.adyen import AdyenApiError, AdyenError
from shop.checkout import bp, payments
from shop.checkout.forms import CheckoutForm
from shop.models import AttemptStatus, OrderStatus, RefundStatus
from shop.orders import refund_state, state
from shop.security import csrf
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
    OrderStatus.REFUND_PENDING: (
        "ok",
        _l("Refund on its way"),
        _l("We have asked for a refund of your payment. It can take a few days to reach your account."),
    ),
    OrderStatus.PARTIALLY_REFUNDED: ("ok", _l("Partly refunded"), _l("We have refunded part of your payment.")),
    OrderStatus.REFUNDED: ("ok", _l("Refunded"), _l("We have refunded your payment.")),
}

WAITING = (
    "wait",
    _l("Waiting for the payment result"),
    _l("We're confirming your payment with KNET."),
)

# An order the shop itself closed because no result came (shop/orders/reconcile.py).
UNCONFIRMED = (
    "bad",
    _l("Order cancelled"),
    _l(
        "We could not confirm your payment with KNET in time, so we cancelled the order. If money was "
        "taken from your account, we will refund it; you can also try again."
    ),
)

# The resultCodes after which the order is placed: the cart has been bought.
PLACED_RESULTS = ("Authorised", "Pending", "Received")


def _being_paid(order):
    """The order's payment is under way: the shopper has not been shown a result yet."""
    return order.status == OrderStatus.PENDING and not order.result_code


def _checkout_key():
    """The key of this checkout form, kept in the session; a new one once its order has a result
    (paid, failed, expired, or refused on KNET's page) or when the shopper chose to pay again."""
    key = session.get("checkout_key")
    if key:
        order = payments.orders_of(checkout_key=key)
        if order is None or order.status == OrderStatus.CREATED or _being_paid(order):
            return key
    key = secrets.token_urlsafe(24)
    session["checkout_key"] = key
    return key


def _order_or_404(token):
    order = payments.orders_of(token=token)
    if order is None:
        abort(404)
    # An order's pages speak its language unless the shopper chose one (a link from an email).
    i18n.prefer_order_language(order.shopper_locale)
    return order


def _is_placed(order):
    return order.status in OrderStatus.MONEY_TAKEN or (
        order.status == OrderStatus.PENDING and order.result_code in PLACED_RESULTS
    )


def _empty_the_cart_if_bought(cart):
    """The order of this cart that was paid or received, after emptying the cart (and saying so);
    or None."""
    if cart.is_empty or not cart.ref:
        return None
    placed = next((order for order in payments.orders_of_cart(cart.ref) if _is_placed(order)), None)
    if placed is not None:
        cart.clear()
        flash(gettext("This cart was bought already, in order %(reference)s.", reference=placed.reference), "success")
    return placed


@bp.before_app_request
def _empty_a_bought_cart_in_the_storefront():
    """The catalog and the cart page too show a cart that another tab paid for (or that a webhook
    made paid after the shopper left KNET's page) as empty."""
    if request.blueprint == "storefront":
        _empty_the_cart_if_bought(Cart.from_session())


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


def _see(endpoint, **values):
    return redirect(url_for(endpoint, **values), code=303)


@bp.route("/checkout", methods=["GET", "POST"])
def checkout():
    cart = Cart.from_session()
    bought = _empty_the_cart_if_bought(cart)
    if bought is not None:
        return _see("checkout.result", token=bought.token)
    if cart.is_empty:
        flash(gettext("Your cart is empty. Add a product before checking out."), "error")
        return _see("storefront.cart")
    locale = i18n.shopper_locale()  # en-KW or ar-KW: the page's language, for the KNET page too
    form = CheckoutForm(data=session.get("shopper") if request.method == "GET" else None)
    key = _checkout_key()

    if request.method == "GET":
        paying = payments.orders_of(checkout_key=key)
        if paying is not None and _being_paid(paying):
            return render_template("checkout/in_progress.html", order=paying, attempt=paying.latest_attempt)

    if request.method == "POST" and form.validate_on_submit():
        if form.checkout_key.data != session.get("checkout_key"):
            flash(
                gettext(
                    "This checkout page was out of date, so nothing was charged. Please check the details and pay."
                ),
                "error",
            )
            return _see("checkout.checkout")
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
        order_id, token = payments.order_for_checkout(form.checkout_key.data, cart, shopper, locale, cart.new_ref())
        if state.start_payment(order_id) is None:
            # A second click or tab: the first one is paying; send this one where the first went.
            return _see("checkout.go_to_payment", token=token)
        try:
            payments.pay(order_id)
        except payments.PaymentNotStarted as error:
            flash(_not_started_message(error), "error")
            return _see("checkout.checkout")
        except payments.PaymentOutcomeUnknown:
            return _see("checkout.result", token=token)
        return _see("checkout.go_to_payment", token=token)

    form.checkout_key.data = key
    knet, problem = _payment_methods(cart, locale, key)
    status = 422 if request.method == "POST" else 200
    return render_template("checkout/checkout.html", form=form, cart=cart, knet=knet, problem=problem), status


@bp.post("/checkout/new")
def new_payment():
    """The shopper chose to pay again although an order of this cart is being paid: a new checkout
    form (a new key, so a new order). If both are paid, the second is flagged duplicate_payment."""
    session.pop("checkout_key", None)
    flash(
        gettext("A new payment: if you already paid on KNET's page, check that order's result first."),
        "warning",
    )
    return _see("checkout.checkout")


@bp.get("/orders/<token:token>/pay")
def go_to_payment(token):
    """Send the shopper to KNET: 303 for a GET action, an auto-submitted form for a POST action."""
    order = _order_or_404(token)
    try:
        attempt = payments.redirect_action(order) if order.result_code not in payments.FINAL_RESULTS else None
    except payments.UnsafeRedirect:  # never follow an address that is not Adyen's or KNET's
        return render_template(
            "checkout/message.html",
            title=gettext("We couldn't open the payment page"),
            message=gettext("Nothing was charged. Please try again later or contact us with your order reference."),
            order=order,
        ), 502
    if attempt is None or order.status != OrderStatus.PENDING:
        return _see("checkout.result", token=token)
    if attempt.action_method == "POST":
        security.allow_form_action(attempt.action_url)  # CSP form-action: this page posts to KNET
        return render_template("checkout/redirect_post.html", url=attempt.action_url, data=attempt.action_data)
    return redirect(attempt.action_url, code=303)


@bp.route("/checkout/return/<token:token>", methods=["GET", "POST"])
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
    payments.note_return(order.id, request.method, value)
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
    return _see("checkout.result", token=token)


def _outcome(order):
    """(state, tone, title, message) of the order's page. `state` names what the page shows, for the
    status endpoint: the webhook's verdict when it has come, else the redirect's resultCode."""
    if order.status == OrderStatus.EXPIRED and order.status_reason == "unconfirmed":
        return ("unconfirmed", *UNCONFIRMED)
    if order.status in STATUS_MESSAGES:
        return (order.status, *STATUS_MESSAGES[order.status])
    if order.result_code in RESULT_MESSAGES:
        return (order.result_code.lower(), *RESULT_MESSAGES[order.result_code])
    return ("waiting", *WAITING)


def _is_waiting(order, tone):
    return order.status not in OrderStatus.FINAL and tone == "wait"


@bp.get("/orders/<token:token>")
def result(token):
    """The order's result page. While it waits for the result, static/js/live-status.js asks
    result_status and brings the page up to date; without JavaScript, "Check again" reloads it."""
    order = _order_or_404(token)
    state_name, tone, title, message = _outcome(order)
    if _is_placed(order):
        cart = Cart.from_session()
        if cart.ref and cart.ref == order.cart_ref or session.get("checkout_key") == order.checkout_key:
            cart.clear()
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
        refunded=[r for r in refund_state.refunds_of(order.id) if r.status == RefundStatus.SUCCEEDED],
    )


@bp.get("/orders/<token:token>/status")
def result_status(token):
    """What the order's page shows, in one word, for the page's script: nothing a holder of the
    token could not read on the page itself (no amount, reference or shopper data)."""
    order = _order_or_404(token)
    state_name, tone, _title, _message = _outcome(order)
    return jsonify(state=state_name, waiting=_is_waiting(order, tone))


@bp.post("/orders/<token:token>/try-again")
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


@bp.post("/orders/<token:token>/pay")
def retry_payment(token):
    """Ask /payments again after no answer: same attempt, same Idempotency-Key, so never two payments."""
    order = _order_or_404(token)
    attempt = order.latest_attempt
    if order.status == OrderStatus.PENDING and attempt is not None and attempt.status == AttemptStatus.CALLING:
        try:
            payments.pay(order.id)
        except payments.PaymentNotStarted as error:
            flash(_not_started_message(error), "error")
            return _see("checkout.checkout")
        except payments.PaymentOutcomeUnknown:
            flash(
                gettext("We still can't reach the payment provider. Your order is saved; please try again shortly."),
                "error",
            )
            return _see("checkout.result", token=token)
    return _see("checkout.go_to_payment", token=token)
