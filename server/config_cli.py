"""`switchyard config schema` (the file's JSON Schema) and `switchyard config check FILE`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from switchyard.server.config import ConfigError, SwitchyardConfig, load_config
from switchyard.server.config_warnings import config_notes, config_warnings
from switchyard.server.config_yaml import load_yaml

EXIT_INVALID = 2


def config_json_schema() -> dict[str, Any]:
    """The JSON Schema of the config file (what editors validate it with)."""
    schema = SwitchyardConfig.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def _schema(args: argparse.Namespace) -> int:
    print(json.dumps(config_json_schema(), indent=2))
    return 0


def _check(args: argparse.Namespace) -> int:
    path: Path = args.file
    try:
        # The environment applies as it would at start: SWITCHYARD_HTTP_PORT=x is checked too.
        config = load_config(path)
    except ConfigError as exc:
        print(f"{exc.source}: invalid, {len(exc.errors)} error(s):", file=sys.stderr)
        for line in exc.errors:
            print(f"  {line}", file=sys.stderr)
        return EXIT_INVALID
    print(f"{path}: OK ({len(config.models)} model(s), {len(config.endpoints)} endpoint(s))")
    # Valid, so the file was read and parsed a moment ago: the raw document for the warnings.
    raw = load_yaml(path.read_text(), str(path))
    for line in config_warnings(config, raw):
        print(f"warning: {line}", file=sys.stderr)
    for line in config_notes(config):
        print(f"note: {line}", file=sys.stderr)
    return 0


def add_config_subcommand(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    config = subparsers.add_parser("config", help="the config file's schema and its validation")
    commands = config.add_subparsers(dest="config_command", required=True)
    schema = commands.add_parser("schema", help="print the config file's JSON Schema")
    schema.set_defaults(handler=_schema)
    check = commands.add_parser(
        "check", help="validate a config file; print every error with its key path"
    )
    check.add_argument("file", type=Path, help="the config file")
    check.set_defaults(handler=_check)
