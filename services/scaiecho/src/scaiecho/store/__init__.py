"""ScaiEcho store."""
