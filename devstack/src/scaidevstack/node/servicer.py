"""The ``scaiinfer.v1.AudioNode`` servicer: every RPC, composed from one mixin per engine."""

from __future__ import annotations

from typing import Any

from scaicommon._proto.scaiinfer.v1 import audio_node_pb2 as pb
from scaicommon._proto.scaiinfer.v1 import audio_node_pb2_grpc as pb_grpc
from scaidevstack.node.info import build_node_info
from scaidevstack.node.servicer_base import rpc
from scaidevstack.node.servicer_speaker import SpeakerServicer
from scaidevstack.node.servicer_stt import SttServicer
from scaidevstack.node.servicer_tts import TtsServicer


class AudioNodeServicer(SttServicer, TtsServicer, SpeakerServicer, pb_grpc.AudioNodeServicer):
    """All AudioNode RPCs over one :class:`~scaidevstack.node.state.NodeState`."""

    @rpc()
    async def GetNodeInfo(self, request: pb.GetNodeInfoRequest, context: Any) -> pb.NodeInfo:
        """Identity, engines, loaded models and live load (never refused, never loads)."""
        return build_node_info(self.state)
