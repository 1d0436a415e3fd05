"""Training objectives as pure tensor functions (no modules, no state)."""
