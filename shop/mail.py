"""Shopper emails (placeholder)."""


def send_due():
    """Send the emails that are due."""
