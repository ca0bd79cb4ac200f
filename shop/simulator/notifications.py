"""The Standard webhook items the simulated Adyen queues for a payment (sent by `sender`).

Shape: https://docs.adyen.com/development-resources/webhooks/webhook-types (JSON, one
NotificationRequestItem per request) and Webhooks-v1 `NotificationRequestItem`. KNET events:
AUTHORISATION true/false and OFFER_CLOSED true (https://docs.adyen.com/payment-methods/knet/api-only).
"""

import copy
from datetime import timedelta, timezone

from flask import current_app

from shop.adyen.signature import sign
from shop.db import db
from shop.simulator import faults
from shop.simulator.models import SimWebhookDelivery, utcnow

# eventDate carries an offset (yyyy-MM-DDThh:mm:ssTZD); Kuwait time, which has no daylight saving.
KUWAIT_TIME = timezone(timedelta(hours=3))


def event_date(moment):
    return moment.astimezone(KUWAIT_TIME).isoformat(timespec="seconds")


def build_item(payment, event_code, success, reason, happened_at):
    """An unsigned NotificationRequestItem for a simulator payment."""
    return {
        "additionalData": {"paymentMethodVariant": payment.payment_method_type},
        "amount": {"currency": payment.currency, "value": payment.amount_value},
        "eventCode": event_code,
        "eventDate": event_date(happened_at),
        "merchantAccountCode": payment.merchant_account,
        "merchantReference": payment.merchant_reference,
        "paymentMethod": payment.payment_method_type,
        "pspReference": payment.psp_reference,
        "reason": reason,
        "success": "true" if success else "false",
    }


def envelope(item):
    """The JSON body Adyen posts: test platform, one item."""
    return {"live": "false", "notificationItems": [{"NotificationRequestItem": item}]}


def signed(payload, hex_key):
    """A copy of the payload with each item's additionalData.hmacSignature set."""
    body = copy.deepcopy(payload)
    for wrapper in body.get("notificationItems", []):
        item = wrapper["NotificationRequestItem"]
        item.setdefault("additionalData", {})["hmacSignature"] = sign(item, hex_key)
    return body


def queue(payment, event_code, success, reason, delay_seconds, happened_at=None):
    """Add a delivery to the session (the caller commits, with the change that caused it)."""
    now = utcnow()
    due_at = now + timedelta(seconds=max(0.0, float(delay_seconds)))
    item = build_item(payment, event_code, success, reason, happened_at or now)
    delivery = SimWebhookDelivery(
        payment_id=payment.id,
        event_code=event_code,
        psp_reference=payment.psp_reference,
        merchant_reference=payment.merchant_reference,
        success=item["success"],
        payload=envelope(item),
        target_url=current_app.config["SIMULATOR_WEBHOOK_URL"],
        due_at=due_at,
        history=[],
        created_at=now,
        queued_at=now,
    )
    db.session.add(delivery)
    faults.on_webhook_queued(delivery)  # injected webhook faults: delay, duplicate, out of order
    return delivery
