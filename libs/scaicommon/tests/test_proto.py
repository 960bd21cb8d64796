"""The committed gRPC stubs are exactly what protoc generates from proto/."""

from __future__ import annotations

from pathlib import Path

from scaicommon._proto.generate import SRC, generate


def test_committed_stubs_match_a_fresh_generation(tmp_path: Path) -> None:
    fresh = generate(tmp_path)
    assert [p.name for p in fresh] == [
        "audio_node_pb2.py",
        "audio_node_pb2.pyi",
        "audio_node_pb2_grpc.py",
    ]
    committed = SRC / "scaicommon" / "_proto" / "scaiinfer" / "v1"
    for path in fresh:
        assert path.read_bytes() == (committed / path.name).read_bytes(), (
            f"{path.name} differs from a fresh generation: run `make proto` and commit"
        )
