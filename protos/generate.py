"""Regenerate the Python gRPC stubs from the .proto files in this folder.

Run: `python -m switchyard.protos.generate`. With `--check`, regenerate into a
temporary folder and exit non-zero when the committed stubs differ (CI runs this). The
messages go into a private descriptor pool (see _use_private_pool).
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

PROTOS_DIR = Path(__file__).resolve().parent
WELL_KNOWN_PROTOS = resources.files("grpc_tools") / "_proto"
# The package path the stubs are imported under; protoc derives module names from it.
PACKAGE_PATH = Path("switchyard", "protos")


def generate(out_dir: Path) -> list[Path]:
    """Write *_pb2.py, *_pb2.pyi and *_pb2_grpc.py for every .proto into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    proto_files = sorted(PROTOS_DIR.glob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        # protoc names a module after the .proto's path under -I: laying the files out as
        # switchyard/protos/*.proto makes the stubs import each other and register as
        # `switchyard.protos.<name>_pb2`, the names they are installed under.
        root = Path(tmp)
        (root / PACKAGE_PATH).mkdir(parents=True)
        for proto in proto_files:
            shutil.copyfile(proto, root / PACKAGE_PATH / proto.name)
        for proto in proto_files:
            args = [
                "grpc_tools.protoc",
                f"-I{root}",
                f"-I{WELL_KNOWN_PROTOS}",  # google/protobuf/duration.proto (feast_core.proto)
                f"--python_out={root}",
                f"--pyi_out={root}",
                f"--grpc_python_out={root}",
                str(PACKAGE_PATH / proto.name),
            ]
            if protoc.main(args) != 0:
                raise SystemExit(f"protoc failed on {proto}")
        written = []
        for proto in proto_files:
            for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
                target = out_dir / f"{proto.stem}{suffix}"
                shutil.copyfile(root / PACKAGE_PATH / target.name, target)
                written.append(target)
    for proto in proto_files:
        _use_private_pool(out_dir / f"{proto.stem}_pb2.py")
    return written


GENERATED_POOL_LINE = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
PRIVATE_POOL_LINES = (
    "# Switchyard: a pool of our own, so these `inference.*` messages can share a process with\n"
    "# tritonclient's, which register the same names in the default pool.\n"
    "_POOL = _descriptor_pool.DescriptorPool()\n"
    "DESCRIPTOR = _POOL.AddSerializedFile("
)


# Feast's messages import each other and google's Duration, so they share one pool that
# holds those too (feast_pool.py); `feast.*` names must stay out of the default pool, where
# the feast package registers them when both are imported in one process.
FEAST_POOL_LINES = (
    "# Switchyard: the Feast subset's own pool (switchyard/protos/feast_pool.py), apart from\n"
    "# the default pool where the feast package registers the same names.\n"
    "from switchyard.protos.feast_pool import POOL as _POOL\n"
    "DESCRIPTOR = _POOL.AddSerializedFile("
)


def _use_private_pool(pb2_path: Path) -> None:
    """Register the file's messages in a private descriptor pool instead of the default."""
    text = pb2_path.read_text()
    if GENERATED_POOL_LINE not in text:
        raise SystemExit(f"{pb2_path}: protoc output changed; update {__name__}")
    lines = FEAST_POOL_LINES if pb2_path.name.startswith("feast_") else PRIVATE_POOL_LINES
    pb2_path.write_text(text.replace(GENERATED_POOL_LINE, lines, 1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when the stubs are stale")
    args = parser.parse_args()
    if not args.check:
        for path in generate(PROTOS_DIR):
            print(f"wrote {path}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        stale = [
            fresh.name
            for fresh in generate(Path(tmp))
            if not (PROTOS_DIR / fresh.name).exists()
            or not filecmp.cmp(fresh, PROTOS_DIR / fresh.name, shallow=False)
        ]
    if stale:
        print(f"stale generated stubs (run `python -m {__name__}`):", *stale, sep="\n  ")
        return 1
    print("generated stubs are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
