"""Command-line twins of the console: `flask adyen check`, `flask orders list`, `flask orders refund REFERENCE`,
`flask webhooks replay <id>`."""

import time

import click
from flask.cli import AppGroup
from sqlalchemy import select

from shop.console import doctor, redact
from shop.db import db
from shop.models import Notification, Order
from shop.money import format_amount, parse_amount
from shop.orders import refund_state, refunds
from shop.webhooks import processing

adyen_cli = AppGroup("adyen", help="Check the Adyen configuration and endpoint.")
orders_cli = AppGroup("orders", help="Look at orders, and refund them.")
webhooks_cli = AppGroup("webhooks", help="Work with stored webhooks.")

SYMBOLS = {
    doctor.OK: "ok  ",
    doctor.FAIL: "FAIL",
    doctor.WARN: "warn",
    doctor.TODO: "todo",
    doctor.MANUAL: "hand",
    doctor.SKIP: "skip",
}


def init_app(app):
    for group in (adyen_cli, orders_cli, webhooks_cli):
        app.cli.add_command(group)


def _item_line(item):
    return f"  [{SYMBOLS[item.status]}] {item.name}: {item.detail}"


@adyen_cli.command("check")
@click.option("--no-endpoint", is_flag=True, help="Do not call Adyen; check the settings only.")
def adyen_check(no_endpoint):
    """The configuration doctor: environment, settings set or not (never values), endpoint, KNET.

    Exit code 1 when a check fails (and, in live mode, when a go-live item is not done).
    """
    report = doctor.run(check_endpoint=not no_endpoint)
    click.echo(f"Environment: {report.environment}")
    for label, value in report.facts[1:]:
        click.echo(f"  {label}: {value}")
    click.echo("Settings (set or not; values are never shown):")
    width = max(len(name) for name, *_ in report.settings)
    for setting in report.settings:
        click.echo(f"  {setting.name.ljust(width)}  {setting.state:<17}  {setting.needed}")
    click.echo("Checks:")
    for item in report.checks:
        click.echo(_item_line(item))
    click.echo("Go-live checklist (Test and go live):")
    for item in report.go_live:
        click.echo(_item_line(item))
    if report.ok:
        click.echo("Result: OK")
        return
    click.echo("Result: FAILED", err=True)
    raise SystemExit(1)


@orders_cli.command("list")
@click.option("--limit", default=20, show_default=True, help="How many of the newest orders.")
def orders_list(limit):
    """The newest orders: id, reference, status, what the shopper was shown, amount, flags."""
    rows = db.session.execute(select(Order).order_by(Order.id.desc()).limit(max(1, min(limit, 1000)))).scalars().all()
    if not rows:
        click.echo("No orders yet.")
        return
    header = (
        f"{'ID':>5}  {'CREATED (UTC)':<19}  {'REFERENCE':<22}  {'STATUS':<18}  {'SHOWN':<12}  {'AMOUNT':>12}  "
        f"{'REFUNDED':>12}  FLAGS"
    )
    click.echo(header)
    for order in rows:
        flags = ", ".join(order.flags)
        created = order.created_at.strftime("%Y-%m-%d %H:%M:%S") if order.created_at else ""
        given_back = sum(r.amount_value for r in refund_state.refunds_of(order.id) if r.status == "succeeded")
        refunded = format_amount(given_back, order.currency) if given_back else "-"
        click.echo(
            f"{order.id:>5}  {created:<19}  {order.reference:<22}  {order.status:<18}  {order.result_code or '-':<12}  "
            f"{format_amount(order.amount_value, order.currency):>12}  {refunded:>12}  {flags or '-'}"
        )


@orders_cli.command("refund")
@click.argument("reference")
@click.option("--amount", help="In KWD, as 1.250 (at most 3 decimals). Default: what is left to refund.")
@click.option("--reason", type=click.Choice(refund_state.REASONS), help="Adyen's merchantRefundReason.")
@click.option("--reversal", is_flag=True, help="Cancel or refund (/reversals): the whole payment.")
@click.option(
    "--payment",
    help="The pspReference of the payment to give back. Default: the second payment of an order paid twice "
    "(flagged needs refund decision), else the order's.",
)
def orders_refund(reference, amount, reason, reversal, payment):
    """Refund a paid order, in full or in part, or cancel or refund it. Adyen's answer is an
    acknowledgement; the notification decides (see `flask orders list`)."""
    order = db.session.execute(select(Order).where(Order.reference == reference)).scalar_one_or_none()
    db.session.rollback()
    if order is None:
        raise click.ClickException(f"No order has the reference {reference}.")
    if reversal and amount is not None:
        raise click.ClickException("--reversal gives back the whole payment: leave out --amount.")
    try:
        fils = parse_amount(amount, order.currency) if amount is not None else None
    except ValueError as error:
        raise click.ClickException(f"--amount: {error}.") from None
    try:
        made = refunds.request_refund(
            order.id,
            amount_minor=fils,
            reason=reason,
            reversal=reversal,
            requested_by="cli",
            payment_psp_reference=payment,
        )
    except refunds.RefundOutcomeUnknown as error:
        raise click.ClickException(f"Refund saved, but {error}.") from None
    except refunds.RefundError as error:
        raise click.ClickException(f"Not refunded: {error}.") from None
    what = "Cancel or refund" if reversal else "Refund"
    click.echo(
        f"{what} {made.reference} of {format_amount(made.amount_value, made.currency)}: Adyen answered {made.status} "
        f"(pspReference {made.psp_reference or 'not known yet'}), of payment {made.payment_psp_reference}. "
        "The notification decides whether it is done."
    )


@webhooks_cli.command("replay")
@click.argument("notification_id", type=int)
@click.option("--wait", default=10.0, show_default=True, help="Seconds to wait for the result.")
def webhooks_replay(notification_id, wait):
    """Apply a stored webhook again. Idempotent: a webhook already applied changes nothing."""
    previous = processing.replay_now(notification_id)
    if previous is None:
        row = db.session.get(Notification, notification_id)
        db.session.rollback()
        if row is None:
            click.echo(f"No notification #{notification_id}.", err=True)
        else:
            click.echo(
                f"Notification #{notification_id} is {row.status}: only a processed or failed one can be replayed.",
                err=True,
            )
        raise SystemExit(1)
    click.echo(f"Notification #{notification_id} ({previous}) queued again.")
    # Applied here, unless a background worker was quicker; either way report what it did.
    deadline = time.monotonic() + wait
    while True:
        row = db.session.get(Notification, notification_id)
        status, note, error = row.status, row.note, row.last_error
        db.session.rollback()
        if status not in (processing.PENDING, processing.PROCESSING) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    click.echo(f"Status: {status}. {redact.text(note or error or '')}".strip())
    if status not in (processing.PROCESSED,):
        raise SystemExit(1)
