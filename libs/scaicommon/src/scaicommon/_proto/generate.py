"""Generate the ScaiInfer gRPC stubs: ``python -m scaicommon._proto.generate [OUT_DIR]``.

protoc runs with ``-Iscaicommon/_proto=<repo>/proto`` so that the generated modules import
each other as ``scaicommon._proto.scaiinfer.v1``. ``OUT_DIR`` defaults to the ``src`` folder
of scaicommon (the committed stubs); the drift test passes a temp dir.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

PROTO_FILES = ("scaiinfer/v1/audio_node.proto",)
SRC = Path(__file__).resolve().parents[2]
REPO = SRC.parents[2]


def generate(out_dir: Path, proto_root: Path = REPO / "proto") -> list[Path]:
    """Run protoc (grpcio-tools) into ``out_dir``; return the generated files."""
    from grpc_tools import protoc  # dev dependency: only needed to regenerate

    include = str(resources.files("grpc_tools") / "_proto")
    for name in PROTO_FILES:
        args = [
            "protoc",
            f"-Iscaicommon/_proto={proto_root}",
            f"-I{include}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            f"scaicommon/_proto/{name}",
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed for {name}")
    base = out_dir / "scaicommon" / "_proto" / "scaiinfer" / "v1"
    return sorted(p for p in base.iterdir() if p.suffix in (".py", ".pyi"))


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else SRC
    for path in generate(target):
        print(path)
