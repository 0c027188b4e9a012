"""Dataset readers, the packed store and the synthetic sample writer (no model, no ops)."""
