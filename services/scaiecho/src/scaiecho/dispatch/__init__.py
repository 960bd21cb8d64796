"""Backend dispatch: A (a ScaiInfer node over gRPC) and B (the relay) behind one interface."""

from scaiecho.dispatch.dispatcher import Dispatcher
from scaiecho.dispatch.options import OriginalAudio, TranscribeOptions

__all__ = ["Dispatcher", "OriginalAudio", "TranscribeOptions"]
