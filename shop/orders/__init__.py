"""Orders and their state machine."""
