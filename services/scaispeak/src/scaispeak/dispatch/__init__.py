"""Backend dispatch: A (a ScaiInfer node over gRPC) and B (the relay) behind one interface."""

from scaispeak.dispatch.dispatcher import SpeakDispatcher
from scaispeak.dispatch.params import SynthesisParams, SynthesisProgress
from scaispeak.dispatch.text import split_text

__all__ = ["SpeakDispatcher", "SynthesisParams", "SynthesisProgress", "split_text"]
