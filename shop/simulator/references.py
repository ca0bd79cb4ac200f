"""The identifiers the simulated Adyen hands out: pspReferences, page tokens and redirect results."""

import base64
import hashlib
import hmac
import json
import secrets
import string
from urllib.parse import quote, urlsplit, urlunsplit

PSP_ALPHABET = string.ascii_uppercase + string.digits

# Every real redirectResult seen starts with this marker and a "!" (docs example "X6XtfGC3!Y...").
REDIRECT_RESULT_PREFIX = "X6XtfGC3!"


def new_psp_reference():
    """Adyen's 16-character uppercase alphanumeric reference, e.g. QFQTPCQ8HXSKGK82."""
    return "".join(secrets.choice(PSP_ALPHABET) for _ in range(16))


def new_page_token():
    return secrets.token_urlsafe(24)


def page_signature(page_token, secret_key):
    """The `sig` field of the POST action data, so that only our own /payments answer opens the page."""
    digest = hmac.new(secret_key.encode("utf-8"), b"knet-page:" + page_token.encode("ascii"), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()[:18]).decode("ascii")


def new_redirect_result(psp_reference):
    """An opaque value like Adyen's: the marker, then standard Base64 of JSON and random bytes.

    Every value contains `+` and `/` (and often `=` padding) on purpose: a shop that decodes the
    value twice, re-encodes it, or turns `+` into a space sends a value that no longer resolves.
    """
    data = json.dumps({"redirectPaymentData": {"pspReference": psp_reference, "paymentMethod": "knet"}})
    while True:
        tail = secrets.token_bytes(secrets.choice((23, 24, 25)))
        encoded = base64.b64encode(data.encode("ascii") + tail).decode("ascii")
        if "+" in encoded and "/" in encoded:
            return REDIRECT_RESULT_PREFIX + encoded


def append_redirect_result(return_url, redirect_result):
    """returnUrl with `redirectResult=<value, percent-encoded once>` added to its own query."""
    parts = urlsplit(return_url)
    pair = "redirectResult=" + quote(redirect_result, safe="")
    query = f"{parts.query}&{pair}" if parts.query else pair
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
