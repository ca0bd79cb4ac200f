"""The simulator's own settings, read from the environment when the plug-in is mounted (simulator
mode), checked as the shop's are (shop/config.py): a wrong one stops start-up and names itself.

Every one has a default, so `make run` needs none of them.
"""

from shop.config import ConfigError, one_of, seconds

DEFAULTS = {
    # How KNET's page sends the shopper back (the return), and how the shop is told to send the
    # shopper to KNET (action.method GET, or POST with action.data).
    "SIMULATOR_RETURN_METHOD": "GET",
    "SIMULATOR_ACTION_METHOD": "GET",
    # Seconds before a webhook goes out after what caused it.
    "SIMULATOR_WEBHOOK_DELAY": "2",
    # Seconds before a Pending / Received payment gets its final AUTHORISATION webhook.
    "SIMULATOR_PENDING_DELAY": "5",
    # Seconds an unfinished KNET page stays open before the offer closes (OFFER_CLOSED). Adyen does
    # not publish the "close-off period" of a redirect method's offer (help centre, "What are
    # offers?"); it documents 1 hour for a Checkout session that sets no expiresAt (v71 spec,
    # CreateCheckoutSessionRequest.expiresAt; at most 24 hours) and 12 hours for card offers
    # (Webhooks-v1, OFFER_CLOSED). One hour, as a session's; more than 0 and at most 24 hours.
    "SIMULATOR_OFFER_EXPIRY": "3600",
    # Adyen's webhook retry schedule (2 min, 5 min, … 8 h, for 30 days) times this factor; "1/60"
    # (default) turns minutes into seconds. A fraction or a decimal.
    "SIMULATOR_RETRY_SCALE": "1/60",
    # Seconds a worker holds a claimed webhook delivery before another may take it over (a crash
    # mid-send); longer than the 10 s send timeout.
    "SIMULATOR_DELIVERY_LEASE": "60",
    # The merchant name shown on the simulated KNET page.
    "SIMULATOR_MERCHANT_NAME": "KNET Demo Shop",
    # The HTTP status of 704 "request already processed or in progress": Adyen's docs say 422 or
    # 409, so a shop must take both as "in progress".
    "SIMULATOR_704_STATUS": "422",
    # The console's "abandoned" demo: seconds until the unfinished offer closes.
    "CONSOLE_ABANDON_SECONDS": "3",
}
SECONDS = (
    "SIMULATOR_WEBHOOK_DELAY",
    "SIMULATOR_PENDING_DELAY",
    "SIMULATOR_OFFER_EXPIRY",
    "SIMULATOR_RETRY_SCALE",
    "SIMULATOR_DELIVERY_LEASE",
    "CONSOLE_ABANDON_SECONDS",
)
SEND_TIMEOUT_SECONDS = 10  # Adyen waits 10 s for an answer to a webhook
MAX_OFFER_EXPIRY = 24 * 3600  # "You cannot set the session expiry to more than 24 hours after session creation"


def load_settings(environ, public_base_url):
    """The simulator's settings (a dict for app.config) from `environ`; raises ConfigError."""

    def get(name):
        return str(environ.get(name, "")).strip() or DEFAULTS[name]

    settings = {name: seconds(name, get(name)) for name in SECONDS}
    for name in SECONDS:
        if settings[name] < 0:
            raise ConfigError(f"{name} must be 0 seconds or more.")
    if settings["SIMULATOR_DELIVERY_LEASE"] <= SEND_TIMEOUT_SECONDS:
        raise ConfigError(f"SIMULATOR_DELIVERY_LEASE must be more than the {SEND_TIMEOUT_SECONDS} s send timeout.")
    if not 0 < settings["SIMULATOR_OFFER_EXPIRY"] <= MAX_OFFER_EXPIRY:
        raise ConfigError(
            f"SIMULATOR_OFFER_EXPIRY must be more than 0 seconds and at most {MAX_OFFER_EXPIRY} (24 hours)."
        )
    settings.update(
        SIMULATOR_RETURN_METHOD=one_of("SIMULATOR_RETURN_METHOD", get("SIMULATOR_RETURN_METHOD"), ("GET", "POST")),
        SIMULATOR_ACTION_METHOD=one_of("SIMULATOR_ACTION_METHOD", get("SIMULATOR_ACTION_METHOD"), ("GET", "POST")),
        SIMULATOR_MERCHANT_NAME=get("SIMULATOR_MERCHANT_NAME"),
        SIMULATOR_704_STATUS=int(one_of("SIMULATOR_704_STATUS", get("SIMULATOR_704_STATUS"), ("422", "409"))),
        # Where its webhooks are posted: this shop's own endpoint unless told otherwise.
        SIMULATOR_WEBHOOK_URL=str(environ.get("SIMULATOR_WEBHOOK_URL", "")).strip()
        or f"{public_base_url}/webhooks/adyen",
        # Where it answers as Adyen's Checkout API: the shop's client is pointed here.
        ADYEN_API_BASE_URL=f"{public_base_url}/_sim/checkout/v71",
    )
    return settings
