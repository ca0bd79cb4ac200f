"""GET/POST /_sim/faults: a small page to inject and clear the simulator's faults by hand.

The developer console (/console) can show and trigger the same faults through shop.simulator.faults.
The simulator blueprint is exempt from CSRF (Adyen's clients carry no token), so this page, which
is the shop's own, checks the token itself.
"""

from flask import flash, redirect, render_template, request, url_for

from shop.security import csrf
from shop.simulator import bp, faults


@bp.get("/faults")
def fault_page():
    return render_template("simulator/faults.html", faults=faults.active(), choices=faults.choices())


@bp.post("/faults")
def fault_action():
    csrf.protect()
    form = request.form
    action = form.get("action", "")
    if action == "clear":
        fault_id = form.get("fault_id", "")
        removed = faults.clear(int(fault_id) if fault_id.isdigit() else None)
        flash(f"Cleared {removed} fault(s); held webhooks were released.", "success")
    elif action == "release_burst":
        waiting = faults.release_burst()
        flash(f"Burst released: {waiting} webhook(s) on their way.", "success")
    elif action == "inject":
        try:
            endpoint, kind = form.get("fault", "").split("|", 1)
            params = {}
            accepted = faults.KINDS[kind][2] if kind in faults.KINDS else {}
            for name in faults.NUMERIC_PARAMS:
                if name in accepted and form.get(name, "").strip():
                    params[name] = float(form[name])
            for name in faults.TEXT_PARAMS:
                if name in accepted and form.get(name, "").strip():
                    params[name] = form[name].strip()
            count = form.get("count", "").strip()
            fault = faults.inject(endpoint, kind, count=int(count) if count else None, **params)
        except ValueError as error:
            flash(f"Not injected: {error}", "error")
        else:
            flash(f"Injected: {fault['description']}", "success")
    return redirect(url_for("simulator.fault_page"), code=303)
