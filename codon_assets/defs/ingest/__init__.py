"""The ingest stage's definitions (autoloaded)."""
