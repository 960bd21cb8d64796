"""ScaiSpeak storage."""
