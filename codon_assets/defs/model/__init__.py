"""The model stage's definitions (autoloaded)."""
