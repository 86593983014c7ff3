"""Regenerate the Python gRPC stubs from the .proto files in this folder.

Run from the repository root: `python -m protos.generate`. With `--check`, regenerate into a
temporary folder and exit non-zero when the committed stubs differ (CI runs this).
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

PROTOS_DIR = Path(__file__).resolve().parent
REPO_ROOT = PROTOS_DIR.parent


def generate(out_dir: Path) -> list[Path]:
    """Write *_pb2.py, *_pb2.pyi and *_pb2_grpc.py for every .proto under out_dir/protos."""
    (out_dir / "protos").mkdir(parents=True, exist_ok=True)
    proto_files = sorted(PROTOS_DIR.glob("*.proto"))
    for proto in proto_files:
        # Generating from the repository root makes the stubs import each other as
        # `protos.<name>_pb2`, the module name they are registered under everywhere.
        args = [
            "grpc_tools.protoc",
            f"-I{REPO_ROOT}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(proto.relative_to(REPO_ROOT)),
        ]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed on {proto}")
    return [
        out_dir / "protos" / f"{proto.stem}{suffix}"
        for proto in proto_files
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when the stubs are stale")
    args = parser.parse_args()
    if not args.check:
        for path in generate(REPO_ROOT):
            print(f"wrote {path.relative_to(REPO_ROOT)}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        stale = [
            fresh.relative_to(tmp)
            for fresh in generate(Path(tmp))
            if not (REPO_ROOT / fresh.relative_to(tmp)).exists()
            or not filecmp.cmp(fresh, REPO_ROOT / fresh.relative_to(tmp), shallow=False)
        ]
    if stale:
        print("stale generated stubs (run `python -m protos.generate`):", *stale, sep="\n  ")
        return 1
    print("generated stubs are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
