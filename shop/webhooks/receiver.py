"""POST /webhooks/adyen: check basic auth, the body and every item's HMAC, store, answer [accepted].

Docs: https://docs.adyen.com/development-resources/webhooks
      https://docs.adyen.com/development-resources/webhooks/secure-webhooks/verify-hmac-signatures
      https://docs.adyen.com/development-resources/webhooks/handle-webhook-events

Adyen's rule: acknowledge every notification you can authenticate. Adyen retries whatever it does
not see acknowledged, and may hold the endpoint's later webhooks behind it. Basic auth and the
HMAC alone decide whether a request is Adyen's; once they pass, the answer is [accepted] whatever
the items say, and each item is judged on its own: stored to be applied, or stored as ignored
(REPORT_AVAILABLE, a Customer Area test, an event code the shop does not act on, fields the shop
cannot use) or flagged (for another merchant account, or a `live` flag that is not this shop's
environment: logged at WARNING, counted in the console's inbox, never applied), each with why.
Adyen needs an answer within 10 seconds and never follows redirects, so this only verifies and
stores; the business logic runs afterwards in the background worker (processing.process_due),
woken as soon as the rows are committed. Answers, in plain text:
  200 [accepted]  every item stored: to be applied, ignored or flagged (or a duplicate of a stored one)
  401             basic auth or an HMAC signature is missing or wrong (one bad item refuses the body)
  400             the body is not a notification at all: not JSON, not an object, no non-empty
                  notificationItems array, an item that is not a NotificationRequestItem object;
                  or the Host header is not one of the shop's names
  405             not a POST
  413             the body is larger than MAX_BODY_BYTES (the only bound on its size and items)
  500             the database could not store it: Adyen delivers it again later
Nothing is stored unless every item's signature matches; a refusal leaves one line in
webhook_rejections (reason, address, size: never the body or a header) for the developer console.
Log lines carry references, eventCode and success only: never the body, a signature, a key, a
password or the Authorization header.

Why a WSGI callable in front of Flask rather than a Flask view: this is the one address a program
calls, and at volume. It needs nothing of what Flask's request context gives the shop's pages (the
session, CSRF, the shopper's language, templates, URL building), and measured in process that
machinery cost about as much CPU as verifying and storing the webhook (measured: bench/README.md).
So `Receiver` answers these two paths itself, inside an app context (config, database, logging),
and hands every other request to Flask unchanged. It keeps what the shop's hooks give every
answer: the Host allowlist, the size limit, the security headers and errors without a stack trace.
"""

import hmac
import logging

import flask
from flask import current_app
from werkzeug.exceptions import RequestEntityTooLarge, SecurityError
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.wrappers import Request

from shop import jobs, security, worker
from shop.adyen import signature
from shop.webhooks import parsing, processing, rejections

log = logging.getLogger(__name__)

# Both spellings are answered the same, so that neither is ever answered with a redirect.
PATHS = frozenset(("/webhooks/adyen", "/webhooks/adyen/"))
# A Standard webhook is about 1 KB; anything far bigger is not one. This is the only bound on the
# number of items and on the length of their fields.
MAX_BODY_BYTES = 64 * 1024
CHALLENGE = {"WWW-Authenticate": 'Basic realm="Adyen webhooks"'}


class Refused(Exception):
    """A request this endpoint does not accept: the answer, and what the rejection log keeps."""

    def __init__(self, status, text, reason=None, body_size=None, headers=None):
        super().__init__(text)
        self.status, self.text, self.reason, self.body_size, self.headers = status, text, reason, body_size, headers


class Receiver:
    """WSGI middleware: POST /webhooks/adyen[/] is answered here, anything else goes to `wsgi_app`."""

    def __init__(self, app, wsgi_app):
        self.app = app
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") not in PATHS:
            return self.wsgi_app(environ, start_response)
        with self.app.app_context():
            status, body, headers = answer(Request(environ), self.app)
        start_response(f"{status} {HTTP_STATUS_CODES[status]}", headers)
        return [body]


def view():
    """POST /webhooks/adyen as a Flask view: the route `flask routes` lists, which answers exactly as
    the Receiver does (the Receiver answers first, in front of Flask)."""
    status, body, headers = answer(flask.request, current_app)
    return current_app.response_class(body, status=status, headers=headers)


def answer(request, app):
    """(status, body bytes, headers) for one delivery, in an app context. Refusals are logged (never
    the body, a header or a credential) and counted in the rejection log."""
    headers = {}
    try:
        status, text = 200, receive(request, app)
    except Refused as refusal:
        status, text, headers = refusal.status, refusal.text, refusal.headers or {}
        if refusal.reason:
            size = request.content_length if refusal.body_size is None else refusal.body_size
            rejections.record(refusal.reason, status, request.remote_addr, size)
    except Exception:  # a bug must not show Adyen a stack trace; it retries a 500
        log.exception("webhook: unexpected error, answering 500")
        status, text = 500, HTTP_STATUS_CODES[500]
    body = text.encode("utf-8")
    answered = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
    answered += security.baseline_headers(app.config)
    answered += headers.items()
    return status, body, answered


def receive(request, app):
    """Verify and store one delivery; "[accepted]", or raise Refused."""
    config = app.config
    request.trusted_hosts = config["TRUSTED_HOSTS"]
    try:
        _ = request.host  # checked against TRUSTED_HOSTS, as Flask does for every page
    except SecurityError:
        raise Refused(400, HTTP_STATUS_CODES[400]) from None
    if request.method != "POST":
        raise Refused(405, HTTP_STATUS_CODES[405], headers={"Allow": "POST"})

    if request.authorization is None:
        log.warning("webhook refused: no basic auth")
        raise Refused(401, "unauthorized", "no basic auth", headers=CHALLENGE)
    if not _credentials_match(request.authorization, config):
        log.warning("webhook refused: wrong basic auth credentials")
        raise Refused(401, "unauthorized", "bad basic auth", headers=CHALLENGE)

    request.max_content_length = MAX_BODY_BYTES
    try:
        body = request.get_data(cache=True)
    except RequestEntityTooLarge:
        log.warning("webhook refused: body larger than %d bytes", MAX_BODY_BYTES)
        raise Refused(413, "body too large", "body too large") from None

    try:
        envelope = parsing.parse(body)
    except parsing.Malformed as exc:
        log.warning("webhook refused: malformed body (%s)", exc)
        raise Refused(400, f"malformed notification: {exc}", "malformed body", len(body)) from None

    # Every item must be signed with our key (or the previous one, while a key is rotated); an
    # "other webhook" is signed as a whole, in the HmacSignature header.
    keys = [config.get("ADYEN_HMAC_KEY"), config.get("ADYEN_HMAC_KEY_PREVIOUS")]
    for item in envelope.items:
        if envelope.standard:
            authentic = signature.is_valid(item.raw, keys)
        else:
            authentic = signature.is_valid_payload(body, request.headers.get("HmacSignature"), keys)
        if not authentic:
            log.warning(
                "webhook refused: invalid HMAC signature for pspReference=%s eventCode=%s merchantReference=%s",
                _shown(item.psp_reference),
                _shown(item.event_code),
                _shown(item.merchant_reference),
            )
            raise Refused(401, "invalid signature", "bad signature", len(body))

    raw_body = body.decode("utf-8")
    new_work = False
    for item in envelope.items:
        psp, code, reference = _shown(item.psp_reference), _shown(item.event_code), _shown(item.merchant_reference)
        # Signed by Adyen, but is it meant for this shop? Acknowledged either way, applied only if so.
        mismatch = not_for_this_shop(envelope, item, config)
        if mismatch:
            log.warning(
                "webhook NOT applied, %s: pspReference=%s eventCode=%s merchantReference=%s",
                mismatch,
                psp,
                code,
                reference,
            )
        try:
            stored = processing.store(item, raw_body, mismatch)
        except Exception as exc:  # noqa: BLE001 - a 5xx makes Adyen deliver it again later
            log.error(
                "webhook NOT stored, answering 500 so that Adyen retries: pspReference=%s eventCode=%s (%s)",
                psp,
                code,
                jobs.describe_error(exc),
            )
            raise Refused(500, "could not store the notification") from None
        new_work = new_work or not (stored.duplicate or stored.ignored)
        outcome = "duplicate" if stored.duplicate else "flagged" if mismatch else "ignored" if stored.ignored else ""
        log.info(
            "webhook accepted: pspReference=%s eventCode=%s success=%s merchantReference=%s%s",
            psp,
            code,
            item.success_text,
            reference,
            f" ({outcome})" if outcome else "",
        )

    if new_work:
        worker.wake(app)
    return "[accepted]"


def not_for_this_shop(envelope, item, config):
    """Why an authenticated item is not this shop's to apply (its words for the log and the
    inbox), or None. A test-environment event must not move a live order, nor the reverse, and a
    company-level webhook sends every merchant account's events."""
    mode = config["ADYEN_ENVIRONMENT"]
    live = mode == "live"
    wrong = []
    if not envelope.standard:  # an other webhook says "environment" and names no merchant account
        if envelope.environment != ("live" if live else "test"):
            wrong.append(f"environment is {_shown(envelope.environment)} but this shop runs in {mode} mode")
    else:
        if envelope.live != ("true" if live else "false"):
            shown = "missing" if envelope.live is None else _shown(envelope.live)
            wrong.append(f"live is {shown} but this shop runs in {mode} mode (expects {'true' if live else 'false'!r})")
        ours = config["ADYEN_MERCHANT_ACCOUNT"]
        if item.raw.get("merchantAccountCode") != ours:
            wrong.append(f"merchantAccountCode {_shown(item.merchant_account)} is not this shop's {ours!r}")
    return f"not for this shop: {' and '.join(wrong)}" if wrong else None


def _shown(value, limit=80):
    """A value quoted and cut short (any field may be as long as the body), for a log line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _credentials_match(auth, config):
    """Constant-time check of the basic-auth pair; fails closed when none is configured."""
    username, password = config.get("WEBHOOK_USERNAME"), config.get("WEBHOOK_PASSWORD")
    if not username or not password or auth.type != "basic":
        return False
    user_ok = hmac.compare_digest((auth.username or "").encode("utf-8"), username.encode("utf-8"))
    password_ok = hmac.compare_digest((auth.password or "").encode("utf-8"), password.encode("utf-8"))
    return user_ok and password_ok
