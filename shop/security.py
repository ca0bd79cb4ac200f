"""Hardening for every response: security headers, no-store on private pages, friendly error pages
with no stack trace, the allowlist of pages the shopper may be sent to, and log redaction.

Settings it relies on are set in shop/config.py: SESSION_COOKIE_HTTPONLY, SESSION_COOKIE_SAMESITE
(Lax: the POST return from KNET comes without the cookie, the GET after it with it),
SESSION_COOKIE_SECURE (outside the simulator), MAX_CONTENT_LENGTH (64 KiB; 413 beyond) and
TRUSTED_HOSTS (PUBLIC_BASE_URL's host and TRUSTED_HOSTS; any other Host header gets 400).

Sources: Flask's security docs (headers, cookies), OWASP ASVS 5.0 3.4.x (CSP with object-src
'none', nosniff, Referrer-Policy, frame-ancestors), 3.7.2 (redirect allowlist), 14.3.2 (no-store),
16.5.1 (generic error pages). form-action must allow Adyen's and KNET's pages: browsers apply it to
the redirects that follow a form POST (POST /checkout → 303 → action.url).
"""

import functools
import logging
import re
from urllib.parse import urlsplit

from flask import current_app, g, render_template, request
from flask.json.provider import DefaultJSONProvider
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import CSRFError, CSRFProtect
from jinja2 import TemplateNotFound
from werkzeug.exceptions import HTTPException
from werkzeug.routing import BaseConverter, IntegerConverter

log = logging.getLogger(__name__)

# Every POST carries the form's CSRF token, but those that cannot (the return from KNET, Adyen's
# webhooks, the simulated Adyen's API): views opt out with `@csrf.exempt`.
csrf = CSRFProtect()

# Where Adyen may send the shopper for KNET (test and live): Adyen's hosted pages, and KNET's own.
ADYEN_HOST_SUFFIXES = (".adyen.com", ".adyenpayments.com")
KNET_HOSTS = ("kpay.com.kw", "kpaytest.com.kw")
KNET_HOST_SUFFIXES = (".knet.com.kw",)
PAYMENT_PAGE_SOURCES = (
    "https://*.adyen.com",
    "https://*.adyenpayments.com",
    "https://*.knet.com.kw",
    "https://kpay.com.kw",
    "https://kpaytest.com.kw",
)

# Pages with personal or order data, never kept in a cache (result, return, pay, checkout, the
# developer console); a plug-in adds its own with `no_store`.
NO_STORE_PREFIXES = ("/orders/", "/checkout", "/console")
# Callers that are programs, not people: errors in plain text, not an HTML page (`plain_errors`).
PLAIN_ERROR_PREFIXES = ("/webhooks/",)
ERROR_TEMPLATES = (400, 404, 405, 413, 500)

HSTS = "max-age=31536000; includeSubDomains"


def init_app(app):
    csrf.init_app(app)
    app.extensions["security"] = {
        "no_store": list(NO_STORE_PREFIXES),
        "plain_errors": list(PLAIN_ERROR_PREFIXES),
        # Where a shopper may be sent to pay: Adyen's and KNET's pages, unless a plug-in says.
        "payment_pages": None,
    }
    app.url_map.converters["token"] = TokenConverter
    app.url_map.converters["id"] = RowIdConverter
    app.json = SafeJSONProvider(app)
    app.session_interface = SignedCookieSessions()
    app.after_request(_add_headers)
    app.register_error_handler(HTTPException, error_page)
    werkzeug_log = logging.getLogger("werkzeug")
    if not any(isinstance(f, RedactReturnValues) for f in werkzeug_log.filters):
        werkzeug_log.addFilter(RedactReturnValues())
    if app.config["ADYEN_ENVIRONMENT"] != "simulator" and not app.config["PUBLIC_BASE_URL"].startswith("https://"):
        log.warning(
            "PUBLIC_BASE_URL is not https: the session cookie is Secure outside the simulator, "
            "so browsers will not send it back over http"
        )


# Path parameters --------------------------------------------------------------------------------------
# Checked by the router before a view runs: a malformed one is a 404 and never reaches the database
# (PostgreSQL refuses a NUL byte with an error, and an integer past its column's range likewise).


class TokenConverter(BaseConverter):
    """An order token as shop.models.new_order_token makes them (URL-safe Base64, 32 characters)."""

    regex = r"[A-Za-z0-9_-]{16,64}"


class RowIdConverter(IntegerConverter):
    """A row id: a positive integer that fits PostgreSQL's INTEGER."""

    def __init__(self, url_map):
        super().__init__(url_map, min=1, max=2**31 - 1)


# Extension points for plug-ins (the simulator uses them) --------------------------------------------


def no_store(app, prefix):
    """Pages under `prefix` are never kept in a cache."""
    app.extensions["security"]["no_store"].append(prefix)


def plain_errors(app, prefix):
    """Errors under `prefix` are plain text: the callers there are programs."""
    app.extensions["security"]["plain_errors"].append(prefix)


def payment_pages(app, origins):
    """Send shoppers to pay only on these origins (instead of Adyen's and KNET's pages)."""
    app.extensions["security"]["payment_pages"] = tuple(origins)


def _payment_pages(app):
    return app.extensions["security"]["payment_pages"]


# Headers ---------------------------------------------------------------------------------------------


def content_security_policy(config, extra_form_action=()):
    """The CSP for this shop's pages: no inline script or style, no plugins, no framing, forms only
    to this shop and to the payment pages."""
    pages = _payment_pages(current_app)
    return _policy(config.get("KNET_LOGO_URL"), pages or PAYMENT_PAGE_SOURCES, tuple(extra_form_action))


@functools.lru_cache(maxsize=64)  # the same few answers for every response
def _policy(knet_logo_url, payment_pages, extra_form_action):
    images = ["'self'", "data:"]
    if knet_logo_url:
        images.append(origin_of(knet_logo_url))
    forms = ["'self'", *payment_pages, *extra_form_action]
    directives = [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src " + " ".join(dict.fromkeys(images)),
        "object-src 'none'",
        "base-uri 'self'",
        "frame-ancestors 'none'",
        "form-action " + " ".join(dict.fromkeys(forms)),
    ]
    return "; ".join(directives)


def allow_form_action(url):
    """Let this one response's forms post to `url`'s origin (the POST action to KNET's page)."""
    origin = origin_of(url)
    if origin:
        g.setdefault("csp_form_action", []).append(origin)


def baseline_headers(config, extra_form_action=()):
    """The headers every answer carries (pages, files, errors, the webhook receiver's plain text)."""
    headers = [
        ("Content-Security-Policy", content_security_policy(config, extra_form_action)),
        ("X-Content-Type-Options", "nosniff"),
        ("X-Frame-Options", "DENY"),
        # Cross-site, only the origin: order tokens in our URLs never reach KNET or Adyen.
        ("Referrer-Policy", "strict-origin-when-cross-origin"),
    ]
    if config["ADYEN_ENVIRONMENT"] != "simulator" and config["PUBLIC_BASE_URL"].startswith("https://"):
        headers.append(("Strict-Transport-Security", HSTS))
    return headers


def _add_headers(response):
    headers = response.headers
    for name, value in baseline_headers(current_app.config, g.get("csp_form_action", ())):
        headers.setdefault(name, value)
    if request.path.startswith(tuple(current_app.extensions["security"]["no_store"])):
        headers["Cache-Control"] = "no-store"
    return response


# Where the shopper may be sent ---------------------------------------------------------------------


def origin_of(url):
    """scheme://host[:port] of an absolute URL, or "" if it has none."""
    parts = urlsplit(url or "")
    if not parts.scheme or not parts.netloc:
        return ""
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}".lower()


def is_payment_page_url(url):
    """True for an address Adyen may send a KNET shopper to: https on Adyen's or KNET's hosts, or
    exactly the origins a plug-in named (the simulated KNET page is the shop itself)."""
    if not isinstance(url, str) or not url or re.search(r"[\s\\\x00-\x1f\x7f]", url):
        return False  # a backslash or a control character reads differently in browsers
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return False
    try:
        port = parts.port
    except ValueError:
        return False
    pages = _payment_pages(current_app)
    if pages is not None:
        return origin_of(url) in pages
    host = (parts.hostname or "").lower()
    if parts.scheme != "https" or port not in (None, 443) or not host:
        return False
    return host in KNET_HOSTS or host.endswith(ADYEN_HOST_SUFFIXES + KNET_HOST_SUFFIXES)


def is_local_url(target):
    """True for a path on this site ("/orders/…"): never "//evil", "https://…" or "/\\evil"."""
    if not isinstance(target, str) or not target.startswith("/") or target.startswith(("//", "/\\")):
        return False
    parts = urlsplit(target)
    return not parts.scheme and not parts.netloc and not re.search(r"[\s\\\x00-\x1f\x7f]", target)


# Error pages ---------------------------------------------------------------------------------------


def error_page(error):
    """A short page in the shop's words: never a stack trace, an exception text or a setting."""
    code = error.code or 500
    if code >= 500:
        from shop.db import db

        db.session.rollback()
    if request.path.startswith(tuple(current_app.extensions["security"]["plain_errors"])):
        response = current_app.response_class(error.name, status=code, mimetype="text/plain")
    else:
        reason = "csrf" if isinstance(error, CSRFError) else None
        if reason:
            log.info("refused a form without a valid CSRF token on %s", request.path)
        try:
            body = render_template(f"errors/{code}.html", code=code, reason=reason)
        except TemplateNotFound:
            body = render_template("errors/_layout.html", code=code, reason=reason)
        response = current_app.response_class(body, status=code, mimetype="text/html")
    # Allow and similar headers that the error carries (405 lists the allowed methods).
    for name, value in error.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


# Sessions -------------------------------------------------------------------------------------------------


class SignedCookieSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, with the signer built once per key instead of once per
    request. Same cookies, same keys."""

    def get_signing_serializer(self, app):
        keys = (app.secret_key, tuple(app.config.get("SECRET_KEY_FALLBACKS") or ()))
        cached = app.extensions.get("session_signer")
        if cached is None or cached[0] != keys:
            cached = app.extensions["session_signer"] = (keys, super().get_signing_serializer(app))
        return cached[1]


# JSON -----------------------------------------------------------------------------------------------------


class SafeJSONProvider(DefaultJSONProvider):
    """Flask's JSON, but a body nested too deeply is a bad request (400), not a RecursionError (500)."""

    def loads(self, s, **kwargs):
        try:
            return super().loads(s, **kwargs)
        except RecursionError as error:
            raise ValueError("the JSON is nested too deeply") from error


# Logs ---------------------------------------------------------------------------------------------------


class RedactReturnValues(logging.Filter):
    """Keeps the redirectResult (a bearer-like value) out of the development server's access log."""

    PATTERN = re.compile(r"((?:redirectResult|payload)=)[^&\s\"']+")

    def filter(self, record):
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is not ours to fix
            return True
        if "redirectResult=" in message or "payload=" in message:
            record.msg = self.PATTERN.sub(r"\1[redacted]", message)
            record.args = ()
        return True
