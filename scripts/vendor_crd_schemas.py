"""Vendor the OpenAPI schemas of the CRDs that k8s/ uses, for tests/k8s to validate against.

    python scripts/vendor_crd_schemas.py CRD.yaml [CRD.yaml ...]

Each argument is a CustomResourceDefinition as its project publishes it (KubeRay's
ray-operator/config/crd/bases/ray.io_rayservices.yaml, KEDA's
config/crd/bases/keda.sh_scaledobjects.yaml, prometheus-operator's
example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml). The schema of
its storage version (the one k8s/ writes) is written to
tests/k8s/crd_schemas/<group>_<kind>_<version>.json without its `description` texts (most of
the bytes; validation never reads them).
tests/k8s/crd_schemas/SOURCES.md records where the vendored files came from.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

OUT_DIR = Path(__file__).resolve().parent.parent / "tests" / "k8s" / "crd_schemas"


def without_descriptions(node: Any) -> Any:
    """`node` less every `description` text; a property *named* description is kept."""
    if isinstance(node, dict):
        return {
            key: without_descriptions(value)
            for key, value in node.items()
            if not (key == "description" and isinstance(value, str))
        }
    if isinstance(node, list):
        return [without_descriptions(value) for value in node]
    return node


def schema_file_name(group: str, kind: str, version: str) -> str:
    return f"{group}_{kind}_{version}.json"


def vendor(crd_path: Path, out_dir: Path = OUT_DIR) -> list[Path]:
    """Writes the schema of the storage version of the CRD at `crd_path`."""
    crd = yaml.safe_load(crd_path.read_text())
    if not isinstance(crd, dict) or crd.get("kind") != "CustomResourceDefinition":
        raise ValueError(f"{crd_path}: not a CustomResourceDefinition")
    spec = crd["spec"]
    written = []
    for version in spec["versions"]:
        if not version.get("storage"):
            continue
        schema = without_descriptions(version["schema"]["openAPIV3Schema"])
        path = out_dir / schema_file_name(spec["group"], spec["names"]["kind"], version["name"])
        path.write_text(json.dumps(schema, separators=(",", ":"), sort_keys=True) + "\n")
        written.append(path)
    return written


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    for name in argv:
        try:
            for path in vendor(Path(name)):
                print(path)
        except (OSError, ValueError, KeyError, yaml.YAMLError) as exc:
            print(f"vendor_crd_schemas: {name}: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
