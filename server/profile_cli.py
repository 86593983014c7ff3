"""`switchyard profile build`: a model version's reference profile from training rows.

The data file (CSV with a header, or Parquet) holds either the model's input columns (one
input tensor: its columns in order; a Recommend model: its feature names, `user.activity`,
in any order), or, for a model with feature inputs, the (user_id, item_id)-style id columns
of its entities, joined with the feature files (`features.store.seed_files`) through the row
assembly serving uses. The model runs on the rows (in chunks) to profile its outputs too.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from switchyard.runtimes.base import Runtime
from switchyard.runtimes.datatypes import OIP_TO_NUMPY
from switchyard.runtimes.errors import SwitchyardError
from switchyard.server.config import ConfigError, load_config
from switchyard.server.drift_profile import (
    DEFAULT_BINS,
    Profile,
    ProfileError,
    build_profile,
    default_profile_path,
)
from switchyard.server.features.definitions import FeatureDefinitions, training_matrix
from switchyard.server.features.files import read_table
from switchyard.server.model_config import ModelConfig, ModelVersionConfig

CHUNK_ROWS = 4096  # rows per inference call while profiling outputs


def add_profile_subcommand(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    profile = commands.add_parser("profile", help="reference profiles for drift")
    actions = profile.add_subparsers(dest="profile_command", required=True)
    build = actions.add_parser(
        "build",
        help="build a model version's reference profile from training rows",
        description="Bin the training rows' input columns and the model's outputs on them "
        "into a reference profile (JSON) that online drift compares serving with.",
    )
    build.add_argument("--config", type=Path, required=True, help="the config serving the model")
    build.add_argument("--model", required=True, help="the model's name")
    build.add_argument("--version", default="", help="its version (default: the served default)")
    build.add_argument(
        "--data",
        type=Path,
        required=True,
        help=".csv or .parquet: the input columns, or a Recommend model's entity id columns",
    )
    build.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to write it (default: <model file stem>.profile.json beside the model)",
    )
    build.add_argument("--bins", type=int, default=DEFAULT_BINS, help="quantile bins per column")
    build.set_defaults(handler=_build)


def _build(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        model = _model(config.models, args.model)
        version = _version(model, args.version)
        out = args.out
        if out is None:
            if version.path is None:
                raise ProfileError("the version has no model file to write beside: give --out")
            out = default_profile_path(version.path)
        columns = read_columns(args.data)
        definitions = FeatureDefinitions.from_config(config.features)
        seed_files = getattr(config.features.store, "seed_files", {})
        profile = profile_version(model, version, columns, definitions, seed_files, args.bins)
        profile.save(out)
    except (ConfigError, ProfileError, SwitchyardError, OSError) as exc:
        print(f"switchyard profile build: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}: {profile.rows} rows, {len(profile.inputs)} input columns, "
          f"{len(profile.outputs)} output columns")  # fmt: skip
    return 0


def _model(models: Sequence[ModelConfig], name: str) -> ModelConfig:
    for model in models:
        if model.name == name:
            return model
    known = ", ".join(m.name for m in models) or "none"
    raise ProfileError(f"the config has no model '{name}' (models: {known})")


def _version(model: ModelConfig, name: str) -> ModelVersionConfig:
    wanted = name or model.served_default_version
    for version in model.versions:
        if version.version == wanted:
            return version
    known = ", ".join(v.version for v in model.versions)
    raise ProfileError(f"model '{model.name}' has no version '{wanted}' (versions: {known})")


def read_columns(path: Path) -> dict[str, list[Any]]:
    """A data file's columns by header name, values as read (text for CSV)."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        try:
            with path.open(newline="") as file:
                rows = list(csv.reader(file))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise ProfileError(f"cannot read {path}: {exc}") from None
        if not rows:
            raise ProfileError(f"{path} is empty: it needs a header row and data rows")
        header, body = rows[0], rows[1:]
        if any(len(row) != len(header) for row in body):
            raise ProfileError(f"{path}: every row needs the header's {len(header)} fields")
        return {name: [row[i] for row in body] for i, name in enumerate(header)}
    if suffix in (".parquet", ".pq"):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ProfileError("reading Parquet needs pyarrow (pip install pyarrow)") from None
        try:
            table = pq.read_table(path)
        except (OSError, ValueError) as exc:
            raise ProfileError(f"cannot read {path}: {exc}") from None
        return {str(name): table.column(name).to_pylist() for name in table.column_names}
    raise ProfileError(f"{path}: unsupported file type (use .csv or .parquet)")


def _numbers(columns: Mapping[str, list[Any]], names: Sequence[str], dtype: np.dtype) -> np.ndarray:
    try:
        return np.column_stack([np.asarray(columns[n], dtype=np.float64) for n in names]).astype(
            dtype
        )
    except (ValueError, TypeError) as exc:
        raise ProfileError(f"the columns {list(names)} must be numbers: {exc}") from None


def model_rows(
    model: ModelConfig,
    input_name: str,
    dtype: np.dtype,
    columns: Mapping[str, list[Any]],
    definitions: FeatureDefinitions,
    seed_files: Mapping[str, Path],
) -> tuple[np.ndarray, list[str] | None]:
    """The input matrix the data gives, and its column names (a Recommend model's features)."""
    layout = definitions.layouts.get(model.name)
    if layout is None:
        return _numbers(columns, list(columns), dtype), None
    names = list(layout.feature_names)
    if all(name in columns for name in names):
        return _numbers(columns, names, dtype), names
    id_columns = {part.entity.name: part.entity.id_column for part in layout.parts}
    if not all(column in columns for column in id_columns.values()):
        wanted = ", ".join(id_columns.values())
        raise ProfileError(
            f"model '{model.name}' takes feature rows: the data needs its feature columns "
            f"({', '.join(names)}) or the id columns {wanted}"
        )
    missing = sorted(set(id_columns) - set(seed_files))
    if missing:
        raise ProfileError(
            f"joining ids needs the feature files of {missing} (features.store.seed_files)"
        )
    tables = {
        entity: read_table(seed_files[entity], definitions.entity(entity)) for entity in id_columns
    }
    ids = {entity: [str(v) for v in columns[column]] for entity, column in id_columns.items()}
    return training_matrix(layout, tables, ids).astype(dtype), names


def profile_version(
    model: ModelConfig,
    version: ModelVersionConfig,
    columns: Mapping[str, list[Any]],
    definitions: FeatureDefinitions,
    seed_files: Mapping[str, Path],
    bins: int = DEFAULT_BINS,
) -> Profile:
    # Here, not at import: `switchyard --help` need not load the runtimes.
    from switchyard.server.metrics import ServerMetrics
    from switchyard.server.repository import create_runtime

    runtime = create_runtime(model, version, ServerMetrics())
    try:
        signature = runtime.load()
        if len(signature.inputs) != 1:
            tensors = [spec.name for spec in signature.inputs]
            raise ProfileError(f"profiles are built for models of one input tensor, not {tensors}")
        spec = signature.inputs[0]
        dtype = OIP_TO_NUMPY.get(spec.datatype)
        if dtype is None or dtype.kind not in "biuf":
            raise ProfileError(f"input '{spec.name}' is {spec.datatype}: only numbers are binned")
        x, names = model_rows(model, spec.name, dtype, columns, definitions, seed_files)
        if len(x) == 0:
            raise ProfileError("the data has no rows")
        width = spec.shape[-1] if len(spec.shape) == 2 else -1
        if width not in (-1, x.shape[1]):
            raise ProfileError(
                f"input '{spec.name}' takes {width} columns, the data has {x.shape[1]}"
            )
        output_names = [o.name for o in signature.outputs]
        chunks = asyncio.run(_infer_chunks(runtime, spec.name, x, output_names))
        outputs = {n: np.concatenate([c[n] for c in chunks]) for n in output_names}
    finally:
        runtime.close()
    input_names = None if names is None else {spec.name: names}
    return build_profile(
        model.name, version.version, {spec.name: x}, outputs, input_names=input_names, bins=bins
    )


async def _infer_chunks(
    runtime: Runtime, input_name: str, x: np.ndarray, output_names: list[str]
) -> list[dict[str, np.ndarray]]:
    return [
        await runtime.infer({input_name: x[start : start + CHUNK_ROWS]}, output_names)
        for start in range(0, len(x), CHUNK_ROWS)
    ]
