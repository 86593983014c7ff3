"""Regenerate the Python gRPC stubs from the .proto files in this folder.

Run from the repository root: `python -m protos.generate`. With `--check`, regenerate into a
temporary folder and exit non-zero when the committed stubs differ (CI runs this). The
messages go into a private descriptor pool (see _use_private_pool).
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
    for proto in proto_files:
        _use_private_pool(out_dir / "protos" / f"{proto.stem}_pb2.py")
    return [
        out_dir / "protos" / f"{proto.stem}{suffix}"
        for proto in proto_files
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
    ]


GENERATED_POOL_LINE = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
PRIVATE_POOL_LINES = (
    "# Switchyard: a pool of our own, so these `inference.*` messages can share a process with\n"
    "# tritonclient's, which register the same names in the default pool.\n"
    "_POOL = _descriptor_pool.DescriptorPool()\n"
    "DESCRIPTOR = _POOL.AddSerializedFile("
)


def _use_private_pool(pb2_path: Path) -> None:
    """Register the file's messages in a private descriptor pool instead of the default."""
    text = pb2_path.read_text()
    if GENERATED_POOL_LINE not in text:
        raise SystemExit(f"{pb2_path}: protoc output changed; update protos/generate.py")
    pb2_path.write_text(text.replace(GENERATED_POOL_LINE, PRIVATE_POOL_LINES, 1))


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
