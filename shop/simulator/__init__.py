"""A faithful offline stand-in for Adyen's test Checkout API, the KNET hosted page and webhooks."""

from flask import Blueprint

bp = Blueprint("simulator", __name__, url_prefix="/_sim")


def init_app(app, csrf):
    from shop.simulator import models, views  # noqa: F401

    csrf.exempt(bp)
    app.register_blueprint(bp)
