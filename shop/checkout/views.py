"""Checkout views (placeholder)."""
