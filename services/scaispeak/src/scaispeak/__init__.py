"""ScaiSpeak: the text-to-speech service."""

__version__ = "0.1.0"
