"""Reading a Standard webhook body: JSON in, NotificationRequestItems out, or `Malformed`.

Docs: https://docs.adyen.com/development-resources/webhooks
Shape: https://docs.adyen.com/api-explorer/Webhooks/1/post/AUTHORISATION

Only a body that is not a notification at all is `Malformed` (the receiver answers 400): not JSON,
not an object, no non-empty notificationItems array, or an item that is not a
NotificationRequestItem object (so there is nothing to verify). One exception: the Webhooks spec's
"other webhooks" (Direct Debit notices of change: {"type", "environment", "data", …}, no
notificationItems) are read as one item that is never applied; Adyen signs those in the
HmacSignature header over the whole body, not in the item. Everything inside an item is read
leniently, because Adyen's rule is to acknowledge every notification whose signature matches:
a field the shop cannot use (a wrong type, an empty pspReference or eventCode, a `success` other
than "true"/"false", an amount that is not an int64, a currency that is not 3 letters, a NUL in
an identifier) is listed in `Item.problems`, and the item is then stored as ignored, never applied.
The signature is checked by the caller on the original item dicts (`Item.raw`).

What is stored: the raw body as received (valid JSON never holds a raw NUL: it is escaped as
\\u0000, which a text column keeps as six characters). The columns get each field as text; a value
that is not a string is stored as its JSON text; NUL and lone surrogates (which PostgreSQL's text,
and UTF-8, cannot hold) become U+FFFD. No length limit but the body's (the receiver's
MAX_BODY_BYTES): Adyen's Webhooks spec sets no maxLength on these strings.
"""

import hashlib
import json
import re
from dataclasses import dataclass

INT64 = range(-(2**63), 2**63)  # amount.value is an int64 in Adyen's Webhooks spec
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")  # NUL, and surrogates (only lone ones survive json)


class Malformed(ValueError):
    """The body is not a notification at all. The message is ours and never echoes the input."""


@dataclass(frozen=True)
class Item:
    """One NotificationRequestItem as read. `raw` is the item as sent, for the HMAC check; the text
    fields are storable text, whatever was sent; `problems` says which fields the shop cannot use."""

    psp_reference: str
    original_reference: str  # "" when absent or null, as in the signature
    merchant_account: str
    merchant_reference: str
    event_code: str
    success: bool | None  # None when it is not "true" or "false"
    amount_value: int | None
    currency: str | None
    reason: str | None
    event_date: str | None
    raw: dict
    event_key: str
    problems: tuple = ()
    webhook_type: str | None = None  # an "other webhook": its `type`; None for a Standard notification

    def describe(self):
        """Safe for logs and the timeline: references and outcome only, never additionalData."""
        return f"{self.event_code} success={self.success_text} (pspReference {self.psp_reference})"

    @property
    def success_text(self):
        return {True: "true", False: "false"}.get(self.success, "?")


@dataclass(frozen=True)
class Envelope:
    live: object  # as sent: the string "true" or "false" from Adyen, anything from anyone else
    items: list
    standard: bool = True  # False: an "other webhook", signed in the HmacSignature header
    environment: object = None  # an other webhook's "test" or "live", as sent


def parse(body):
    """bytes -> Envelope, or raise Malformed."""
    try:
        data = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise Malformed("the body is not JSON") from exc
    if not isinstance(data, dict):
        raise Malformed("the body is not a JSON object")
    if "notificationItems" not in data and isinstance(data.get("type"), str):
        return _other_webhook(data)
    wrappers = data.get("notificationItems")
    if not isinstance(wrappers, list) or not wrappers:
        raise Malformed("'notificationItems' must be a non-empty array")
    items = []
    for position, wrapper in enumerate(wrappers, start=1):
        raw = wrapper.get("NotificationRequestItem") if isinstance(wrapper, dict) else None
        if not isinstance(raw, dict):
            raise Malformed(f"item {position} has no NotificationRequestItem object")
        try:
            items.append(parse_item(raw))
        except RecursionError as exc:  # a value nested so deep that even its text cannot be made
            raise Malformed(f"item {position} is nested too deeply") from exc
    return Envelope(live=data.get("live"), items=items)


def parse_item(raw):
    """One NotificationRequestItem dict -> Item. Never raises for what JSON can hold."""
    problems = []

    def text(field, required=True, identifier=True):
        value = raw.get(field)
        if value is None:
            if required:
                problems.append(f"{field} is missing")
            return "" if required or identifier else None
        if not isinstance(value, str):
            problems.append(f"{field} is not a string")
            value = json.dumps(value, ensure_ascii=False)
        elif identifier and UNSTORABLE.search(value):
            problems.append(f"{field} holds a NUL or an invalid character")
        return UNSTORABLE.sub("\ufffd", value)

    psp_reference = text("pspReference")
    original_reference = text("originalReference", required=False)
    merchant_account = text("merchantAccountCode")
    merchant_reference = text("merchantReference")
    event_code = text("eventCode")
    # Display only: a NUL there is replaced, and the item is still applied.
    event_date = text("eventDate", required=False, identifier=False)
    reason = text("reason", required=False, identifier=False)
    for field, value in (("pspReference", psp_reference), ("eventCode", event_code)):
        if value == "" and isinstance(raw.get(field), str):
            problems.append(f"{field} is empty")

    success = raw.get("success")
    success = {"true": True, "false": False}.get(success) if isinstance(success, str) else None
    if success is None:
        problems.append('success is not "true" or "false"')

    amount = raw.get("amount")
    value = currency = None
    if isinstance(amount, dict):
        value, currency = amount.get("value"), amount.get("currency")
    else:
        problems.append("amount is not an object")
    # bool is an int in Python; a JSON true is not an amount.
    if not isinstance(value, int) or isinstance(value, bool) or value not in INT64:
        if isinstance(amount, dict):
            problems.append("amount.value is not an int64")
        value = None
    if not isinstance(currency, str) or len(currency) != 3 or not currency.isascii() or not currency.isalpha():
        if isinstance(amount, dict):
            problems.append("amount.currency is not a 3-letter code")
        currency = None

    return Item(
        psp_reference=psp_reference,
        original_reference=original_reference,
        merchant_account=merchant_account,
        merchant_reference=merchant_reference,
        event_code=event_code,
        success=success,
        amount_value=value,
        currency=currency,
        reason=reason,
        event_date=event_date,
        raw=raw,
        event_key=event_key(raw),
        problems=tuple(problems),
    )


def _other_webhook(data):
    """An "other webhook" of the spec ({"type", "environment", "data"}): one item, never applied."""
    details = data.get("data") if isinstance(data.get("data"), dict) else {}
    psp_reference = details.get("pspReference")
    shown = UNSTORABLE.sub("\ufffd", psp_reference if isinstance(psp_reference, str) else "")
    try:
        key = _digest(["webhook", data])  # no event fields to go by: a delivery again is the same body
    except RecursionError as exc:
        raise Malformed("the body is nested too deeply") from exc
    item = Item(
        psp_reference=shown,
        original_reference="",
        merchant_account="",
        merchant_reference="",
        event_code=UNSTORABLE.sub("\ufffd", data["type"]),
        success=None,
        amount_value=None,
        currency=None,
        reason=None,
        event_date=None,
        raw=data,
        event_key=key,
        webhook_type=data["type"],
    )
    return Envelope(live=None, items=[item], standard=False, environment=data.get("environment"))


def event_key(raw):
    """What makes two deliveries the same event: a SHA-256 (hex) of (pspReference, eventCode,
    success, originalReference) as sent, with a null or absent originalReference as "", as in the
    signature. The four are encoded as a JSON array, so no value can pass for a separator, and a
    number never passes for the string of its digits. It carries the unique constraint, so that
    values of any length can be deduplicated (a btree index row holds about 2.7 KB on PostgreSQL).
    migrations/versions/…_12a0c0de0001_… computes it for rows stored before: keep the two alike."""
    original = raw.get("originalReference")
    return _digest(
        [raw.get("pspReference"), raw.get("eventCode"), raw.get("success"), "" if original is None else original]
    )


def _digest(value):
    encoded = json.dumps(value, ensure_ascii=True, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(encoded.encode("ascii")).hexdigest()


def _reject_constant(name):
    # json accepts NaN and Infinity by default; Adyen never sends them.
    raise ValueError(f"{name} is not valid JSON")
