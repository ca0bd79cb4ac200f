"""The console's pages. Views read the store and call the existing services; nothing here changes
an order except through them (a webhook replay)."""

import logging
import secrets
from dataclasses import dataclass
from datetime import UTC

from flask import abort, current_app, flash, jsonify, redirect, render_template, request, url_for
from sqlalchemy import func, or_, select

from shop import worker
from shop.checkout.knet_test_cards import SOURCE as TAP_SOURCE
from shop.checkout.knet_test_cards import TAP_CARDS
from shop.console import auth, bp, doctor, redact, timeline
from shop.db import db
from shop.models import Email, Notification, Order, OrderStatus, Refund, WebhookRejection
from shop.money import as_typed, format_amount, parse_amount
from shop.orders import refund_state, refunds
from shop.webhooks import processing

log = logging.getLogger(__name__)

PAGE_SIZE = 25  # rows per page of each list (tests may set app.config CONSOLE_PAGE_SIZE)
# The menu: the console's own pages, then those plug-ins add (shop/console/__init__.py add_page).
CORE_PAGES = [
    ("console.orders", "Orders"),
    ("console.webhooks", "Webhooks"),
    ("console.emails", "Emails"),
    ("console.test_cards", "Test cards"),
    ("console.doctor_page", "Doctor & go-live"),
]


# Access, headers and the last line of defence ------------------------------------------------


@bp.before_request
def gate():
    return auth.gate()


@bp.after_request
def console_headers(response):
    response.headers["X-Robots-Tag"] = "noindex, nofollow"
    if response.mimetype == "text/html" and not response.direct_passthrough:
        body = response.get_data(as_text=True)
        scrubbed = redact.scrub(body)
        if scrubbed != body:
            # Never expected: every value shown is redacted first. Counted so that tests can tell.
            current_app.extensions["console_scrubbed"] = current_app.extensions.get("console_scrubbed", 0) + 1
            log.error("a configured secret reached a console page (%s); it was masked", request.path)
            response.set_data(scrubbed)
    return response


@bp.app_template_filter("console_time")
def _console_time(moment):
    if moment is None:
        return ""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d} UTC"


@bp.context_processor
def console_context():
    mode = current_app.config["ADYEN_ENVIRONMENT"]
    return {
        "console_pages": CORE_PAGES + current_app.extensions["console_pages"],
        "console_mode": mode,
        "console_simulator": mode == "simulator",
        "console_logged_in": not auth.is_open() and auth.logged_in(),
        "redact": redact,
        "personal": redact.shows_personal_data(),
    }


@dataclass
class Page:
    """One page of a list, newest first: its rows, its number (from 1), how many pages and rows in all,
    and the query parameter that names it (the webhooks page has two lists)."""

    rows: list
    number: int
    pages: int
    total: int
    param: str = "page"

    def url(self, number):
        """This page's address with another page number, the other parameters (a search) kept."""
        args = dict(request.args)
        args[self.param] = number
        return url_for(request.endpoint, **(request.view_args or {}), **args)


def page_of(query, param="page"):
    """The page of `query` (ordered newest first) that `?<param>=N` asks for; out of range: the nearest."""
    size = current_app.config.get("CONSOLE_PAGE_SIZE", PAGE_SIZE)
    total = db.session.execute(select(func.count()).select_from(query.order_by(None).subquery())).scalar() or 0
    pages = max(1, -(-total // size))
    number = min(max(request.args.get(param, 1, type=int) or 1, 1), pages)
    rows = db.session.execute(query.limit(size).offset((number - 1) * size)).scalars().all()
    return Page(rows, number, pages, total, param)


def order_ids(references):
    """{merchant reference: order id} for the references of a page that name one of our orders."""
    if not references:
        return {}
    return dict(db.session.execute(select(Order.reference, Order.id).where(Order.reference.in_(references))).all())


def _shopper(order):
    if redact.shows_personal_data():
        return order.shopper_name
    return redact.mask_name(order.shopper_name)


# Login ------------------------------------------------------------------------------------------


@bp.route("/login", methods=["GET", "POST"])
def login():
    if auth.is_open():
        return redirect(url_for("console.orders"), code=303)
    form = auth.LoginForm()
    if request.method == "GET":
        form.next.data = request.args.get("next", "")
    if form.validate_on_submit():
        if auth.password_matches(form.password.data):
            auth.log_in()
            return redirect(auth.safe_next(form.next.data), code=303)
        log.warning("console login refused from %s", request.remote_addr)
        form.password.errors.append("That is not the console password.")
    status = 401 if request.method == "POST" else 200
    return render_template("console/login.html", form=form), status


@bp.post("/logout")
def logout():
    auth.log_out()
    if auth.is_open():
        return redirect(url_for("console.orders"), code=303)
    return redirect(url_for("console.login"), code=303)


# Orders and the timeline -------------------------------------------------------------------------


@bp.get("/")
def index():
    return redirect(url_for("console.orders"), code=303)


@bp.get("/orders")
def orders():
    query = select(Order).order_by(Order.id.desc())
    search = (request.args.get("q") or "").strip()[:80]
    if search:
        query = query.where(
            or_(
                Order.reference.contains(search, autoescape=True), Order.psp_reference.contains(search, autoescape=True)
            )
        )
    page = page_of(query)
    return render_template("console/orders.html", orders=page.rows, page=page, search=search, shopper=_shopper)


@bp.get("/orders/<id:order_id>")
def order(order_id):
    found = db.session.get(Order, order_id)
    if found is None:
        abort(404)
    steps = timeline.build(found)
    order_refunds = refund_state.refunds_of(found.id)
    return render_template(
        "console/timeline.html",
        order=found,
        steps=steps,
        waiting=_waiting(found),
        state=_timeline_state(found, steps),
        shopper=_shopper(found),
        refunds=order_refunds,
        refund=refund_offer(found, order_refunds),
        reasons=refund_state.REASONS,
    )


def _waiting(order):
    """Whether the order's page should keep asking for news: a payment or a refund not decided yet."""
    return order.status not in OrderStatus.FINAL or order.status == OrderStatus.REFUND_PENDING


def _timeline_state(order, steps):
    """What the timeline shows, in short: it changes with the order's status and with each new step."""
    return f"{order.status}.{len(steps)}"


# Refunds -----------------------------------------------------------------------------------------


@dataclass
class RefundOffer:
    """What the Refund form offers for an order: the payment it gives back (the second one of an order
    flagged as paid twice), what is left of it (fils and as typed), and the reason to prefill (DUPLICATE
    for an order flagged as a second or late payment)."""

    payment: str
    left: int
    left_text: str
    reason: str
    reversible: bool  # nothing refunded yet: "cancel or refund" may give back the whole payment


def refund_offer(order, order_refunds, payment=None):
    """The RefundOffer for `payment` (None: Order.payment_to_refund), or None when the order cannot
    be refunded (not paid, not paid by that payment, or nothing left of it)."""
    payment = payment or order.payment_to_refund
    if order.status not in OrderStatus.MONEY_TAKEN or payment not in order.payments:
        return None
    left = refund_state.left_to_refund(order.amount_value, order_refunds, payment)
    if left <= 0:
        return None
    flagged = order.needs_refund_decision or order.duplicate_of_id is not None
    return RefundOffer(
        payment=payment,
        left=left,
        left_text=as_typed(left, order.currency),
        reason="DUPLICATE" if flagged else "CUSTOMER REQUEST",
        reversible=left == order.amount_value,
    )


def _refund_request(order, offer):
    """(amount in fils or None for a reversal, reason, reversal, errors) from the form's fields."""
    errors = []
    reversal = request.values.get("reversal") in ("1", "on", "true")
    reason = request.values.get("reason") or None
    if reason is not None and reason not in refund_state.REASONS:
        errors.append("Choose one of Adyen's refund reasons.")
    amount = None
    if reversal:
        if not offer.reversible:
            errors.append("Cancel or refund gives back the whole payment; part of it is refunded already.")
    else:
        try:
            amount = parse_amount(request.values.get("amount", ""), order.currency)
        except ValueError as error:
            errors.append(f"Amount: {error}.")
        else:
            if amount <= 0:
                errors.append("Amount: it must be more than 0.")
            elif amount > offer.left:
                errors.append(
                    f"Amount: {format_amount(amount, order.currency)} is more than what is left to refund, "
                    f"{format_amount(offer.left, order.currency)}."
                )
    return amount, reason, reversal, errors


@bp.get("/orders/<id:order_id>/refund")
def refund_confirm(order_id):
    """The confirmation step: what will be sent to Adyen, and one button that sends it."""
    found = db.session.get(Order, order_id) or abort(404)
    offer = refund_offer(found, refund_state.refunds_of(found.id), request.args.get("payment"))
    if offer is None:
        flash(
            f"Order {found.reference} cannot be refunded: it is {found.status}, with nothing left to refund.", "error"
        )
        return redirect(url_for("console.order", order_id=order_id), code=303)
    amount, reason, reversal, errors = _refund_request(found, offer)
    if errors:
        return render_template(
            "console/refund.html",
            order=found,
            offer=offer,
            errors=errors,
            reasons=refund_state.REASONS,
            form=request.args,
        ), 400
    return render_template(
        "console/refund.html",
        order=found,
        offer=offer,
        confirm=True,
        amount=found.amount_value if reversal else amount,
        amount_text=as_typed(found.amount_value if reversal else amount, found.currency),
        reason=reason,
        reversal=reversal,
        request_key=secrets.token_urlsafe(24),
        reasons=refund_state.REASONS,
        errors=[],
    )


@bp.post("/orders/<id:order_id>/refunds")
def refund(order_id):
    """Send the confirmed refund. The form's request_key makes a double click or a resent form one refund."""
    found = db.session.get(Order, order_id) or abort(404)
    request_key = (request.form.get("request_key") or "")[:64]
    reversal = request.form.get("reversal") == "1"
    reason = request.form.get("reason") or None
    payment = request.form.get("payment") or None
    try:
        amount = None if reversal else parse_amount(request.form.get("amount", ""), found.currency)
    except ValueError as error:
        flash(f"Not refunded: {error}.", "error")
        return redirect(url_for("console.order", order_id=order_id), code=303)
    try:
        made = refunds.request_refund(
            order_id,
            amount_minor=amount,
            reason=reason,
            reversal=reversal,
            request_key=request_key or None,
            requested_by="console",
            payment_psp_reference=payment,
        )
    except refunds.RefundOutcomeUnknown as error:
        flash(f"Refund saved, but {error}.", "error")
    except refunds.RefundError as error:
        flash(f"Not refunded: {error}.", "error")
    else:
        flash(
            f"Refund {made.reference} of {format_amount(made.amount_value, made.currency)} of payment "
            f"{made.payment_psp_reference} sent: Adyen answered "
            f"{made.status}. The notification decides whether it is done; this page shows it when it comes.",
            "success",
        )
    return redirect(url_for("console.order", order_id=order_id), code=303)


@bp.post("/refunds/<id:refund_id>/send")
def refund_send_again(refund_id):
    """Send again, with its own Idempotency-Key, a refund whose call got no answer."""
    found = db.session.get(Refund, refund_id) or abort(404)
    order_id = found.order_id
    try:
        refunds.send(refund_id)
    except refunds.RefundError as error:
        flash(f"Refund {found.reference}: {error}.", "error")
    else:
        flash(f"Refund {found.reference} sent again with the same Idempotency-Key.", "success")
    return redirect(url_for("console.order", order_id=order_id), code=303)


@bp.get("/orders/<int:order_id>/status")
def order_status(order_id):
    """For the timeline's script (static/js/live-status.js): whether the page would show something new."""
    found = db.session.get(Order, order_id)
    if found is None:
        abort(404)
    return jsonify(state=_timeline_state(found, timeline.build(found)), waiting=_waiting(found))


# Webhook inbox ----------------------------------------------------------------------------------


@bp.get("/webhooks")
def webhooks():
    notifications = page_of(select(Notification).order_by(Notification.id.desc()))
    rejections = page_of(select(WebhookRejection).order_by(WebhookRejection.id.desc()), param="rejected")
    # Over every stored row, not only the ones listed: a flagged one is a setting to check.
    by_status = dict(db.session.execute(select(Notification.status, func.count()).group_by(Notification.status)).all())
    return render_template(
        "console/webhooks.html",
        notifications=notifications.rows,
        page=notifications,
        order_ids=order_ids({n.merchant_reference for n in notifications.rows}),
        rejections=rejections.rows,
        rejected_page=rejections,
        by_status=by_status,
        flagged=by_status.get(processing.FLAGGED, 0),
    )


@bp.post("/webhooks/<id:notification_id>/replay")
def replay(notification_id):
    previous = processing.requeue(notification_id)
    if previous is None:
        flash(f"Notification #{notification_id} was not replayed: only a processed or failed one can be.", "error")
    else:
        worker.wake(current_app._get_current_object())
        flash(
            f"Notification #{notification_id} ({previous}) is queued to be applied again; a replay of an "
            "applied webhook changes nothing.",
            "success",
        )
    return redirect(url_for("console.webhooks"), code=303)


# Emails, test cards ----------------------------------------------------------------------------------


@bp.get("/emails")
def emails():
    page = page_of(select(Email).order_by(Email.id.desc()))
    rows = page.rows
    orders_by_id = (
        {
            o.id: o
            for o in db.session.execute(
                select(Order).where(Order.id.in_({e.order_id for e in rows if e.order_id}))
            ).scalars()
        }
        if rows
        else {}
    )

    def known(email):
        order = orders_by_id.get(email.order_id)
        if order is None:
            return [email.to]
        return [order.shopper_first_name, order.shopper_last_name, order.shopper_email, order.shopper_phone, email.to]

    return render_template("console/emails.html", emails=rows, page=page, known=known)


@bp.get("/test-cards")
def test_cards():
    return render_template("console/test_cards.html", tap_cards=TAP_CARDS, tap_url=TAP_SOURCE)


# Doctor and go-live ----------------------------------------------------------------------------------


@bp.get("/doctor")
def doctor_page():
    check = request.args.get("check") == "1"
    report = doctor.run(check_endpoint=check)
    return render_template("console/doctor.html", report=report, checked=check, labels=doctor.LABELS)
