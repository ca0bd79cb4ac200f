"""A faithful offline stand-in for Adyen's test Checkout API, the KNET hosted page and webhooks.

Registered at /_sim only when ADYEN_ENVIRONMENT=simulator:
  api.py            POST /_sim/checkout/v71/{paymentMethods, payments, payments/details} (v70, v72 too)
  schema.py         each request read and checked as Adyen does, against the v71 spec's schemas
                    (checkout_v71_schemas.json, from scripts/extract_checkout_schemas.py)
  knet_page.py      GET/POST /_sim/knet/kpg/PaymentHTTP.htm, the KNET hosted payment page
  sender.py         deliver_due(): the webhooks, signed and retried (called by shop/worker.py)
  faults.py         injected faults (timeouts, errors, webhook delays…); fault_views.py: /_sim/faults
  payments.py       the simulator's payment store; outcomes.py the test cards and their results
  notifications.py  the webhook items; references.py pspReferences and redirect results
State lives in the sim_* tables (models.py), never in process memory.
"""

from flask import Blueprint

bp = Blueprint("simulator", __name__, url_prefix="/_sim")


def init_app(app, csrf):
    from shop import worker
    from shop.simulator import api, fault_views, knet_page, models, outcomes, sender  # noqa: F401  (routes register on import)

    worker.register(app, "simulator webhook deliveries", sender.deliver_due)

    # Adyen's clients and the KNET page's form carry no CSRF token, as on the real services.
    # (The fault page, /_sim/faults, is the shop's own and checks its token itself.)
    csrf.exempt(bp)
    app.register_blueprint(bp)
    # For templates/simulator/_test_cards.html, which the checkout page includes in simulator mode.
    app.jinja_env.globals["simulator_card_sheet"] = outcomes.card_sheet
