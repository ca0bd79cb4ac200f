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
from shop.models import ApiCall, Email, Notification, OrderEvent, OrderStatus

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
    "errors": ("Error codes", "https://docs.adyen.com/development-resources/error-codes"),
}

API_WHY = {
    "/paymentMethods": "The checkout page asks Adyen which payment methods this shopper can use (Kuwait, KWD, "
    "this amount, Web); KNET is offered only if it is in the answer.",
    "/payments": "The server starts the KNET payment with the amount from its own cart and a returnUrl built "
    "from PUBLIC_BASE_URL; Adyen answers with the action that redirects the shopper to KNET.",
    "/payments/details": "Back from KNET, the server sends the URL-decoded redirectResult to Adyen to learn the "
    "resultCode to show the shopper.",
}

EVENT_WHY = {
    "order": (
        "The checkout form was sent: the order keeps a snapshot of the server-side cart and the shopper's "
        "details, with a unique merchant reference for Adyen.",
        "knet",
    ),
    "payment": ("What the server did with Adyen's answer to /payments.", "/payments"),
    "redirect": (
        "The shopper's browser goes to action.url (the KNET page), by GET or by an auto-submitted "
        "POST form, as the action says.",
        "redirects",
    ),
    "return": (
        "KNET sends the shopper back to returnUrl with redirectResult appended, by GET or POST; the "
        "order is found by the token in the URL, not the session.",
        "redirects",
    ),
    "result": ("The resultCode only decides what the shopper sees now; the webhook decides the order.", "result"),
    "review": ("A verified webhook that needs a person to look at the order; the status is unchanged.", "knet"),
}

FINAL_EMAIL_WHY = (
    "The state change that ended the order queued one email to the shopper in the same "
    "transaction (inform the shopper, as the KNET webhook table says)."
)


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
    steps = []
    steps += [_api_step(call, known) for call in _api_calls(order)]
    notifications = {
        n.id: n
        for n in db.session.execute(
            select(Notification).where(Notification.merchant_reference == order.reference).order_by(Notification.id)
        ).scalars()
    }
    received_events = set()  # older rows: the endpoint used to write a "received" event too
    events = db.session.execute(
        select(OrderEvent).where(OrderEvent.order_id == order.id).order_by(OrderEvent.id)
    ).scalars()
    for event in events:
        detail = event.detail if isinstance(event.detail, dict) else {}
        if detail.get("stage") == "received":
            received_events.add(detail.get("notification_id"))
        steps.append(_event_step(order, event, notifications, known))
    # Each stored notification is the step "webhook received": the receiver writes nothing else.
    for notification in notifications.values():
        if notification.id not in received_events:
            steps.append(_received_step(notification, known))

    transitions = [s for s in steps if s.kind == "transition"]
    emails = db.session.execute(select(Email).where(Email.order_id == order.id).order_by(Email.id)).scalars()
    for email in emails:
        steps.append(_email_step(email, transitions, known))

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


def _event_step(order, event, notifications, known):
    at = _utc(event.created_at)
    detail = event.detail if isinstance(event.detail, dict) else {}
    kind = event.kind
    title = redact.text(event.summary, known=known)
    facts, blocks, tone, duration = [], [], "", None
    if kind == "webhook":
        why, docs = _webhook_why(event, detail)
        notification = notifications.get(detail.get("notification_id"))
        facts.append(("Verification", "basic auth and HMAC signature verified (refused webhooks are never stored)"))
        if detail.get("replay"):
            facts.append(("Replay", "yes: queued again by a developer"))
        elif "duplicate" in detail:
            facts.append(
                ("Duplicate", "yes: acknowledged, no second effect" if detail["duplicate"] else "no: first delivery")
            )
        if notification is not None:
            facts.append(("Notification", f"#{notification.id}, {notification.status}"))
            if notification.note:
                facts.append(("State change it caused", redact.text(notification.note, known=known)))
            if notification.processed_at and detail.get("stage") == "processed":
                duration = int(
                    (_utc(notification.processed_at) - _utc(notification.received_at)).total_seconds() * 1000
                )
                facts.append(("Processed after", f"{duration} ms (stored, acknowledged, then applied)"))
            if detail.get("stage") == "received":
                blocks.append(
                    ("Webhook body (as received; signature masked)", redact.pretty(notification.raw_body, known=known))
                )
        tone = "ok"
    elif kind == "transition":
        why, docs = _transition_why(event.summary)
        tone = _transition_tone(event.summary)
        if detail.get("note"):
            facts.append(("Cause", redact.text(detail["note"], known=known)))
    else:
        why, doc_key = EVENT_WHY.get(kind, ("A step of the order.", "knet"))
        docs = _docs(doc_key)
        if kind == "redirect":
            facts += [("Method", detail.get("method")), ("URL", redact.text(detail.get("url") or "", known=known))]
            parameters = _redirect_parameters(order, detail.get("url"), detail.get("method"))
            if parameters:
                facts.append(("Parameters", redact.pretty(parameters, known=known)))
        elif kind == "return":
            facts += [("Method", detail.get("method"))]
            value = detail.get("redirectResult") or "none"
            # Stored already shortened ("X6XtfGC3!eyJ…"); a longer value is shortened here.
            facts += [("redirectResult", value if value.endswith("…") else redact.shorten(value))]
        elif kind == "result":
            code = detail.get("resultCode")
            facts += [("resultCode", code), ("pspReference", detail.get("pspReference"))]
            tone = {"Authorised": "ok", "Pending": "wait", "Received": "wait"}.get(code, "bad")
        elif detail:
            blocks.append(("Detail", redact.pretty(detail, known=known)))
    return Step(
        at=at,
        kind=kind,
        title=title,
        why=why,
        docs=docs,
        tone=tone,
        duration_ms=duration,
        facts=facts,
        blocks=blocks,
        order_key=(at, 1, event.id),
    )


def _redirect_parameters(order, url, method):
    """The query of a GET action.url, or the form fields (action.data) of a POST action."""
    if method == "POST":
        attempt = next((a for a in reversed(order.attempts) if a.action_url == url), None)
        return dict(attempt.action_data or {}) if attempt else None
    query = parse_qsl(urlsplit(url or "").query, keep_blank_values=True)
    return dict(query) or None


def _webhook_why(event, detail):
    if detail.get("replay"):
        return "A developer queued this stored webhook to be applied again; applying it twice is a no-op.", _docs(
            "handle"
        )
    if detail.get("stage") == "processed":
        return (
            "After the acknowledgement, the background worker applied the stored webhook to the order "
            "(AUTHORISATION true → paid, false → failed, OFFER_CLOSED → expired).",
            _docs("knet", "handle"),
        )
    if detail.get("duplicate"):
        return (
            "Adyen may deliver an event more than once; the stored twin is found by (pspReference, eventCode, "
            "success, originalReference), counted and acknowledged, with no second effect.",
            _docs("webhooks", "hmac"),
        )
    return (
        "Adyen reports the payment's outcome to the webhook endpoint; the shop checks basic auth and the HMAC "
        "signature, stores it, answers [accepted], and applies it afterwards.",
        _docs("webhooks", "hmac"),
    )


def _transition_why(summary):
    if "created → pending" in summary:
        return "The order is locked for payment (compare-and-set) just before /payments is called.", _docs("/payments")
    if "→ created" in summary:
        return "Adyen refused /payments, so no payment exists and the order may be paid for again.", _docs("errors")
    return (
        "Only a verified webhook moves an order to a final state, as the KNET webhook table says.",
        _docs("knet", "webhooks"),
    )


def _transition_tone(summary):
    target = summary.split(":", 1)[0].rsplit("→", 1)[-1].strip()
    if target == OrderStatus.PAID:
        return "ok"
    if target in (OrderStatus.FAILED, OrderStatus.EXPIRED):
        return "bad"
    return "wait"


def _received_step(notification, known):
    at = _utc(notification.received_at)
    not_applied = notification.status in ("ignored", "flagged")  # stored with why, never applied
    verdict = notification.note if not_applied else "queued for processing"
    title = (
        f"Webhook {notification.event_code} success={notification.success_text} "
        f"(pspReference {notification.psp_reference}) received: basic auth and HMAC signature verified; "
        f"first delivery, {verdict}"
    )
    facts = [
        ("Verification", "basic auth and HMAC signature verified (refused webhooks are never stored)"),
        ("Duplicate", "no: first delivery (deliveries again are shown as they come)"),
        ("Notification", f"#{notification.id}, {notification.status}"),
    ]
    if notification.note:
        label = "Not applied, because" if not_applied else "State change it caused"
        facts.append((label, redact.text(notification.note, known=known)))
    return Step(
        at=at,
        kind="webhook",
        title=redact.text(title, known=known),
        why="Adyen reports the payment's outcome to the webhook endpoint; the shop checks basic auth and the "
        "HMAC signature, stores it, answers [accepted], and applies it afterwards.",
        docs=_docs("webhooks", "hmac"),
        tone="bad" if notification.status == "flagged" else "ok",
        facts=facts,
        blocks=[("Webhook body (as received; signature masked)", redact.pretty(notification.raw_body, known=known))],
        # Before the events of the same moment: it was stored before anything was done with it.
        order_key=(at, 0, notification.id),
    )


def _email_step(email, transitions, known):
    at = _utc(email.created_at)
    # The email is written in the transaction of the state change that caused it: show it right after.
    cause = min(
        (t for t in transitions if abs((t.at - at).total_seconds()) < 5 and t.tone in ("ok", "bad")),
        key=lambda t: abs((t.at - at).total_seconds()),
        default=None,
    )
    key = (cause.order_key[0], cause.order_key[1], cause.order_key[2], 1) if cause else (at, 2, email.id)
    if cause is not None:
        # Same transaction, so the same moment; the row's own clock reading may be a hair earlier.
        at = max(at, cause.at)
    personal = redact.shows_personal_data()
    return Step(
        at=at,
        kind="email",
        title=f"Email to the shopper: {redact.text(email.subject, known=known)}",
        why=FINAL_EMAIL_WHY,
        docs=_docs("knet"),
        tone="",
        facts=[
            ("To", email.to if personal else redact.mask_email(email.to)),
            ("Status", email.status + (" (no MAIL_SERVER: kept in the outbox)" if email.status == "kept" else "")),
        ],
        blocks=[("Body", redact.text(email.body, known=known))],
        order_key=key,
    )
