"""A faithful offline stand-in for Adyen's test Checkout API, the KNET hosted page and webhooks.

A plug-in: create_app mounts it in simulator mode (the PLUGINS setting) through the extension points
any plug-in would use, and the shop's own rooms never import it. It brings its own settings
(config.py), routes at /_sim, background jobs, console pages, templates, and tables: an Alembic
branch of their own (migrations/), so that a test or live database has none of them.

  api.py            POST /_sim/checkout/v71/{paymentMethods, payments, payments/details} (v70, v72 too)
                    and /payments/{paymentPspReference}/{refunds, reversals, cancels}
  modifications.py  those refunds, reversals and cancels, and the webhooks that tell their outcome
  schema.py         each request read and checked as Adyen does, against the v71 spec's schemas
                    (checkout_v71_schemas.json, from scripts/extract_checkout_schemas.py)
  knet_page.py      GET/POST /_sim/knet/kpg/PaymentHTTP.htm, the KNET hosted payment page
  sender.py         the webhooks, signed and retried as Adyen does (a job of the shop's background loop)
  faults.py         injected faults (timeouts, errors, webhook delays…); fault_views.py: /_sim/faults
  payments.py       the simulator's payment store; outcomes.py the test cards and their results
  notifications.py  the webhook items; references.py pspReferences and redirect results
  console_views.py  its console pages: the webhook outbox and the demo scenarios (scenarios.py)
State lives in the sim_* tables (models.py), never in process memory.
"""

from flask import Blueprint

bp = Blueprint("simulator", __name__, url_prefix="/_sim", template_folder="templates", static_folder="static")


def init_app(app, environ):
    """Mount the simulator on `app`, with its settings read from `environ`."""
    from shop import console, db, hooks, security, worker
    from shop.security import csrf
    from shop.simulator import api, config, console_views, fault_views, knet_page, models, outcomes, sender  # noqa: F401

    # Its settings (and where the shop's Adyen client is to call); a value the app was given
    # directly (tests do) wins.
    for name, value in config.load_settings(environ, app.config["PUBLIC_BASE_URL"]).items():
        if app.config.get(name) is None:
            app.config[name] = value
    db.add_schema(app, models.SimBase.metadata, models.MIGRATIONS_DIR)

    # The simulated KNET page and the return are the shop itself: shoppers are sent there only.
    security.payment_pages(app, [security.origin_of(app.config["PUBLIC_BASE_URL"])])
    security.no_store(app, "/_sim")
    security.plain_errors(app, "/_sim/checkout/")
    # Adyen's clients and the KNET page's form carry no CSRF token, as on the real services.
    # (The fault page, /_sim/faults, is the shop's own and checks its token itself.)
    csrf.exempt(bp)
    app.register_blueprint(bp)
    worker.register(app, "simulator webhook deliveries", sender.deliver_due)

    # Its console pages, behind the console's own gate, and its templates in the shop's pages.
    app.register_blueprint(console_views.bp)
    console.add_page(app, "simulator_console.deliveries", "Deliveries")
    console.add_page(app, "simulator_console.demo", "Demo")
    hooks.add(app, "checkout.aside", "simulator/_test_cards.html")
    hooks.add(app, "console.test_cards", "simulator/console/_test_cards.html")
    hooks.add(app, "console.orders.empty", "simulator/console/_orders_empty.html")
    app.jinja_env.globals["simulator_card_sheet"] = outcomes.card_sheet
