"""Constraint compilers and the logits processor (no web framework here)."""
