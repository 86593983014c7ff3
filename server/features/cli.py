"""`switchyard features load FILE --entity NAME`: write a feature file into Redis.

server/cli.py registers it with add_features_subcommand(commands); until then it also
runs as `python -m server.features.cli load FILE --entity NAME`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from switchyard.runtimes.errors import SwitchyardError
from switchyard.server.config import DEFAULT_CONFIG_PATH
from switchyard.server.features.config import (
    DEFAULT_REDIS_URL,
    FeastStoreConfig,
    FeatureConfigError,
    FeaturesConfig,
    RedisStoreConfig,
    load_features_section,
)
from switchyard.server.features.definitions import FeatureDefinitions
from switchyard.server.features.loader import load_file


def add_features_subcommand(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `features load` on the `switchyard` command's subparsers."""
    features = commands.add_parser("features", help="manage online features")
    actions = features.add_subparsers(dest="features_command", required=True)
    load = actions.add_parser(
        "load",
        help="write a CSV or Parquet feature file into Redis",
        description="Write the rows of a CSV or Parquet feature file into Redis as one hash "
        "per entity (HSET), in pipelined batches.",
    )
    load.add_argument("file", type=Path, help="a .csv or .parquet file: id column + fields")
    load.add_argument("--entity", required=True, help="the entity the rows are (e.g. user)")
    load.add_argument(
        "--config", type=Path, default=None, help="config file (default: the embedded demo)"
    )
    load.add_argument(
        "--redis-url", default=None, help="default: the config's Redis store, else localhost"
    )
    load.add_argument("--ttl-s", type=_positive_int, default=None, help="expire keys after N s")
    load.add_argument("--batch-size", type=_positive_int, default=1000, help="rows per pipeline")
    load.add_argument("--no-progress", action="store_true", help="print no progress line")
    load.set_defaults(handler=run_load)


def run_load(args: argparse.Namespace) -> int:
    """Exit status: 0 loaded, 1 the load failed, 2 the config or arguments are wrong."""
    try:
        config = _features_config(args.config)
        if isinstance(config.store, FeastStoreConfig):
            print(
                "switchyard: features.store is kind: feast; load its features with "
                "`feast materialize`, Switchyard reads them in Feast's layout",
                file=sys.stderr,
            )
            return 2
        entity = FeatureDefinitions.from_config(config).entity(args.entity)
    except (FeatureConfigError, SwitchyardError) as exc:
        print(f"switchyard: {exc}", file=sys.stderr)
        return 2
    redis_url = args.redis_url
    options: dict[str, Any] = {}
    if redis_url is None:
        store = config.store
        redis_url = DEFAULT_REDIS_URL
        if isinstance(store, RedisStoreConfig):
            redis_url, options = store.connection()
    try:
        load_file(
            args.file,
            entity,
            redis_url,
            ttl_s=args.ttl_s,
            batch_size_rows=args.batch_size,
            progress=None if args.no_progress else sys.stderr,
            connection_options=options,
        )
    except SwitchyardError as exc:
        print(f"switchyard: {exc}", file=sys.stderr)
        return 1
    return 0


def _features_config(path: Path | None) -> FeaturesConfig:
    if path is not None:
        config = load_features_section(path)
        if config is None:
            raise FeatureConfigError(str(path), ["features: this file has no features section"])
        return config
    config = load_features_section(DEFAULT_CONFIG_PATH)
    assert config is not None, "the embedded default config defines the demo's features"
    return config


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive integer")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchyard")
    add_features_subcommand(parser.add_subparsers(dest="command", required=True))
    # Accept both `load FILE ...` and `features load FILE ...`.
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv if argv[:1] == ["features"] else ["features", *argv])
    handler: Callable[[argparse.Namespace], int] = args.handler  # set by each subcommand
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
