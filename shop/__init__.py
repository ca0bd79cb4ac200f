"""The reference KNET-on-Adyen storefront.

Rooms, each with one job (data flows views → services → client/store, never back up):
  storefront/  catalog and cart
  checkout/    checkout form, /paymentMethods, /payments, redirect, return, result page
  webhooks/    POST /webhooks/adyen: verify, store, acknowledge (in front of Flask), process
  orders/      the order state machine, applied from the return and from webhooks
  adyen/       the Checkout API client and the webhook HMAC scheme
  simulator/   Adyen's test API, the KNET page and the webhook sender, offline (simulator mode only)
"""

import logging
import os

from dotenv import load_dotenv
from flask import Flask
from flask_wtf.csrf import CSRFProtect

from shop.config import load_settings

csrf = CSRFProtect()

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def create_app(test_config=None):
    """Build the app. `test_config` overrides settings (tests pass their own database and URLs)."""
    app = Flask(
        __name__,
        instance_path=os.path.join(ROOT, "instance"),
        template_folder=os.path.join(ROOT, "templates"),
        static_folder=os.path.join(ROOT, "static"),
    )
    if test_config is None:
        load_dotenv(os.path.join(ROOT, ".env"))
        app.config.from_mapping(load_settings())
    else:
        app.config.from_mapping(load_settings(test_config.get("ENV", os.environ)))
        app.config.update({k: v for k, v in test_config.items() if k != "ENV"})

    os.makedirs(app.instance_path, exist_ok=True)
    if not app.config.get("SQLALCHEMY_DATABASE_URI"):
        app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite:///" + os.path.join(app.instance_path, "shop.sqlite3")
    # No pool_pre_ping: shop/db.py pings only connections that sat idle in the pool.
    app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {})

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        # The format above uses none of these; not collecting them makes each log line cheaper
        # (the logging HOWTO's "Optimization"; one line per webhook, bench/README.md).
        logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
        logging._srcfile = None  # no caller's file and line: the format has no %(pathname)s

    from shop import db, i18n, money, security, services

    db.init_app(app)
    csrf.init_app(app)
    security.init_app(app)  # security headers, no-store, error pages, Host and size limits (config)
    i18n.init_app(app)  # English and Arabic shopper pages (Flask-Babel)
    money.init_app(app)
    services.init_app(app)

    from shop import webhooks
    from shop.checkout import bp as checkout_bp
    from shop.storefront import bp as storefront_bp

    app.register_blueprint(storefront_bp)
    app.register_blueprint(checkout_bp)
    # Pages name their icon (static/favicon.svg); this is for the clients that ask for it anyway.
    app.add_url_rule("/favicon.ico", "favicon", lambda: app.send_static_file("favicon.svg"))
    webhooks.init_app(app)  # POST /webhooks/adyen, answered before Flask's request machinery

    if app.config["ADYEN_ENVIRONMENT"] == "simulator":
        from shop import simulator

        simulator.init_app(app, csrf)

    from shop import console

    console.init_app(app)  # /console and the `flask adyen|orders|webhooks` commands

    from shop import worker

    worker.init_app(app)

    hops = app.config.get("PROXY_FIX_HOPS") or 0
    if hops:
        # Behind `hops` reverse proxies: the client's address, https, Host and port come from the
        # X-Forwarded-* headers those proxies set (and only from the last `hops` values of each).
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops)
    return app
