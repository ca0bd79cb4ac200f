"""The identifiers the simulated Adyen hands out: pspReferences, page tokens and redirect results."""

import base64
import hashlib
import hmac
import json
import secrets
import string
from urllib.parse import quote, urlsplit, urlunsplit

PSP_ALPHABET = string.ascii_uppercase + string.digits

# Every real redirectResult seen starts with this marker and a "!" (the docs' example "X6XtfGC3!Y...",
# Adyen/adyen-android#501, and a merchant's test fixture).
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


def new_redirect_result(payment, secret_key):
    """A value shaped like Adyen's: the marker, standard Base64 of a JSON document, then the Base64
    of an HMAC over that document.

    Adyen's (one decoded in full: Adyen/adyen-android#501 and a merchant's test fixture) carries the
    payment's data, amount, merchant account, references and the return URL among them, so it is
    well over 1,000 characters, and more for a long returnUrl (the spec allows 20,000). Every value
    contains `+`, `/` and `=`: a shop that decodes it twice, re-encodes it, turns `+` into a space or
    cuts it short sends a value that no longer resolves.
    """
    while True:
        document = _redirect_document(
            payment, knet_payment_id="".join(secrets.choice(string.digits) for _ in range(18))
        )
        encoded = base64.b64encode(document).decode("ascii")
        digest = hmac.new(secret_key.encode("utf-8"), b"redirect-result:" + document, hashlib.sha256).digest()
        value = REDIRECT_RESULT_PREFIX + encoded + base64.b64encode(digest).decode("ascii")
        if "+" in value and "/" in value:
            return value


def redirect_result_hash(redirect_result):
    """The SHA-256 (hex) the simulator finds a redirectResult by (a 20,000-character value fits no index)."""
    return hashlib.sha256(redirect_result.encode("utf-8")).hexdigest()


def _redirect_document(payment, knet_payment_id):
    """The JSON inside a redirectResult, with the fields and key order of Adyen's, as Java writes it
    (no spaces, `/` escaped as `\\/`)."""
    account_digest = hashlib.sha256(payment.merchant_account.encode("utf-8")).digest()
    data = {
        "redirectPaymentData": {
            "acquirerAccountId": int.from_bytes(account_digest[:3], "big"),
            "additionalData": {
                "requestAmount": str(payment.amount_value),
                "requestCurrencyCode": payment.currency,
                "requestAcquirerReference": knet_payment_id,
            },
            "amount": {"currency": payment.currency, "value": payment.amount_value},
            "apiVersion": 71,
            "brandCode": payment.payment_method_type,
            "merchantAccount": payment.merchant_account,
            "merchantReference": payment.merchant_reference,
            "originalPspReference": payment.psp_reference,
            "requestAdditionalData": {
                "merchantIntegration.type": "CHECKOUT_GENERIC",
                "merchantIntegration.version": "71",
            },
            "returnUrl": payment.return_url,
            "selectedBrand": payment.payment_method_type,
            "skinCode": "pub.v2.{}.{}".format(
                int.from_bytes(account_digest[3:10], "big") % 10**16,
                base64.urlsafe_b64encode(account_digest).decode("ascii").rstrip("="),
            ),
        },
        # What KNET's gateway sends back with the shopper (its IDs and the merchant's track ID); never
        # the outcome, which only /payments/details tells.
        "returnUrlParams": {
            "paymentid": knet_payment_id,
            "tranid": knet_payment_id[2:],
            "ref": knet_payment_id[-12:],
            "trackid": payment.merchant_reference,
            "udf1": payment.psp_reference,
            "udf2": "",
            "udf3": "",
            "udf4": "",
            "udf5": "",
        },
    }
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).replace("/", "\\/").encode("utf-8")


def append_redirect_result(return_url, redirect_result):
    """returnUrl with `redirectResult=<value, percent-encoded once>` added to its own query."""
    parts = urlsplit(return_url)
    pair = "redirectResult=" + quote(redirect_result, safe="")
    query = f"{parts.query}&{pair}" if parts.query else pair
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
