"""Generate the gRPC stubs of protos/ into src/polypsynth/serve/_proto (or another folder).

grpc_tools writes absolute imports that follow the proto package (`from polypsynth.v1 import
sampler_pb2`); they are rewritten to the stubs' real place inside the polypsynth package.

    python scripts/gen_proto.py [OUT_DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO = "polypsynth/v1/sampler.proto"
PACKAGE = "polypsynth.serve._proto"


def generate(out: Path) -> list[Path]:
    from grpc_tools import protoc

    out.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{ROOT / 'protos'}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        str(ROOT / "protos" / PROTO),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    files = sorted((out / "polypsynth" / "v1").glob("sampler_pb2*"))
    for f in files:
        text = f.read_text().replace("from polypsynth.v1 import", f"from {PACKAGE}.polypsynth.v1 import")
        f.write_text(text)
    for folder in (out / "polypsynth", out / "polypsynth" / "v1"):
        (folder / "__init__.py").write_text("")
    return files


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "src" / "polypsynth" / "serve" / "_proto")
