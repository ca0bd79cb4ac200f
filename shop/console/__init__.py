"""The developer console under /console: see the flow.

  views.py      the pages: orders, one order's timeline, webhook inbox, emails, test cards, the
                configuration doctor with the go-live checklist
  timeline.py   one order's steps (Adyen calls, redirect, return, webhooks, state changes, emails)
  doctor.py     configuration doctor, Adyen endpoint check, go-live checklist (also `flask adyen check`)
  auth.py       open in simulator mode, a password in test mode, off in live mode unless enabled
  redact.py     the one filter everything shown passes through: no secret, masked shopper data
  cli.py        `flask adyen check`, `flask orders list`, `flask webhooks replay <id>`

A plug-in adds pages of its own (the simulator: its webhook outbox, demo scenarios): a blueprint it
`attach`es, so that the console's access rules, headers and redaction hold there too, listed in
the console's menu with `add_page`, and templates for the named places of the console's pages
(shop/hooks.py). The console reads the store and calls the existing services; no room imports it.
"""

from flask import Blueprint

bp = Blueprint("console", __name__, url_prefix="/console")


def init_app(app):
    from shop.console import cli, views  # noqa: F401  (routes register on import)

    app.extensions["console_pages"] = []
    app.register_blueprint(bp)
    cli.init_app(app)


def attach(blueprint):
    """Give a plug-in's blueprint the console's gate (who may open it), headers and redaction, and
    the context its templates (extending console/base.html) need. Once, where the blueprint is made."""
    from shop.console import views

    blueprint.before_request(views.gate)
    blueprint.after_request(views.console_headers)
    blueprint.context_processor(views.console_context)


def add_page(app, endpoint, label):
    """List a plug-in's page in the console's menu, after the console's own."""
    app.extensions["console_pages"].append((endpoint, label))
