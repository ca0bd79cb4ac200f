"""One order's timeline: every Adyen call, redirect, return, webhook, state change and email, in order.

Built from the store only (ApiCall, OrderEvent, Notification and Email rows); each step says in one
line why it happens and links to the Adyen docs page about it. Everything shown passes through
`shop.console.redact`.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlsplit

from sqlalchemy import and_, or_, select

from shop.console import redact
from shop.db import db
from shop.models import ApiCall, Email, Notification, OrderEvent, OrderStatus, Refund, RefundKind
from shop.money import format_amount
from shop.orders.history import Kind

DOCS = {
    "/paymentMethods": (
        "API: POST /paymentMethods",
        "https://docs.adyen.com/api-explorer/Checkout/71/post/paymentMethods",
    ),
    "/payments": ("API: POST /payments", "https://docs.adyen.com/api-explorer/Checkout/71/post/payments"),
    "/payments/details": (
        "API: POST /payments/details",
        "https://docs.adyen.com/api-explorer/Checkout/71/post/payments/details",
    ),
    "redirects": ("Handling redirects", "https://docs.adyen.com/online-payments/api-only/handling-redirects"),
    "webhooks": ("Webhooks", "https://docs.adyen.com/development-resources/webhooks"),
    "hmac": (
        "Verify HMAC signatures",
        "https://docs.adyen.com/development-resources/webhooks/secure-webhooks/verify-hmac-signatures",
    ),
    "handle": ("Handle webhook events", "https://docs.adyen.com/development-resources/webhooks/handle-webhook-events"),
    "knet": ("KNET for API only", "https://docs.adyen.com/payment-methods/knet/api-only"),
    "result": (
        "KNET: present the payment result",
        "https://docs.adyen.com/payment-methods/knet/api-only#present-the-payment-result",
    ),
    "idempotency": ("API idempotency", "https://docs.adyen.com/development-resources/api-idempotency"),
    "/payments/{paymentPspReference}/refunds": (
        "API: POST /payments/{paymentPspReference}/refunds",
        "https://docs.adyen.com/api-explorer/Checkout/71/post/payments/(paymentPspReference)/refunds",
    ),
    "/payments/{paymentPspReference}/reversals": (
        "API: POST /payments/{paymentPspReference}/reversals",
        "https://docs.adyen.com/api-explorer/Checkout/71/post/payments/(paymentPspReference)/reversals",
    ),
    "refund": ("Refund a payment", "https://docs.adyen.com/online-payments/refund"),
    "reversal": ("Cancel or refund (reversal)", "https://docs.adyen.com/online-payments/reversal"),
    "event-codes": (
        "Webhook event codes",
        "https://docs.adyen.com/development-resources/webhooks/webhook-types",
    ),
    "errors": ("Error codes", "https://docs.adyen.com/development-resources/error-codes"),
}

API_WHY = {
    "/paymentMethods": "The checkout page asks Adyen which payment methods this shopper can use (Kuwait, KWD, "
    "this amount, Web); KNET is offered only if it is in the answer.",
    "/payments": "The server starts the KNET payment with the amount from its own cart and a returnUrl built "
    "from PUBLIC_BASE_URL; Adyen answers with the action that redirects the shopper to KNET.",
    "/payments/details": "Back from KNET, the server sends the URL-decoded redirectResult to Adyen to learn the "
    "resultCode to show the shopper.",
    "/payments/{paymentPspReference}/refunds": "The server asks Adyen to give back an amount of the payment, in fils, "
    "with the refund's own reference and the Idempotency-Key saved before the call. Adyen answers received: "
    "an acknowledgement; the REFUND notification says whether the money went back.",
    "/payments/{paymentPspReference}/reversals": "Cancel or refund: Adyen cancels the payment if it was not captured, "
    "or refunds all of it if it was; the CANCEL_OR_REFUND notification says which, and whether it worked.",
}

# Why each kind of step happens: said once, here, and shown under that step only.
KIND_WHY = {
    Kind.ORDER_CREATED: (
        "The checkout form was sent: the order keeps a snapshot of the server-side cart and the shopper's details, "
        "with a unique merchant reference for Adyen.",
        "knet",
    ),
    Kind.PAYMENT_STARTED: (
        "The order is locked for payment (compare-and-set), and the attempt with its Idempotency-Key is saved in the "
        "same transaction, before /payments is called.",
        "idempotency",
    ),
    Kind.PAYMENT_ANSWERED: ("What the server kept of Adyen's answer to /payments.", "/payments"),
    Kind.PAYMENT_UNKNOWN: (
        "No usable answer: the payment may or may not exist at Adyen. The order stays pending; Try again reuses the "
        "same Idempotency-Key, so it can never make a second payment.",
        "idempotency",
    ),
    Kind.PAYMENT_REFUSED: (
        "Adyen refused /payments, so no payment exists and the order may be paid for again.",
        "errors",
    ),
    Kind.REDIRECT: (
        "The shopper's browser goes to action.url (the KNET page), by GET or by an auto-submitted POST form, as the "
        "action says.",
        "redirects",
    ),
    Kind.REDIRECT_REFUSED: (
        "action.url was not an Adyen or KNET address, so the shopper was not sent there.",
        "redirects",
    ),
    Kind.RETURN: (
        "KNET sends the shopper back to returnUrl with redirectResult appended, by GET or POST; the order is found by "
        "the token in the URL, not the session.",
        "redirects",
    ),
    Kind.DETAILS_UNKNOWN: (
        "/payments/details gave no usable result (or 704: already processed); the webhook decides the order.",
        "/payments/details",
    ),
    Kind.FOREIGN_RESULT: ("The redirectResult belonged to another order, so it changed nothing here.", "redirects"),
    Kind.RESULT_SHOWN: (
        "The resultCode only decides what the shopper sees now; the webhook decides the order.",
        "result",
    ),
    Kind.TRANSITION: (
        "Only a verified webhook moves an order to a final state, as the KNET webhook table says.",
        "knet",
    ),
    Kind.REVIEW: ("A verified webhook that needs a person to look at the order; the status is unchanged.", "knet"),
    Kind.DUPLICATE_PAYMENT: (
        "Another order of the same cart was paid already: the shopper paid twice (two tabs, or Back and pay again). "
        "The money came, so the order is paid, and flagged duplicate_payment to be refunded.",
        "knet",
    ),
    Kind.WEBHOOK_PROCESSED: (
        "After the acknowledgement, the background worker applied the stored webhook; this one changed nothing.",
        "handle",
    ),
    Kind.WEBHOOK_DUPLICATE: (
        "Adyen may deliver an event more than once; the stored twin is found by (pspReference, eventCode, success, "
        "originalReference), counted and acknowledged, with no second effect.",
        "webhooks",
    ),
    Kind.WEBHOOK_REPLAYED: (
        "A developer queued this stored webhook to be applied again; applying it twice is a no-op.",
        "handle",
    ),
    Kind.RECONCILED: (
        "No result came for this payment within RECONCILE_AFTER_SECONDS, so the shop closed the order itself. A late "
        "AUTHORISATION success=true still makes it paid, flagged for a refund decision.",
        "knet",
    ),
    Kind.REFUND_REQUESTED: (
        "The refund is saved with its own reference and Idempotency-Key, and the order locked (compare-and-set) so "
        "that two consoles or a double click can never give back more than what is left, before Adyen is called.",
        "refund",
    ),
    Kind.REFUND_ANSWERED: (
        "Adyen acknowledged the request (status received, the modification's pspReference). Not the outcome: the "
        "notification decides.",
        "refund",
    ),
    Kind.REFUND_UNKNOWN: (
        "No usable answer: the refund stays requested and is sent again with the same Idempotency-Key, so Adyen "
        "makes it at most once.",
        "idempotency",
    ),
    Kind.REFUND_REFUSED: (
        "Adyen refused the refund request itself (4xx), so no refund exists: the order goes back, flagged "
        "refund_failed.",
        "errors",
    ),
    Kind.REFUND_SETTLED: (
        "A verified refund notification, matched by originalReference and the refund's reference, decided the "
        "refund; the order's status follows from all its refunds. success=false is an outcome, not an error.",
        "event-codes",
    ),
    Kind.NOTE: ("A remark written by a person or a tool.", "knet"),
}

RECEIVED_WHY = (
    "Adyen reports the payment's outcome to the webhook endpoint; the shop checks basic auth and the HMAC "
    "signature, stores it, answers [accepted], and applies it afterwards."
)
EMAIL_WHY = (
    "The state change queued one email to the shopper in its own transaction (inform the shopper, as the KNET "
    "webhook table says); it is written in the order's language when it is sent."
)

# Titles of the steps that need no fields but their kind.
KIND_TITLE = {
    Kind.ORDER_CREATED: "Order created from the cart",
    Kind.PAYMENT_STARTED: "created → pending: the payment is being started",
    Kind.PAYMENT_UNKNOWN: "/payments: no usable answer; the outcome is unknown",
    Kind.REDIRECT_REFUSED: "Refused to send the shopper to an address that is not Adyen's or KNET's",
    Kind.DETAILS_UNKNOWN: "/payments/details: no usable answer; the webhook decides",
    Kind.FOREIGN_RESULT: "Ignored a redirectResult that belongs to another order",
    Kind.WEBHOOK_REPLAYED: "A stored webhook replayed by a developer: queued to be applied again",
    Kind.REFUND_UNKNOWN: "Refund call: no usable answer; it is sent again with the same key",
    Kind.NOTE: "Note",
}


@dataclass
class Step:
    at: datetime
    kind: str  # api, order, payment, redirect, return, result, webhook, transition, email, review
    title: str
    why: str
    docs: list
    tone: str = ""  # ok, bad, wait, or ""
    duration_ms: int | None = None
    facts: list = field(default_factory=list)  # [(label, value)]
    blocks: list = field(default_factory=list)  # [(label, text for a <pre>)]
    order_key: tuple = ()
    since_ms: int | None = None


def _utc(moment):
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _docs(*keys):
    return [DOCS[key] for key in keys if key in DOCS]


def build(order):
    """The order's steps, oldest first, each with the time since the step before."""
    known = [order.shopper_first_name, order.shopper_last_name, order.shopper_email, order.shopper_phone]
    steps = [_api_step(call, known) for call in _api_calls(order)]
    refunds = {r.id: r for r in db.session.execute(select(Refund).where(Refund.order_id == order.id)).scalars()}
    # A refund's notifications name the payment (originalReference) and the refund or the order.
    matches = [Notification.merchant_reference == order.reference]
    if refunds:
        matches.append(Notification.merchant_reference.in_([r.reference for r in refunds.values()]))
    if order.payments:
        matches.append(Notification.original_reference.in_(order.payments))
    notifications = {
        n.id: n
        for n in db.session.execute(select(Notification).where(or_(*matches)).order_by(Notification.id)).scalars()
    }
    # Each stored notification is the step "webhook received": the receiver writes nothing else.
    steps += [_received_step(notification, known) for notification in notifications.values()]
    emails = {
        e.id: e
        for e in db.session.execute(select(Email).where(Email.order_id == order.id).order_by(Email.id)).scalars()
    }
    events = db.session.execute(select(OrderEvent).where(OrderEvent.order_id == order.id).order_by(OrderEvent.id))
    for event in events.scalars():
        step = _event_step(order, event, notifications, known, refunds.get(event.refund_id))
        steps.append(step)
        email = emails.pop(event.email_id, None) if event.email_id else None
        if email is not None:  # written in the transaction of this step: shown right after it
            steps.append(_email_step(email, known, at=step.at, key=(*step.order_key, 1)))
    for email in emails.values():  # rows from before emails were tied to their step
        steps.append(_email_step(email, known, at=_utc(email.created_at), key=(_utc(email.created_at), 2, email.id)))

    steps.sort(key=lambda s: s.order_key)
    previous = None
    for step in steps:
        if previous is not None:
            step.since_ms = max(0, int((step.at - previous).total_seconds() * 1000))
        previous = step.at
    return steps


def _api_calls(order):
    return db.session.execute(
        select(ApiCall)
        .where(
            or_(
                ApiCall.order_id == order.id,
                # /paymentMethods on the checkout page, before the order existed.
                and_(ApiCall.order_id.is_(None), ApiCall.checkout_key == order.checkout_key),
            )
        )
        .order_by(ApiCall.id)
    ).scalars()


def _api_step(call, known):
    finished = _utc(call.created_at)
    started = finished - timedelta(milliseconds=call.duration_ms or 0)
    if call.status_code is None:
        outcome, tone = f"no answer ({call.error or 'unknown'})", "bad"
    elif call.status_code >= 400:
        outcome, tone = f"HTTP {call.status_code}", "bad"
    else:
        outcome, tone = f"HTTP {call.status_code}", "ok"
    response = call.response_json or {}
    summary = response.get("resultCode") if isinstance(response, dict) else None
    if call.endpoint == "/paymentMethods" and isinstance(response, dict) and "paymentMethods" in response:
        types = [m.get("type") for m in response.get("paymentMethods") or [] if isinstance(m, dict)]
        summary = "KNET offered" if "knet" in types else "KNET not offered"
    title = f"POST {call.endpoint} → {outcome}" + (f", {summary}" if summary else "")
    facts = [("Method", "POST"), ("URL", redact.text(call.url)), ("HTTP status", call.status_code or "none")]
    if call.idempotency_key:
        facts.append(("Idempotency-Key", call.idempotency_key))
    facts.append(("Duration", f"{call.duration_ms} ms"))
    blocks = [("Request JSON", redact.pretty(call.request_json or {}, known=known))]
    if call.response_json is not None:
        blocks.append(("Response JSON", redact.pretty(call.response_json, known=known)))
    if call.error:
        blocks.append(("Error", redact.text(call.error, known=known)))
    docs = _docs(call.endpoint)
    if call.idempotency_key:
        docs += _docs("idempotency")
    if tone == "bad":
        docs += _docs("errors")
    return Step(
        at=started,
        kind="api",
        title=title,
        why=API_WHY.get(call.endpoint, "A call to Adyen's Checkout API."),
        docs=docs,
        tone=tone,
        duration_ms=call.duration_ms,
        facts=facts,
        blocks=blocks,
        order_key=(started, 0, call.id),
    )


def _event_step(order, event, notifications, known, refund=None):
    """One OrderEvent as a step: its title and facts come from its fields, its explanation from KIND_WHY."""
    at = _utc(event.created_at)
    detail = event.detail if isinstance(event.detail, dict) else {}
    why, doc_key = KIND_WHY.get(event.kind, ("A step of the order.", "knet"))
    docs = _docs(doc_key)
    if refund is not None and refund.kind == RefundKind.REVERSAL:
        docs += _docs("reversal")
    notification = notifications.get(event.notification_id)
    title, facts, blocks, tone = _title(event, detail, notification, refund), [], [], ""
    if refund is not None:
        money = format_amount(refund.amount_value, refund.currency)
        facts.append(("Refund", f"{refund.reference}: {money} of payment {refund.payment_psp_reference}"))
    if event.old_status and event.new_status:
        tone = _status_tone(event.new_status)
    if notification is not None:
        facts.append(("Caused by", f"notification #{notification.id}: {_describe(notification)}"))
        if notification.processed_at and event.kind != Kind.WEBHOOK_DUPLICATE:
            took = int((_utc(notification.processed_at) - _utc(notification.received_at)).total_seconds() * 1000)
            facts.append(("Applied after", f"{took} ms (stored, acknowledged, then applied)"))
    if event.note and event.kind not in (Kind.PAYMENT_UNKNOWN, Kind.DETAILS_UNKNOWN):
        facts.append(("Rule", redact.text(event.note, known=known)))
    elif event.note:
        facts.append(("Why", redact.text(event.note, known=known)))
    if event.kind == Kind.REDIRECT:
        facts += [("Method", detail.get("method")), ("URL", redact.text(detail.get("url") or "", known=known))]
        parameters = _redirect_parameters(order, detail.get("url"), detail.get("method"))
        if parameters:
            facts.append(("Parameters", redact.pretty(parameters, known=known)))
    elif event.kind == Kind.RETURN:
        value = detail.get("redirectResult") or "none"
        # Stored already shortened ("X6XtfGC3!eyJ…"); a longer value is shortened here.
        facts += [
            ("Method", detail.get("method")),
            ("redirectResult", value if value.endswith("…") else redact.shorten(value)),
        ]
    elif event.kind == Kind.RESULT_SHOWN:
        code = detail.get("resultCode")
        facts += [("resultCode", code), ("pspReference", detail.get("pspReference"))]
        tone = {"Authorised": "ok", "Pending": "wait", "Received": "wait"}.get(code, "bad")
    elif event.kind == Kind.WEBHOOK_DUPLICATE:
        facts.append(("Deliveries so far", detail.get("deliveries")))
        tone = "ok"
    elif event.kind == Kind.REFUND_ANSWERED:
        facts += [("status", detail.get("status")), ("pspReference", detail.get("pspReference"))]
        tone = "wait"
    elif event.kind == Kind.REFUND_REQUESTED:
        facts.append(("Idempotency-Key", detail.get("Idempotency-Key")))
        tone = "wait"
    elif event.kind in (Kind.REFUND_SETTLED, Kind.REFUND_REFUSED):
        tone = "ok" if detail.get("refund") == "succeeded" else "bad"
        if refund is not None and refund.failure_reason and tone == "bad":
            facts.append(("Adyen's reason", redact.text(refund.failure_reason, known=known)))
    elif event.kind == Kind.DUPLICATE_PAYMENT and order.duplicate_of_id:
        facts.append(("First payment", f"order #{order.duplicate_of_id}"))
    elif detail and event.kind not in (Kind.PAYMENT_ANSWERED, Kind.ORDER_CREATED, Kind.FOREIGN_RESULT):
        blocks.append(("Detail", redact.pretty(detail, known=known)))
    return Step(
        at=at,
        kind=event.kind,
        title=redact.text(title, known=known),
        why=why,
        docs=docs,
        tone=tone,
        facts=facts,
        blocks=blocks,
        order_key=(at, 1, event.id),
    )


def _title(event, detail, notification, refund=None):
    """The step's one line, from its fields."""
    kind = event.kind
    if kind.startswith("refund_") and refund is not None:
        return _refund_title(event, detail, notification, refund)
    if event.summary and kind not in KIND_WHY:  # a row from before the fields existed
        return event.summary
    moved = f"{event.old_status} → {event.new_status}" if event.old_status and event.new_status else None
    cause = _describe(notification) if notification is not None else None
    if kind in (Kind.TRANSITION, Kind.DUPLICATE_PAYMENT) and moved:
        return f"{moved}: {cause}" if cause else moved
    if kind == Kind.REVIEW:
        return f"Flagged for a person, status unchanged: {cause}" if cause else "Flagged for a person"
    if kind == Kind.RECONCILED and moved:
        return f"{moved}: closed by the shop, no result came"
    if kind == Kind.RECONCILED:
        return "Flagged for review by the shop: no webhook came, though the shopper was told the order was placed"
    if kind == Kind.PAYMENT_REFUSED:
        return f"{moved or 'pending → created'}: Adyen refused /payments ({event.note})"
    if kind == Kind.PAYMENT_ANSWERED:
        code = detail.get("resultCode")
        if code == "RedirectShopper":
            return f"/payments answered RedirectShopper: the shopper goes to KNET by {detail.get('method', 'GET')}"
        return f"/payments answered {code}"
    if kind == Kind.REDIRECT:
        return f"Shopper sent to KNET by {detail.get('method')}"
    if kind == Kind.RETURN:
        return f"Shopper back from KNET by {detail.get('method')}"
    if kind == Kind.RESULT_SHOWN:
        return f"The shopper is shown '{detail.get('resultCode')}'"
    if kind == Kind.WEBHOOK_PROCESSED:
        return f"Webhook applied, no change: {cause}" if cause else "Webhook applied, no change"
    if kind == Kind.WEBHOOK_DUPLICATE:
        return f"Webhook delivered again: {cause}" if cause else "Webhook delivered again"
    if kind == Kind.NOTE:
        return event.note or "Note"
    return KIND_TITLE.get(kind, event.summary or kind)


def _refund_title(event, detail, notification, refund):
    moved = f"{event.old_status} → {event.new_status}: " if event.old_status and event.new_status else ""
    what = f"{'cancel or refund' if refund.kind == RefundKind.REVERSAL else 'refund'} {refund.reference}"
    money = format_amount(refund.amount_value, refund.currency)
    if event.kind == Kind.REFUND_REQUESTED:
        return f"{moved}{what} of {money} saved with its Idempotency-Key, before the call"
    if event.kind == Kind.REFUND_ANSWERED:
        return f"Adyen acknowledged {what}: status {detail.get('status')}, not the outcome yet"
    if event.kind == Kind.REFUND_REFUSED:
        return f"{moved}Adyen refused {what}: {event.note}"
    if event.kind == Kind.REFUND_SETTLED:
        cause = _describe(notification) if notification is not None else "a notification"
        return f"{moved}{what} decided by {cause}"
    return KIND_TITLE.get(event.kind, event.kind)


def _describe(notification):
    original = f", originalReference {notification.original_reference}" if notification.original_reference else ""
    return (
        f"{notification.event_code} success={notification.success_text} "
        f"(pspReference {notification.psp_reference}{original})"
    )


def _status_tone(status):
    if status in (OrderStatus.PAID, OrderStatus.REFUNDED, OrderStatus.PARTIALLY_REFUNDED):
        return "ok"
    if status in (OrderStatus.FAILED, OrderStatus.EXPIRED):
        return "bad"
    return "wait"


def _redirect_parameters(order, url, method):
    """The query of a GET action.url, or the form fields (action.data) of a POST action."""
    if method == "POST":
        attempt = next((a for a in reversed(order.attempts) if a.action_url == url), None)
        return dict(attempt.action_data or {}) if attempt else None
    query = parse_qsl(urlsplit(url or "").query, keep_blank_values=True)
    return dict(query) or None


def _received_step(notification, known):
    at = _utc(notification.received_at)
    not_applied = notification.status in ("ignored", "flagged")  # stored with why, never applied
    verdict = (notification.note or "not applied") if not_applied else "queued to be applied"
    facts = [
        ("Verification", "basic auth and HMAC signature verified (refused webhooks are never stored)"),
        ("Notification", f"#{notification.id}, {notification.status}"),
    ]
    return Step(
        at=at,
        kind="webhook",
        title=redact.text(
            f"Webhook {_describe(notification)} received: verified, first delivery, {verdict}", known=known
        ),
        why=RECEIVED_WHY,
        docs=_docs("webhooks", "hmac"),
        tone="bad" if notification.status == "flagged" else "ok",
        facts=facts,
        blocks=[("Webhook body (as received; signature masked)", redact.pretty(notification.raw_body, known=known))],
        # Before the events of the same moment: it was stored before anything was done with it.
        order_key=(at, 0, notification.id),
    )


def _email_step(email, known, at, key):
    personal = redact.shows_personal_data()
    subject = email.subject or f"the {email.kind or ''} email (written when it is sent)"
    return Step(
        at=at,
        kind="email",
        title=f"Email to the shopper: {redact.text(subject, known=known)}",
        why=EMAIL_WHY,
        docs=_docs("knet"),
        facts=[
            ("To", email.to if personal else redact.mask_email(email.to)),
            ("Status", email.status + (" (no MAIL_SERVER: kept in the outbox)" if email.status == "kept" else "")),
        ],
        blocks=[("Body", redact.text(email.body, known=known))] if email.body else [],
        order_key=key,
    )
