"""Who may open the console.

simulator mode: open (everything in it is made up, and it is a laptop demo);
test mode:      a login with CONSOLE_PASSWORD;
live mode:      404 unless CONSOLE_ENABLED=true, and then the login.
Without CONSOLE_PASSWORD in test or live mode the console stays locked and says how to enable it.
The session keeps an HMAC of the password (keyed by SECRET_KEY), so changing the password logs
everybody out; the comparison is constant-time.
"""

import hashlib
import hmac

from flask import abort, current_app, redirect, render_template, request, session, url_for
from flask_wtf import FlaskForm
from wtforms import HiddenField, PasswordField
from wtforms.validators import InputRequired

SESSION_KEY = "console_auth"
OPEN_ENDPOINTS = ("console.login", "console.logout")


class LoginForm(FlaskForm):
    password = PasswordField("Console password", validators=[InputRequired("Enter the console password.")])
    next = HiddenField()


def _mode():
    return current_app.config["ADYEN_ENVIRONMENT"]


def is_open():
    return _mode() == "simulator"


def _proof(password):
    key = (current_app.config.get("SECRET_KEY") or "").encode("utf-8")
    return hmac.new(key, b"console-login:" + password.encode("utf-8"), hashlib.sha256).hexdigest()


def password_matches(candidate):
    expected = current_app.config.get("CONSOLE_PASSWORD") or ""
    if not expected or not isinstance(candidate, str):
        return False
    return hmac.compare_digest(candidate.encode("utf-8"), expected.encode("utf-8"))


def logged_in():
    if is_open():
        return True
    password = current_app.config.get("CONSOLE_PASSWORD")
    proof = session.get(SESSION_KEY)
    if not password or not isinstance(proof, str):
        return False
    return hmac.compare_digest(proof.encode("ascii", "replace"), _proof(password).encode("ascii"))


def log_in():
    session[SESSION_KEY] = _proof(current_app.config["CONSOLE_PASSWORD"])


def log_out():
    session.pop(SESSION_KEY, None)


def safe_next(target):
    """Only a path inside the console, never another site."""
    if isinstance(target, str) and target.startswith("/console") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("console.orders")


def gate():
    """before_request of the console blueprint: None to go on, or the answer instead of the page."""
    mode = _mode()
    if mode == "live" and not current_app.config.get("CONSOLE_ENABLED"):
        abort(404)
    if mode == "simulator":
        return None
    if not current_app.config.get("CONSOLE_PASSWORD"):
        return render_template("console/locked.html"), 403
    if request.endpoint in OPEN_ENDPOINTS or logged_in():
        return None
    return redirect(url_for("console.login", next=request.full_path.rstrip("?")), code=303)
