"""The automation stage's definitions (autoloaded)."""
