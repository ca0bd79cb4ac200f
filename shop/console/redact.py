"""One place that decides what the developer console may show: `redact()`.

Everything the console displays from the store (API requests and responses, webhook bodies, email
bodies, event details) passes through here:
- values of keys named like a credential (apiKey, hmacSignature, Authorization, password, PIN,
  card number, …) become "***", at any depth;
- outside simulator mode, shopper personal data (name, email, phone) is masked, keeping just
  enough to recognise it ("F***", "f***@example.com", "+965****0000");
- redirectResult / payload values are shortened (they are long one-time tokens);
- any configured secret (API key, HMAC keys, passwords, SECRET_KEY) that appears inside any text
  is replaced, as a last line of defence.
"""

import json
import re

from flask import current_app

from shop.config import SECRET_SETTINGS

MASK = "***"

# Normalised key names (lower case, letters and digits only) whose values are never shown.
_SECRET_KEYS = {"pin", "cvc", "cvv", "securitycode", "authorization", "sig", "signature", "secret", "token"}
_SECRET_SUFFIXES = ("apikey", "hmacsignature", "hmackey", "password", "passwd", "cardnumber", "secretkey")

# Shopper personal data, masked outside simulator mode.
_NAME_KEYS = {"firstname", "lastname", "shopperfirstname", "shopperlastname", "holdername", "shoppername"}
_EMAIL_KEYS = {"shopperemail", "email", "to"}
_PHONE_KEYS = {"telephonenumber", "phone", "shopperphone", "phonenumber"}

_SHORTENED_KEYS = {"redirectresult", "payload"}
SHORT_LENGTH = 12

_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")


def _norm(key):
    return re.sub(r"[^a-z0-9]", "", str(key).lower())


def is_secret_key(key):
    norm = _norm(key)
    return norm in _SECRET_KEYS or norm.endswith(_SECRET_SUFFIXES)


def shows_personal_data():
    """Shopper data is shown as it is only in simulator mode (it is made-up data there)."""
    return current_app.config.get("ADYEN_ENVIRONMENT") == "simulator"


def mask_name(value):
    if not isinstance(value, str) or not value:
        return value
    return " ".join(part[:1] + MASK for part in value.split())


def mask_email(value):
    if not isinstance(value, str) or "@" not in value:
        return mask_name(value) if isinstance(value, str) else value
    local, _, domain = value.rpartition("@")
    return f"{local[:1]}{MASK}@{domain}"


def mask_phone(value):
    if not isinstance(value, str) or len(value) < 6:
        return MASK if value else value
    return value[:4] + "*" * max(0, len(value) - 8) + value[-4:]


def shorten(value):
    if isinstance(value, str) and len(value) > SHORT_LENGTH:
        return f"{value[:SHORT_LENGTH]}… ({len(value)} characters)"
    return value


def secret_values():
    """The configured secrets long enough to search for in text."""
    config = current_app.config
    values = []
    for name in SECRET_SETTINGS:
        value = config.get(name)
        if isinstance(value, str) and len(value) >= 6:
            values.append(value)
    return values


def scrub(text):
    """Replace any configured secret found inside `text` (and its lower/upper case forms)."""
    if not isinstance(text, str) or not text:
        return text
    for value in secret_values():
        for form in {value, value.lower(), value.upper()}:
            if form in text:
                text = text.replace(form, MASK)
    return text


def redact(value, personal=None, known=()):
    """A copy of `value` (dict, list, str, number) that is safe to show in the console.

    `personal`: show shopper data as is (default: only in simulator mode).
    `known`: shopper values (name, email, phone) to mask inside free text, e.g. an email body.
    """
    if personal is None:
        personal = shows_personal_data()
    return _redact(value, personal, [k for k in known if isinstance(k, str) and len(k) >= 2])


def _redact(value, personal, known, key=None):
    norm = _norm(key) if key is not None else ""
    if key is not None and is_secret_key(key):
        return MASK if value not in (None, "") else value
    if isinstance(value, dict):
        if norm == "shoppername" and not personal:
            return {k: mask_name(v) if isinstance(v, str) else _redact(v, personal, known, k) for k, v in value.items()}
        return {k: _redact(v, personal, known, k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact(v, personal, known) for v in value]
    if not isinstance(value, str):
        return value
    if norm in _SHORTENED_KEYS:
        return shorten(value)
    if not personal:
        if norm in _NAME_KEYS:
            return mask_name(value)
        if norm in _EMAIL_KEYS:
            return mask_email(value)
        if norm in _PHONE_KEYS:
            return mask_phone(value)
    return text(value, personal, known)


def text(value, personal=None, known=()):
    """Free text: secrets scrubbed; outside simulator mode, known shopper values and emails masked."""
    if not isinstance(value, str):
        return value
    if personal is None:
        personal = shows_personal_data()
    value = scrub(value)
    if not personal:
        for item in sorted(known, key=len, reverse=True):
            if item and item in value:
                value = value.replace(item, mask_email(item) if "@" in item else mask_name(item))
        value = _EMAIL.sub(lambda m: f"{m.group(1)}{MASK}@{m.group(2)}", value)
    return value


def pretty(value, **kwargs):
    """Redacted JSON, indented, for a <pre> block. A JSON string (a raw webhook body) is parsed first."""
    if isinstance(value, (str, bytes)):
        try:
            value = json.loads(value)
        except ValueError:
            return text(value.decode("utf-8", "replace") if isinstance(value, bytes) else value, **kwargs)
    return json.dumps(redact(value, **kwargs), indent=2, ensure_ascii=False, sort_keys=False)
