"""HMAC signatures of Standard webhook items, exactly as Adyen computes them.

Docs: https://docs.adyen.com/development-resources/webhooks/secure-webhooks/verify-hmac-signatures
The eight fields are joined by ':' with no escaping, absent fields are '', the hex key is
decoded to bytes, HMAC-SHA256 is Base64-encoded, and the comparison runs in constant time.
Webhooks that are not Standard notifications (the spec's "other webhooks") carry theirs in the
HmacSignature header instead: the same HMAC over the raw body (`is_valid_payload`).
"""

import base64
import binascii
import hashlib
import hmac

SIGNED_FIELDS = (
    "pspReference",
    "originalReference",
    "merchantAccountCode",
    "merchantReference",
    "amount.value",
    "amount.currency",
    "eventCode",
    "success",
)


def signing_string(item):
    """The text Adyen signs for one NotificationRequestItem."""
    amount = item.get("amount") or {}
    values = {
        "amount.value": amount.get("value"),
        "amount.currency": amount.get("currency"),
    }
    parts = []
    for field in SIGNED_FIELDS:
        value = values[field] if field.startswith("amount.") else item.get(field)
        parts.append("" if value is None else str(value))
    return ":".join(parts)


def sign(item, hex_key):
    """The Base64 hmacSignature of an item under a hex key."""
    key = binascii.a2b_hex(hex_key)
    digest = hmac.new(key, signing_string(item).encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def is_valid(item, hex_keys):
    """True when the item's hmacSignature matches one of the keys (current, then previous).

    Never raises: a missing, empty or malformed signature is simply not valid.
    """
    additional = item.get("additionalData")
    received = additional.get("hmacSignature") if isinstance(additional, dict) else None
    return _matches(received, hex_keys, lambda key: sign(item, key))


def sign_payload(body, hex_key):
    """The Base64 HmacSignature header of a raw body (bytes) under a hex key."""
    digest = hmac.new(binascii.a2b_hex(hex_key), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def is_valid_payload(body, received, hex_keys):
    """True when `received` (the HmacSignature header) matches the raw body under one of the keys.
    Never raises."""
    return _matches(received, hex_keys, lambda key: sign_payload(body, key))


def _matches(received, hex_keys, sign_with):
    """Constant-time comparison of a received signature with the one each key gives."""
    if not isinstance(received, str) or not received:
        return False
    for key in hex_keys:
        if not key:
            continue
        try:
            expected = sign_with(key)
        except (binascii.Error, ValueError, TypeError, RecursionError):  # RecursionError: absurdly nested values
            continue
        if hmac.compare_digest(expected.encode("ascii"), received.encode("utf-8", "replace")):
            return True
    return False
