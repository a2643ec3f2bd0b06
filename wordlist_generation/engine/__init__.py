"""Model loading and generation (no web framework here)."""
