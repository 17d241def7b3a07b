"""The design stage's definitions (autoloaded)."""
