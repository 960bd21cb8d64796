"""scaicommon: the library ScaiEcho and ScaiSpeak share."""

__version__ = "0.1.0"
