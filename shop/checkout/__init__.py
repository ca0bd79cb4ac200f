"""The payment flow: checkout form, /paymentMethods, /payments, redirect, return, result."""

from flask import Blueprint

bp = Blueprint("checkout", __name__)

from shop.checkout import views  # noqa: E402,F401
