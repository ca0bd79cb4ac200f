"""Reading a Standard webhook body: JSON in, checked NotificationRequestItems out, or `Malformed`.

Docs: https://docs.adyen.com/development-resources/webhooks
Shape: https://docs.adyen.com/api-explorer/Webhooks/1/post/AUTHORISATION

Nothing here trusts the body: every field is type-checked and bounded, so a hostile or broken
body gives a 400, never a 500. The signature is checked by the caller on the original item dicts.
"""

import json
from dataclasses import dataclass

# Column widths in shop.models.Notification; PostgreSQL refuses longer values, so refuse them here.
MAX_LENGTHS = {
    "pspReference": 32,
    "originalReference": 32,
    "merchantAccountCode": 80,
    "merchantReference": 80,
    "eventCode": 64,
    "eventDate": 40,
}
# amount.value is an int64 at Adyen, but the column is a 32-bit INTEGER on PostgreSQL.
# 2 147 483 647 fils is over two million KWD: a larger value cannot be a real order of this shop.
MAX_AMOUNT = 2**31 - 1
MAX_ITEMS = 6  # JSON webhooks carry one item; SOAP carried up to six.
MAX_REASON = 2000


class Malformed(ValueError):
    """The body is not a Standard webhook. The message is ours and never echoes the input."""


@dataclass(frozen=True)
class Item:
    """One NotificationRequestItem, checked. `raw` is the item as sent, for the HMAC check."""

    psp_reference: str
    original_reference: str  # "" when absent or null, as in the signature
    merchant_account: str
    merchant_reference: str
    event_code: str
    success: bool
    amount_value: int
    currency: str
    reason: str | None
    event_date: str | None
    raw: dict

    def key(self):
        """What makes two deliveries the same event (the unique constraint on notifications)."""
        return (self.psp_reference, self.event_code, self.success, self.original_reference)

    def describe(self):
        """Safe for logs and the timeline: references and outcome only, never additionalData."""
        return f"{self.event_code} success={'true' if self.success else 'false'} (pspReference {self.psp_reference})"


@dataclass(frozen=True)
class Envelope:
    live: str  # "true" | "false", exactly as sent
    items: list


def parse(body):
    """bytes -> Envelope, or raise Malformed."""
    try:
        data = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise Malformed("the body is not JSON") from exc
    if not isinstance(data, dict):
        raise Malformed("the body is not a JSON object")
    live = data.get("live")
    if live not in ("true", "false"):
        raise Malformed('\'live\' must be the string "true" or "false"')
    wrappers = data.get("notificationItems")
    if not isinstance(wrappers, list) or not wrappers:
        raise Malformed("'notificationItems' must be a non-empty array")
    if len(wrappers) > MAX_ITEMS:
        raise Malformed(f"at most {MAX_ITEMS} notificationItems are accepted")
    items = []
    for position, wrapper in enumerate(wrappers, start=1):
        raw = wrapper.get("NotificationRequestItem") if isinstance(wrapper, dict) else None
        if not isinstance(raw, dict):
            raise Malformed(f"item {position} has no NotificationRequestItem object")
        items.append(parse_item(raw, position))
    return Envelope(live=live, items=items)


def parse_item(raw, position=1):
    """One NotificationRequestItem dict -> Item, or raise Malformed."""

    def text(field, required=True, allow_empty=False):
        value = raw.get(field)
        if value is None and not required:
            return None
        if not isinstance(value, str):
            raise Malformed(f"item {position}: '{field}' must be a string")
        if not value and not allow_empty:
            raise Malformed(f"item {position}: '{field}' must not be empty")
        if len(value) > MAX_LENGTHS.get(field, MAX_REASON):
            raise Malformed(f"item {position}: '{field}' is too long")
        if "\x00" in value:  # PostgreSQL text cannot hold NUL; no Adyen field has one
            raise Malformed(f"item {position}: '{field}' contains a NUL character")
        return value

    psp_reference = text("pspReference")
    original_reference = text("originalReference", required=False, allow_empty=True) or ""
    merchant_account = text("merchantAccountCode")
    merchant_reference = text("merchantReference", allow_empty=True)
    event_code = text("eventCode")
    event_date = text("eventDate", required=False, allow_empty=True)
    reason = text("reason", required=False, allow_empty=True)

    success = raw.get("success")
    if success not in ("true", "false"):
        raise Malformed(f'item {position}: \'success\' must be the string "true" or "false"')

    amount = raw.get("amount")
    if not isinstance(amount, dict):
        raise Malformed(f"item {position}: 'amount' must be an object")
    value = amount.get("value")
    # bool is an int in Python; a JSON true is not an amount.
    if not isinstance(value, int) or isinstance(value, bool):
        raise Malformed(f"item {position}: 'amount.value' must be an integer (minor units)")
    if not 0 <= value <= MAX_AMOUNT:
        raise Malformed(f"item {position}: 'amount.value' is out of range")
    currency = amount.get("currency")
    if not isinstance(currency, str) or len(currency) != 3 or not currency.isascii() or not currency.isalpha():
        raise Malformed(f"item {position}: 'amount.currency' must be a 3-letter code")

    additional = raw.get("additionalData")
    if additional is not None and not isinstance(additional, dict):
        raise Malformed(f"item {position}: 'additionalData' must be an object")

    return Item(
        psp_reference=psp_reference,
        original_reference=original_reference,
        merchant_account=merchant_account,
        merchant_reference=merchant_reference,
        event_code=event_code,
        success=success == "true",
        amount_value=value,
        currency=currency,
        reason=reason,
        event_date=event_date,
        raw=raw,
    )


def _reject_constant(name):
    # json accepts NaN and Infinity by default; Adyen never sends them.
    raise ValueError(f"{name} is not valid JSON")
