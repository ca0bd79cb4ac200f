"""The simulator's own tables (placeholder)."""
