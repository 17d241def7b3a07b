"""The features stage's definitions (autoloaded)."""
