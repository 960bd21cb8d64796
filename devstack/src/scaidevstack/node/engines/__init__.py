"""The node's engines: speech-to-text, text-to-speech, speaker analysis (CPU, offline)."""
