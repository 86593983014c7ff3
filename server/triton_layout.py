"""A Triton-layout model repository read into Switchyard's model configs.

The layout is Triton's: `ROOT/<model>/config.pbtxt` (optional) and
`ROOT/<model>/<version>/model.onnx`, where `<version>` is a positive integer with no leading
zero (other names are skipped, as Triton skips them) and the file name may be changed by
`default_model_filename`. config.pbtxt is a Triton ModelConfig in protobuf text format; a
load request may pass one as JSON instead, which replaces the file.

How a ModelConfig maps onto Switchyard's:
- platform `onnxruntime_onnx` or backend `onnxruntime`, or neither (ONNX is assumed): anything
  else is refused, as Switchyard runs ONNX models only.
- version_policy (default: latest, 1 version): latest N is the N highest version numbers; all;
  specific lists versions, each of which must exist. The highest selected one is the default.
- max_batch_size with Triton's meaning: > 0, the model has a batch dimension that `dims` leave
  out; 0, no batching. Without a config.pbtxt, Switchyard's own default applies (batching
  when every tensor has a variable first dimension), as Triton's auto-completion would.
- dynamic_batching: max_queue_delay_microseconds and preferred_batch_size are honoured.
  Without it Switchyard still batches what is queued when a batch starts, with no delay
  (max_queue_delay_s 0), where Triton would run requests one by one.
- instance_group: the counts (1 per group by default) add up to the instances run at once;
  KIND_GPU runs on CUDA (CPU as fallback), KIND_CPU on the CPU, KIND_AUTO ONNX Runtime's
  best available provider.
Every field set that Switchyard does not honour, declared by our message or not, comes back
as one warning naming it; such a field never stops the load.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from switchyard.protos import open_inference_pb2 as pb
from switchyard.runtimes.errors import ModelLoadError
from switchyard.server.config_base import error_lines
from switchyard.server.model_config import (
    BatchingConfig,
    ModelConfig,
    ModelVersionConfig,
    OnnxRuntimeOptions,
)
from switchyard.server.triton_config_file import (
    parse_config_json,
    parse_config_text,
    unhonoured_fields,
)

CONFIG_FILE_NAME = "config.pbtxt"
DEFAULT_MODEL_FILENAME = "model.onnx"
ONNX_PLATFORM = "onnxruntime_onnx"
ONNX_BACKEND = "onnxruntime"
_VERSION_DIR_NAME = re.compile(r"[1-9][0-9]*")
_US_PER_S = 1_000_000
_GPU_PROVIDERS = ["CUDAExecutionProvider", "CPUExecutionProvider"]
_CPU_PROVIDERS = ["CPUExecutionProvider"]

# (path relative to the model directory, size in bytes, mtime in ns) of every file under it.
RepositoryStamp = tuple[tuple[str, int, int], ...]


@dataclass(frozen=True)
class RepositoryModel:
    """One model of the repository, ready to load."""

    config: ModelConfig  # versions with absolute paths, in ascending order
    triton_config: pb.ModelConfig  # as read, name, platform and backend filled in
    warnings: tuple[str, ...]  # the fields set that Switchyard does not honour
    stamp: RepositoryStamp  # repository_stamp() just before the files were read


def list_models(root: Path) -> list[str]:
    """The model directories of the repository, sorted; files and hidden entries skipped."""
    try:
        entries = list(root.iterdir())
    except OSError as exc:
        raise ModelLoadError(f"model repository {root}: cannot list it: {exc.strerror}") from exc
    return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def repository_stamp(root: Path, name: str) -> RepositoryStamp:
    """A cheap fingerprint of the model directory: it changes when a file under it is added,
    removed, resized or rewritten. Empty when the directory is gone."""
    model_dir = root / name
    entries: list[tuple[str, int, int]] = []
    seen_dirs: set[tuple[int, int]] = set()
    pending = [model_dir]
    while pending:
        directory = pending.pop()
        try:
            status = directory.stat()
            children = list(os.scandir(directory))
        except OSError:
            continue  # gone meanwhile: the next poll sees the rest of the change
        if (status.st_dev, status.st_ino) in seen_dirs:
            continue  # a symbolic link back up the tree
        seen_dirs.add((status.st_dev, status.st_ino))
        for child in children:
            try:
                if child.is_dir():
                    pending.append(Path(child.path))
                    continue
                child_status = child.stat()
            except OSError:
                continue  # a dangling link or a file removed meanwhile
            relative = Path(child.path).relative_to(model_dir).as_posix()
            entries.append((relative, child_status.st_size, child_status.st_mtime_ns))
    return tuple(sorted(entries))


def read_model(root: Path, name: str, config_json: str | None = None) -> RepositoryModel:
    """The model `name` of the repository, with its config.pbtxt, or `config_json` (Triton's
    ModelConfig as JSON) in its place; ModelLoadError saying which file is wrong and how."""
    model_dir = _model_dir(root, name)
    stamp = repository_stamp(root, name)
    config_path = model_dir / CONFIG_FILE_NAME
    if config_json is not None:
        source, label = f"model '{name}': the load request's config JSON", "config JSON"
        triton_config, unknown = parse_config_json(config_json, source)
    elif config_path.exists():
        source, label = str(config_path), CONFIG_FILE_NAME
        triton_config, unknown = parse_config_text(_read_text(config_path), source)
    else:
        source, label = str(model_dir), CONFIG_FILE_NAME
        triton_config, unknown = pb.ModelConfig(), []
    warnings = [
        f"{label}: {path} is not supported by Switchyard; ignored"
        for path in (*unknown, *unhonoured_fields(triton_config))
    ]
    _check_identity(triton_config, name, source)
    versions = _selected_versions(model_dir, triton_config.version_policy, source)
    model_filename = triton_config.default_model_filename or DEFAULT_MODEL_FILENAME
    if Path(model_filename).name != model_filename or model_filename in (".", ".."):
        raise ModelLoadError(
            f"{source}: default_model_filename must be a file name, got {model_filename!r}"
        )
    version_configs = []
    for version in versions:
        model_path = (model_dir / str(version) / model_filename).absolute()
        if not model_path.is_file():
            raise ModelLoadError(f"{source}: version {version} has no model file {model_path}")
        version_configs.append(ModelVersionConfig(version=str(version), path=model_path))
    has_config = config_json is not None or config_path.exists()
    batching = _batching(triton_config, has_config, source, label, warnings)
    try:
        config = ModelConfig(
            name=name,
            versions=version_configs,
            default_version=str(versions[-1]),
            runtime_options=_runtime_options(triton_config, label, warnings),
            batching=batching,
        )
    except ValidationError as exc:
        raise ModelLoadError(f"{source}: {'; '.join(error_lines(exc))}") from exc
    return RepositoryModel(config, triton_config, tuple(warnings), stamp)


def _model_dir(root: Path, name: str) -> Path:
    if not name or name in (".", "..") or Path(name).name != name or name.startswith("."):
        raise ModelLoadError(f"model repository {root}: {name!r} is not a model directory name")
    model_dir = root / name
    if not model_dir.is_dir():
        raise ModelLoadError(f"model repository {root}: no model directory {model_dir}")
    return model_dir


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelLoadError(f"{path}: cannot read it: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ModelLoadError(f"{path}: not UTF-8 text: {exc}") from exc


def _check_identity(triton_config: pb.ModelConfig, name: str, source: str) -> None:
    """Refuse another model's name and what Switchyard does not run; fill in the defaults."""
    if triton_config.name and triton_config.name != name:
        raise ModelLoadError(
            f"{source}: name '{triton_config.name}' differs from the model directory '{name}'"
        )
    platform, backend = triton_config.platform, triton_config.backend
    if platform not in ("", ONNX_PLATFORM) or backend not in ("", ONNX_BACKEND):
        asked = " and ".join(
            f"{key} '{value}'"
            for key, value in (("platform", platform), ("backend", backend))
            if value
        )
        raise ModelLoadError(
            f"{source}: {asked} cannot be served: Switchyard runs ONNX models only "
            f"(platform '{ONNX_PLATFORM}' or backend '{ONNX_BACKEND}')"
        )
    triton_config.name = name
    triton_config.platform = ONNX_PLATFORM
    triton_config.backend = ONNX_BACKEND


def _selected_versions(model_dir: Path, policy: pb.ModelVersionPolicy, source: str) -> list[int]:
    """The versions the policy selects, ascending."""
    available = sorted(
        int(entry.name)
        for entry in model_dir.iterdir()
        if _VERSION_DIR_NAME.fullmatch(entry.name) and entry.is_dir()
    )
    if not available:
        raise ModelLoadError(
            f"{source}: no version directory (a positive integer name) in {model_dir}"
        )
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return available
    if choice == "specific":
        wanted = sorted(set(policy.specific.versions))
        missing = [v for v in wanted if v not in available]
        if missing or not wanted:
            raise ModelLoadError(
                f"{source}: version_policy.specific lists "
                + (f"versions {missing} that are not in {model_dir}" if missing else "no version")
                + f" (found: {', '.join(map(str, available))})"
            )
        return wanted
    num_versions = policy.latest.num_versions if choice == "latest" else 1
    if num_versions < 1:
        raise ModelLoadError(f"{source}: version_policy.latest.num_versions must be at least 1")
    return available[-num_versions:]


def _batching(
    triton_config: pb.ModelConfig,
    has_config: bool,
    source: str,
    label: str,
    warnings: list[str],
) -> BatchingConfig:
    max_batch_size = triton_config.max_batch_size
    if max_batch_size < 0:
        raise ModelLoadError(f"{source}: max_batch_size must be 0 or more, got {max_batch_size}")
    counts = [group.count for group in triton_config.instance_group]
    if any(count < 0 for count in counts):
        raise ModelLoadError(f"{source}: instance_group.count must be 1 or more, got {counts}")
    instance_count = sum(count or 1 for count in counts) or 1
    if not has_config:
        return BatchingConfig(instance_count=instance_count)
    if not triton_config.HasField("dynamic_batching"):
        return BatchingConfig(max_batch_size=max_batch_size, instance_count=instance_count)
    if max_batch_size == 0:
        warnings.append(f"{label}: dynamic_batching has no effect with max_batch_size 0; ignored")
        return BatchingConfig(max_batch_size=0, instance_count=instance_count)
    dynamic = triton_config.dynamic_batching
    preferred = sorted(set(dynamic.preferred_batch_size))
    wrong = [size for size in preferred if not 1 <= size <= max_batch_size]
    if wrong:
        raise ModelLoadError(
            f"{source}: dynamic_batching.preferred_batch_size {wrong} must be in "
            f"1..max_batch_size ({max_batch_size})"
        )
    return BatchingConfig(
        max_batch_size=max_batch_size,
        max_queue_delay_s=dynamic.max_queue_delay_microseconds / _US_PER_S,
        preferred_batch_sizes=preferred,
        instance_count=instance_count,
    )


def _runtime_options(
    triton_config: pb.ModelConfig, label: str, warnings: list[str]
) -> OnnxRuntimeOptions:
    kinds = {group.kind for group in triton_config.instance_group}
    if pb.ModelInstanceGroup.KIND_GPU in kinds:
        if pb.ModelInstanceGroup.KIND_CPU in kinds:
            warnings.append(
                f"{label}: instance groups of KIND_GPU and KIND_CPU together are not supported "
                "by Switchyard (one set of execution providers per model); all run as KIND_GPU"
            )
        return OnnxRuntimeOptions(execution_providers=list(_GPU_PROVIDERS))
    if pb.ModelInstanceGroup.KIND_CPU in kinds:
        return OnnxRuntimeOptions(execution_providers=list(_CPU_PROVIDERS))
    return OnnxRuntimeOptions()
