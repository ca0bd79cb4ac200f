"""The simulator's webhook sender (placeholder)."""


def deliver_due():
    """Deliver the webhooks that are due."""
