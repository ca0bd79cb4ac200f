"""Webhook endpoint (placeholder)."""
