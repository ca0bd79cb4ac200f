"""The developer console under /console: see the flow.

  views.py      the pages: orders, one order's timeline, webhook inbox, the simulator's deliveries,
                emails, test cards, the configuration doctor with the go-live checklist, demo scenarios
  timeline.py   one order's steps (Adyen calls, redirect, return, webhooks, state changes, emails)
  doctor.py     configuration doctor, Adyen endpoint check, go-live checklist (also `flask adyen check`)
  scenarios.py  one-click demo orders that end in each outcome (simulator mode)
  auth.py       open in simulator mode, a password in test mode, off in live mode unless enabled
  redact.py     the one filter everything shown passes through: no secret, masked shopper data
  cli.py        `flask adyen check`, `flask orders list`, `flask webhooks replay <id>`

The console reads the store and calls the existing services; no other room imports it.
"""

from flask import Blueprint

bp = Blueprint("console", __name__, url_prefix="/console")


def init_app(app):
    from shop.console import cli, views  # noqa: F401  (routes register on import)

    app.register_blueprint(bp)
    cli.init_app(app)
