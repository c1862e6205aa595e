"""Regenerate the gRPC/protobuf stubs from proto/hm.proto.

    python tools/gen_proto.py            # writes src/hmonitor/_pb/
    python tools/gen_proto.py --out DIR  # writes DIR/hmonitor/_pb/ (used by the freshness test)

The proto is mapped to ``hmonitor/_pb/hm.proto`` so the generated modules import each other
as ``hmonitor._pb.hm_pb2`` instead of a top-level ``hm_pb2``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grpc_tools import protoc  # a test/dev dependency: never imported by the package itself

ROOT = Path(__file__).resolve().parent.parent


def generate(out_root: Path) -> None:
    (out_root / "hmonitor" / "_pb").mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-Ihmonitor/_pb={ROOT / 'proto'}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        # Typed stubs for the services too (mypy-protobuf), so mypy checks calls through them.
        f"--plugin=protoc-gen-mypy_grpc={Path(sys.executable).parent / 'protoc-gen-mypy_grpc'}",
        f"--mypy_grpc_out={out_root}",
        "hmonitor/_pb/hm.proto",
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "src", help="root of the package tree")
    generate(parser.parse_args().out)


if __name__ == "__main__":
    main()
