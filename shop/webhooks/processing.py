"""Applies stored notifications to orders (placeholder)."""


def process_due():
    """Process the notifications that are due."""
