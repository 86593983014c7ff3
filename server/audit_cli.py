"""`switchyard audit verify FILE` and `switchyard audit export --config CONFIG`.

verify checks a JSONL audit trail's hash chain (server/control/audit_chain.py): a replica's
admin.audit_log_path, or the shared trail as export writes it. export writes the shared
trail from the configured control store, oldest first, to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from switchyard.runtimes.errors import SwitchyardError
from switchyard.server.audit_log import configured_audit_key
from switchyard.server.config import ConfigError, load_config
from switchyard.server.control.audit_chain import load_key, verify_file
from switchyard.server.control.factory import create_control_store
from switchyard.server.control.store import ControlStoreError


def add_audit_subcommand(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = commands.add_parser("audit", help="check or export the audit trail")
    actions = audit.add_subparsers(dest="audit_command", required=True)
    verify = actions.add_parser(
        "verify",
        help="check a JSONL audit trail's hash chain",
        description="Exit 0 when every record's hash and link to the one before it holds; "
        "exit 1 naming the first record edited, missing before it, out of order or "
        "unreadable.",
    )
    verify.add_argument("file", type=Path, help="an audit.jsonl or an `audit export` output")
    verify.add_argument(
        "--key-file",
        type=Path,
        default=None,
        help="the HMAC key the trail was written with (default: SWITCHYARD_AUDIT_KEY)",
    )
    verify.add_argument(
        "--from-start",
        action="store_true",
        help="a trail that does not begin at seq 1 (older records trimmed) is an error",
    )
    verify.set_defaults(handler=run_verify)
    export = actions.add_parser(
        "export",
        help="write the shared trail of the control store as JSONL to stdout",
        description="The shared audit trail of the config's control store (control.store: "
        "redis), oldest first, one chained record a line: `audit verify` accepts it.",
    )
    export.add_argument("--config", type=Path, required=True, help="the gateway's config file")
    export.add_argument(
        "--limit",
        type=int,
        default=None,
        help="the newest N records (default: all the store keeps, control.audit_max_records)",
    )
    export.set_defaults(handler=run_export)


def run_verify(args: argparse.Namespace) -> int:
    """Exit status: 0 intact, 1 a record is not, 2 the file or key cannot be read."""
    try:
        key = load_key(args.key_file)
        verdict = verify_file(args.file, key, args.from_start)
    except (OSError, ValueError) as exc:
        print(f"switchyard: {exc}", file=sys.stderr)
        return 2
    print(verdict.summary())
    return 0 if verdict.intact else 1


def run_export(args: argparse.Namespace) -> int:
    """Exit status: 0 written, 1 the store cannot be read, 2 the config is wrong."""
    try:
        config = load_config(args.config)
        key = configured_audit_key(config.admin)
    except (ConfigError, SwitchyardError) as exc:
        print(f"switchyard: {exc}", file=sys.stderr)
        return 2
    if config.control.store != "redis":
        print(
            "switchyard: control.store is memory: the shared trail lives in the gateway "
            "process; read GET /admin/v1/audit, or use control.store: redis",
            file=sys.stderr,
        )
        return 2
    limit = config.control.audit_max_records if args.limit is None else args.limit
    if limit < 1:
        print("switchyard: --limit must be 1 or more", file=sys.stderr)
        return 2

    async def read() -> list[str]:
        store = create_control_store(config.control, key)
        try:
            return [entry.to_json() for entry in await store.audit_trail(limit)]
        finally:
            await store.close()

    try:
        lines = asyncio.run(read())
    except ControlStoreError as exc:
        print(f"switchyard: cannot read the control store: {exc}", file=sys.stderr)
        return 1
    for line in lines:
        sys.stdout.write(line + "\n")
    return 0
