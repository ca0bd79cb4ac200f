"""POST /webhooks/adyen: check basic auth, the body and every item's HMAC, store, answer [accepted].

Docs: https://docs.adyen.com/development-resources/webhooks
      https://docs.adyen.com/development-resources/webhooks/secure-webhooks/verify-hmac-signatures
      https://docs.adyen.com/development-resources/webhooks/handle-webhook-events

Adyen needs an answer within 10 seconds and never follows redirects. So this view only verifies
and stores; the business logic runs afterwards in the background worker (processing.process_due),
woken as soon as the rows are committed. Answers:
  200 [accepted]  stored (or a duplicate of a stored event, or a test/unhandled event)
  401             basic auth or an HMAC signature is missing or wrong
  400             the body is not a Standard webhook, or is for another merchant account or environment
  413             the body is too large
  500             the database could not store it: Adyen delivers it again later
Nothing is stored unless every item of the body passes; a refusal leaves one line in
webhook_rejections (reason, address, size: never the body or a header) for the developer console. Log lines carry references, eventCode
and success only: never the body, a signature, a key, a password or the Authorization header.
"""

import hmac
import logging

from flask import Response, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from shop import worker
from shop.adyen import signature
from shop.db import db
from shop.webhooks import bp, parsing, processing, rejections

log = logging.getLogger(__name__)

# A Standard webhook is about 1 KB; anything far bigger is not one.
MAX_BODY_BYTES = 64 * 1024


def _text(body, status, **headers):
    return Response(body, status=status, mimetype="text/plain", headers=headers)


def _credentials_match(auth):
    """Constant-time check of the basic-auth pair; fails closed when none is configured."""
    config = current_app.config
    username, password = config.get("WEBHOOK_USERNAME"), config.get("WEBHOOK_PASSWORD")
    if not username or not password or auth is None or auth.type != "basic":
        return False
    user_ok = hmac.compare_digest((auth.username or "").encode("utf-8"), username.encode("utf-8"))
    password_ok = hmac.compare_digest((auth.password or "").encode("utf-8"), password.encode("utf-8"))
    return user_ok and password_ok


# Both spellings are routes of their own, so that neither is ever answered with a redirect.
@bp.route("/webhooks/adyen", methods=["POST"])
@bp.route("/webhooks/adyen/", methods=["POST"])
def adyen_webhook():
    config = current_app.config

    if request.authorization is None:
        log.warning("webhook refused: no basic auth")
        rejections.record("no basic auth", 401)
        return _text("unauthorized", 401, **{"WWW-Authenticate": 'Basic realm="Adyen webhooks"'})
    if not _credentials_match(request.authorization):
        log.warning("webhook refused: wrong basic auth credentials")
        rejections.record("bad basic auth", 401)
        return _text("unauthorized", 401, **{"WWW-Authenticate": 'Basic realm="Adyen webhooks"'})

    request.max_content_length = MAX_BODY_BYTES
    try:
        body = request.get_data(cache=True)
    except RequestEntityTooLarge:
        log.warning("webhook refused: body larger than %d bytes", MAX_BODY_BYTES)
        rejections.record("body too large", 413)
        return _text("body too large", 413)

    try:
        envelope = parsing.parse(body)
    except parsing.Malformed as exc:
        log.warning("webhook refused: malformed body (%s)", exc)
        rejections.record("malformed body", 400, len(body))
        return _text(f"malformed notification: {exc}", 400)

    # Every item must be signed with our key (or the previous one, while a key is rotated).
    keys = [config.get("ADYEN_HMAC_KEY"), config.get("ADYEN_HMAC_KEY_PREVIOUS")]
    for item in envelope.items:
        if not signature.is_valid(item.raw, keys):
            log.warning(
                "webhook refused: invalid HMAC signature for pspReference=%r eventCode=%r merchantReference=%r",
                item.psp_reference,
                item.event_code,
                item.merchant_reference,
            )
            rejections.record("bad signature", 401, len(body))
            return _text("invalid signature", 401)

    # Signed by Adyen, but is it meant for this shop? A test-environment event must not move a live order.
    expected_live = "true" if config["ADYEN_ENVIRONMENT"] == "live" else "false"
    if envelope.live != expected_live:
        log.warning(
            "webhook refused: live=%s but this shop runs in %s mode", envelope.live, config["ADYEN_ENVIRONMENT"]
        )
        rejections.record("wrong environment", 400, len(body))
        return _text("wrong environment", 400)
    for item in envelope.items:
        if item.merchant_account != config["ADYEN_MERCHANT_ACCOUNT"]:
            log.warning(
                "webhook refused: merchantAccountCode=%r is not ours (pspReference=%r)",
                item.merchant_account,
                item.psp_reference,
            )
            rejections.record("wrong merchant account", 400, len(body))
            return _text("wrong merchant account", 400)

    raw_body = body.decode("utf-8")
    new_work = False
    for item in envelope.items:
        try:
            stored = processing.store(item, raw_body)
        except Exception as exc:  # noqa: BLE001 - a 5xx makes Adyen deliver it again later
            db.session.rollback()
            log.error(
                "webhook NOT stored, answering 500 so that Adyen retries: pspReference=%r eventCode=%r (%s)",
                item.psp_reference,
                item.event_code,
                processing.describe_error(exc),
            )
            return _text("could not store the notification", 500)
        new_work = new_work or not (stored.duplicate or stored.ignored)
        log.info(
            "webhook accepted: pspReference=%r eventCode=%r success=%s merchantReference=%r%s",
            item.psp_reference,
            item.event_code,
            "true" if item.success else "false",
            item.merchant_reference,
            " (duplicate)" if stored.duplicate else " (ignored)" if stored.ignored else "",
        )

    if new_work:
        worker.wake(current_app._get_current_object())
    return _text("[accepted]", 200)
