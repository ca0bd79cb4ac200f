"""Simulator endpoints (placeholder)."""
