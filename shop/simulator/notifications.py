"""The Standard webhook items the simulated Adyen queues for a payment (sent by `sender`).

Shape: https://docs.adyen.com/development-resources/webhooks/webhook-types (JSON, one
NotificationRequestItem per request) and Webhooks-v1 `NotificationRequestItem`. KNET events:
AUTHORISATION true/false and OFFER_CLOSED true (https://docs.adyen.com/payment-methods/knet/api-only).
"""

import copy
from datetime import timedelta
from zoneinfo import ZoneInfo

from flask import current_app

from shop.adyen.signature import sign
from shop.db import db
from shop.simulator import faults
from shop.simulator.models import SimWebhookDelivery, utcnow

# eventDate carries an offset (yyyy-MM-DDThh:mm:ssTZD). Adyen's are in Amsterdam time, the
# offset +01:00 in winter and +02:00 in summer (its examples: "2021-01-01T01:00:00+01:00"), not
# the shopper's or the merchant's zone.
AMSTERDAM = ZoneInfo("Europe/Amsterdam")
# What may be done with an authorised payment next, as in Adyen's AUTHORISATION example (an
# "experimental field", its docs say: shops should not rely on it).
AUTHORISED_OPERATIONS = ["CANCEL", "CAPTURE", "REFUND"]


def event_date(moment):
    return moment.astimezone(AMSTERDAM).isoformat(timespec="seconds")


def build_item(payment, event_code, success, reason, happened_at):
    """An unsigned NotificationRequestItem for a simulator payment.

    On a successful AUTHORISATION `reason` is the string "null", as in Adyen's examples (a card's
    would hold its auth code; KNET's has none); on a failure, the refusal reason.
    """
    item = {
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
    if event_code == "AUTHORISATION" and success:
        item["operations"] = list(AUTHORISED_OPERATIONS)
        item["reason"] = reason or "null"
    return item


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
