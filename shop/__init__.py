"""The reference KNET-on-Adyen storefront.

Rooms, each with one job (data flows views → services → client/store, never back up):
  storefront/  catalog and cart
  checkout/    checkout form, /paymentMethods, /payments, redirect, return, result page
  webhooks/    POST /webhooks/adyen: verify, store, acknowledge (in front of Flask), process
  orders/      the order state machine, applied from the return and from webhooks
  adyen/       the Checkout API client and the webhook HMAC scheme
  console/     /console: timelines, webhook inbox, doctor and go-live checklist; the CLI
  simulator/   a plug-in, mounted in simulator mode: Adyen's test API, the KNET page, the webhook
               sender, offline. The rooms above never import it.
"""

import importlib
import logging
import os

from dotenv import load_dotenv
from flask import Flask, request
from sqlalchemy.exc import DBAPIError

from shop.config import load_settings

log = logging.getLogger(__name__)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Shop(Flask):
    """Flask, with more chances for a page whose database connection was lost under it."""

    def preprocess_request(self):
        """The before-request functions (the storefront's check for a cart already paid reads the
        database), with the same chances as the view."""
        return self._again_if_disconnected(super().preprocess_request)

    def dispatch_request(self):
        """Run the view; run it again (up to DISCONNECT_RETRIES times) if the database dropped its
        connection meanwhile (a restart, a failover). Every view can be repeated, as a refresh or a
        double click repeats it: what it writes, it writes in units of work that find what an earlier
        run did (shop/db.py)."""
        return self._again_if_disconnected(super().dispatch_request)

    def _again_if_disconnected(self, step):
        from shop.db import DISCONNECT_RETRIES, db, is_disconnect

        for retry in range(DISCONNECT_RETRIES + 1):
            try:
                return step()
            except DBAPIError as error:
                if not is_disconnect(error) or retry == DISCONNECT_RETRIES:
                    raise
                db.session.rollback()
                log.warning("database connection lost while answering %s; answering again", request.endpoint)


def create_app(test_config=None):
    """Build the app. `test_config` overrides settings (tests pass their own database and URLs)."""
    app = Shop(
        __name__,
        instance_path=os.path.join(ROOT, "instance"),
        template_folder=os.path.join(ROOT, "templates"),
        static_folder=os.path.join(ROOT, "static"),
    )
    if test_config is None:
        load_dotenv(os.path.join(ROOT, ".env"))
        environ = os.environ
    else:
        environ = test_config.get("ENV", os.environ)
    app.config.from_mapping(load_settings(environ))
    app.config.update({k: v for k, v in (test_config or {}).items() if k != "ENV"})

    os.makedirs(app.instance_path, exist_ok=True)
    if not app.config.get("SQLALCHEMY_DATABASE_URI"):
        app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite:///" + os.path.join(app.instance_path, "shop.sqlite3")
    # No pool_pre_ping: shop/db.py pings only connections that sat idle in the pool.
    app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {})

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from shop import console, db, hooks, i18n, money, security, services, webhooks, worker
    from shop.checkout import bp as checkout_bp
    from shop.storefront import bp as storefront_bp

    db.init_app(app)
    security.init_app(app)  # CSRF, security headers, no-store, error pages, Host and size limits (config)
    i18n.init_app(app)  # English and Arabic shopper pages (Flask-Babel)
    money.init_app(app)
    hooks.init_app(app)  # named places in the pages where plug-ins add templates
    app.register_blueprint(storefront_bp)
    app.register_blueprint(checkout_bp)
    # Pages name their icon (static/favicon.svg); this is for the clients that ask for it anyway.
    app.add_url_rule("/favicon.ico", "favicon", lambda: app.send_static_file("favicon.svg"))
    webhooks.init_app(app)  # POST /webhooks/adyen
    worker.init_app(app)  # the background loop's jobs (started below, once plug-ins added theirs)
    console.init_app(app)  # /console and the `flask adyen|orders|webhooks` commands

    # Plug-ins extend the shop through the same points: blueprints, worker jobs (worker.register),
    # console pages (console.attach, add_page), templates (hooks.add), tables (db.add_schema).
    for name in app.config["PLUGINS"]:
        importlib.import_module(name).init_app(app, environ)

    services.init_app(app)  # the Adyen client, once a plug-in may have said where Adyen answers
    worker.start(app)

    hops = app.config.get("PROXY_FIX_HOPS") or 0
    if hops:
        # Behind `hops` reverse proxies: the client's address, https, Host and port come from the
        # X-Forwarded-* headers those proxies set (and only from the last `hops` values of each).
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops)
    return app
