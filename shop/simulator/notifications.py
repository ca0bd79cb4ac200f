"""The Standard webhook items the simulated Adyen queues for a payment (sent by `sender`).

Shape: https://docs.adyen.com/development-resources/webhooks/webhook-types (JSON, one
NotificationRequestItem per request) and Webhooks-v1 `NotificationRequestItem`. KNET events:
AUTHORISATION true/false and OFFER_CLOSED true (https://docs.adyen.com/payment-methods/knet/api-only);
for modifications REFUND, CANCEL_OR_REFUND, CANCELLATION and REFUND_FAILED, with originalReference;
and what the Customer Area sends by itself: its test AUTHORISATION and REPORT_AVAILABLE.
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


# The event each modification's outcome is told by (Webhooks-v1 eventCode descriptions).
MODIFICATION_EVENTS = {"refund": "REFUND", "reversal": "CANCEL_OR_REFUND", "cancel": "CANCELLATION"}


def modification_item(payment, modification, event_code, success, reason, happened_at):
    """An unsigned item for a refund, reversal or cancel (or the REFUND_FAILED after one), as in
    Webhooks-v1's REFUND / CANCEL_OR_REFUND / CANCELLATION / REFUND_FAILED examples: pspReference is
    the modification's, originalReference the payment's, merchantReference the modification's own
    reference (the payment's when the request had none), amount the modification's."""
    item = build_item(payment, event_code, success, reason, happened_at)
    item.update(
        amount={"currency": modification.currency, "value": modification.amount_value},
        merchantReference=modification.merchant_reference or payment.merchant_reference,
        originalReference=payment.psp_reference,
        pspReference=modification.psp_reference,
    )
    if event_code == "CANCEL_OR_REFUND":
        # What Adyen did: the simulator's payments are captured at once, so a reversal refunds.
        item["additionalData"]["modification.action"] = "refund"
    return item


def queue(payment, event_code, success, reason, delay_seconds, happened_at=None):
    """Add a payment's delivery to the session (the caller commits, with the change that caused it)."""
    item = build_item(payment, event_code, success, reason, happened_at or utcnow())
    return add_delivery(item, delay_seconds, payment_id=payment.id)


def add_delivery(item, delay_seconds, payment_id=None):
    """Add the delivery of one item to the session, `delay_seconds` from now (the caller commits)."""
    now = utcnow()
    delivery = SimWebhookDelivery(
        payment_id=payment_id,
        event_code=item["eventCode"],
        psp_reference=item["pspReference"],
        merchant_reference=item["merchantReference"],
        success=item["success"],
        payload=envelope(item),
        target_url=current_app.config["SIMULATOR_WEBHOOK_URL"],
        due_at=now + timedelta(seconds=max(0.0, float(delay_seconds))),
        history=[],
        created_at=now,
        queued_at=now,
    )
    db.session.add(delivery)
    faults.on_webhook_queued(delivery)  # injected webhook faults: delay, duplicate, out of order
    return delivery


# What the Customer Area sends by itself --------------------------------------------------------------


def customer_area_test_item(merchant_account, happened_at):
    """The AUTHORISATION the Customer Area's "Test configuration" button sends: references of no
    real payment (pspReference test_AUTHORISATION_1, merchantReference testMerchantRef1), a card
    payment of EUR 101.00 as integrators have logged it. A shop acknowledges it and changes nothing."""
    return {
        "additionalData": {"cardSummary": "7777"},
        "amount": {"currency": "EUR", "value": 10100},
        "eventCode": "AUTHORISATION",
        "eventDate": event_date(happened_at),
        "merchantAccountCode": merchant_account,
        "merchantReference": "testMerchantRef1",
        "operations": list(AUTHORISED_OPERATIONS),
        "paymentMethod": "visa",
        "pspReference": "test_AUTHORISATION_1",
        "reason": "1234:7777:12/2012",
        "success": "true",
    }


def report_available_item(merchant_account, file_name, download_url, happened_at):
    """REPORT_AVAILABLE, as Webhooks-v1's example: the report's file name as pspReference, its
    download URL as reason, amount 0, no payment behind it."""
    return {
        "additionalData": {},
        "amount": {"currency": "EUR", "value": 0},
        "eventCode": "REPORT_AVAILABLE",
        "eventDate": event_date(happened_at),
        "merchantAccountCode": merchant_account,
        "merchantReference": "",
        "pspReference": file_name,
        "reason": download_url,
        "success": "true",
    }
