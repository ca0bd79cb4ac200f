"""The simulator's console pages: its webhook outbox (Resend, Send a duplicate, each endpoint's
state as Adyen's Customer Area shows it, and what the Customer Area sends by itself: its test
notification and REPORT_AVAILABLE) and the one-click demo scenarios (scenarios.py).

A blueprint the console attaches (shop/console/__init__.py), so its access rules, headers and
redaction hold here too; listed in the console's menu.
"""

import logging

from flask import Blueprint, abort, current_app, flash, redirect, render_template, url_for
from sqlalchemy import select

from shop import console, worker
from shop.console.views import order_ids, page_of
from shop.simulator import scenarios, sender
from shop.simulator.models import SimWebhookDelivery

log = logging.getLogger(__name__)

bp = Blueprint("simulator_console", __name__, url_prefix="/console")
console.attach(bp)  # the console's gate, headers and redaction


# The simulator's webhook outbox --------------------------------------------------------------------


@bp.get("/deliveries")
def deliveries():
    page = page_of(select(SimWebhookDelivery).order_by(SimWebhookDelivery.id.desc()))
    return render_template(
        "simulator/console/deliveries.html",
        deliveries=page.rows,
        page=page,
        endpoints=sender.endpoints(),
        order_ids=order_ids({d.merchant_reference for d in page.rows}),
    )


def _back_to_deliveries(message, category="success"):
    """Say what was queued, wake the worker to send it now, and show the deliveries page again."""
    flash(message, category)
    worker.wake(current_app._get_current_object())
    return redirect(url_for("simulator_console.deliveries"), code=303)


@bp.post("/deliveries/<id:delivery_id>/resend")
def resend(delivery_id):
    if sender.resend(delivery_id):
        return _back_to_deliveries(f"Delivery #{delivery_id} will be sent again now.")
    return _back_to_deliveries(f"Delivery #{delivery_id} is queued or being sent already; it was not resent.", "error")


@bp.post("/deliveries/<id:delivery_id>/duplicate")
def duplicate(delivery_id):
    try:
        new_id = sender.enqueue_duplicate(delivery_id)
    except LookupError:
        abort(404)
    return _back_to_deliveries(f"Delivery #{new_id}, a duplicate of #{delivery_id}, will be sent now.")


@bp.post("/deliveries/customer-area-test")
def customer_area_test():
    new_id = sender.queue_customer_area_test()
    return _back_to_deliveries(
        f"Delivery #{new_id}: the Customer Area's test notification (test_AUTHORISATION_1), sent now."
    )


@bp.post("/deliveries/report-available")
def report_available():
    new_id = sender.queue_report_available()
    return _back_to_deliveries(
        f"Delivery #{new_id}: REPORT_AVAILABLE for today's payments accounting report, sent now."
    )


# Demo scenarios ----------------------------------------------------------------------------------------


@bp.get("/demo")
def demo():
    return render_template("simulator/console/demo.html", scenarios=scenarios.SCENARIOS.values())


@bp.post("/demo/<name>")
def run_scenario(name):
    if name not in scenarios.SCENARIOS:
        abort(404)
    try:
        order_id = scenarios.run(name)
    except scenarios.ScenarioError as error:
        log.warning("demo scenario %s stopped: %s", name, error)
        flash(f"The scenario stopped: {error}", "error")
        if error.order_id:
            return redirect(url_for("console.order", order_id=error.order_id), code=303)
        return redirect(url_for("simulator_console.demo"), code=303)
    return redirect(url_for("console.order", order_id=order_id), code=303)
