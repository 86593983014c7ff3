"""The Triton-layout model repository reader, on real repositories of real ONNX models."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import pytest
from google.protobuf import json_format, text_format
from google.protobuf.message import Message
from onnx import TensorProto, helper, numpy_helper
from tritonclient.grpc import model_config_pb2 as triton_model_config

from switchyard.protos import open_inference_pb2 as pb
from switchyard.runtimes.base import ModelSignature
from switchyard.runtimes.errors import ModelLoadError
from switchyard.runtimes.ort_runtime import OnnxRuntimeModel, OrtOptions
from switchyard.server.model_config import (
    BatchingConfig,
    ModelConfig,
    ModelVersionConfig,
    OnnxRuntimeOptions,
)
from switchyard.server.triton_config_bridge import (
    check_signature,
    to_triton_config,
    with_model_tensors,
)
from switchyard.server.triton_layout import list_models, read_model, repository_stamp

GPU_PROVIDERS = ["CUDAExecutionProvider", "CPUExecutionProvider"]

# A config.pbtxt in Triton's own style, with many fields of Triton's ModelConfig that ours
# does not declare, at the top and nested, in each of the text format's forms.
REAL_TRITON_CONFIG = """
name: "tiny"
backend: "onnxruntime"
max_batch_size: 8
version_policy: { all { } }
input [
  {
    name: "x"
    data_type: TYPE_FP32
    format: FORMAT_NONE
    dims: [ 4 ]
    reshape: { shape: [ 2, 2 ] }
    allow_ragged_batch: false
  }
]
output [
  { name: "y", data_type: TYPE_FP32, dims: [ 2 ], label_filename: "labels.txt" },
  { name: "x_copy" data_type: TYPE_FP32 dims: [ -1 ] }
]
instance_group [
  {
    name: "tiny_gpu"
    count: 2
    kind: KIND_GPU
    gpus: [ 0 ]
    rate_limiter { resources [ { name: "R1" count: 4 } ] priority: 2 }
  }
]
dynamic_batching {
  preferred_batch_size: [ 4, 8 ]
  max_queue_delay_microseconds: 250
  preserve_ordering: true
  priority_levels: 2
  default_priority_level: 1
  default_queue_policy { timeout_action: REJECT default_timeout_microseconds: 1000 }
}
optimization {
  graph { level: 1 }
  execution_accelerators { gpu_execution_accelerator: [ { name: "tensorrt" } ] }
}
parameters { key: "intra_op_thread_count" value: { string_value: "2" } }
model_warmup [
  {
    name: "zeros"
    batch_size: 1
    inputs { key: "x" value: { data_type: TYPE_FP32 dims: [ 4 ] zero_data: true } }
  }
]
response_cache { enable: true }
model_transaction_policy { decoupled: false }
"""


def write_onnx_model(path: Path, batch: bool = True) -> None:
    """x FP32 [N, 4] -> y = x @ W FP32 [N, 2] and x_copy FP32 [N, 4]; N is 3 if not batch."""
    rows: str | int = "N" if batch else 3
    weights = numpy_helper.from_array(np.arange(8, dtype=np.float32).reshape(4, 2), name="W")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["y"]),
            helper.make_node("Identity", ["x"], ["x_copy"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, 4])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, 2]),
            helper.make_tensor_value_info("x_copy", TensorProto.FLOAT, [rows, 4]),
        ],
        initializer=[weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9  # loads on every onnxruntime the project supports
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def lay_out(
    root: Path,
    config_text: str | None = None,
    versions: Iterable[int | str] = (1,),
    name: str = "tiny",
    filename: str = "model.onnx",
    batch: bool = True,
) -> Path:
    """A model directory with a model file in each version directory."""
    model_dir = root / name
    model_dir.mkdir(parents=True)
    for version in versions:
        write_onnx_model(model_dir / str(version) / filename, batch)
    if config_text is not None:
        (model_dir / "config.pbtxt").write_text(config_text)
    return model_dir


@contextmanager
def load_signature(path: Path) -> Iterator[ModelSignature]:
    """The model loaded as the server loads it, on the CPU."""
    model = OnnxRuntimeModel(path, OrtOptions(execution_providers=("CPUExecutionProvider",)), "t")
    try:
        yield model.load()
    finally:
        model.close()


@pytest.fixture(scope="module")
def batched_signature(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelSignature]:
    path = tmp_path_factory.mktemp("onnx") / "batched.onnx"
    write_onnx_model(path)
    with load_signature(path) as signature:
        yield signature


@pytest.fixture(scope="module")
def fixed_signature(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelSignature]:
    path = tmp_path_factory.mktemp("onnx") / "fixed.onnx"
    write_onnx_model(path, batch=False)
    with load_signature(path) as signature:
        yield signature


def versions_of(config: ModelConfig) -> list[str]:
    return [v.version for v in config.versions]


# --- listing and the default layout ---------------------------------------------------------


def test_list_models_sorts_directories_and_skips_files_and_hidden_ones(tmp_path: Path) -> None:
    for name in ("b_model", "a_model", ".git", "C"):
        (tmp_path / name).mkdir()
    (tmp_path / "README.md").write_text("not a model")
    assert list_models(tmp_path) == ["C", "a_model", "b_model"]


def test_list_models_of_a_missing_repository_says_so(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"model repository .*nowhere: cannot list it"):
        list_models(tmp_path / "nowhere")


def test_without_config_the_highest_version_is_served_as_onnx(tmp_path: Path) -> None:
    model_dir = lay_out(tmp_path, versions=(1, 2, 10))
    for skipped in ("0", "007", "v3", ".4"):
        write_onnx_model(model_dir / skipped / "model.onnx")
    (model_dir / "11").write_text("a file, not a version directory")
    model = read_model(tmp_path, "tiny")
    assert versions_of(model.config) == ["10"]
    assert model.config.default_version == "10"
    path = model.config.versions[0].path
    assert path == (model_dir / "10" / "model.onnx").absolute() and path.is_absolute()
    assert model.config.runtime == "onnxruntime"
    assert model.config.runtime_options.execution_providers == ["auto"]
    # No config.pbtxt: Switchyard's default, batching decided from the model's shapes.
    assert model.config.batching == BatchingConfig()
    assert model.triton_config == pb.ModelConfig(
        name="tiny", platform="onnxruntime_onnx", backend="onnxruntime"
    )
    assert model.warnings == ()


def test_a_relative_root_gives_absolute_model_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lay_out(tmp_path / "repo")
    monkeypatch.chdir(tmp_path)
    model = read_model(Path("repo"), "tiny")
    assert model.config.versions[0].path == tmp_path / "repo" / "tiny" / "1" / "model.onnx"


# --- version policies -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("", ["5"]),
        ("version_policy: { latest: { num_versions: 2 } }", ["3", "5"]),
        ("version_policy: { latest: { num_versions: 9 } }", ["1", "3", "5"]),
        ("version_policy: { all: {} }", ["1", "3", "5"]),
        ("version_policy: { specific: { versions: [ 3, 1, 3 ] } }", ["1", "3"]),
    ],
)
def test_version_policy_selects_versions(tmp_path: Path, policy: str, expected: list[str]) -> None:
    lay_out(tmp_path, policy, versions=(1, 3, 5))
    config = read_model(tmp_path, "tiny").config
    assert versions_of(config) == expected
    assert config.default_version == expected[-1]


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        (
            "version_policy: { specific: { versions: [ 1, 4 ] } }",
            r"version_policy.specific lists versions \[4\] that are not in .*tiny \(found: 1, 3\)",
        ),
        ("version_policy: { specific: { } }", r"version_policy.specific lists no version"),
        ("version_policy: { latest: { } }", r"version_policy.latest.num_versions must be at least"),
    ],
)
def test_version_policy_that_selects_nothing_is_refused(
    tmp_path: Path, policy: str, message: str
) -> None:
    lay_out(tmp_path, policy, versions=(1, 3))
    with pytest.raises(ModelLoadError, match=r"tiny/config.pbtxt: " + message):
        read_model(tmp_path, "tiny")


def test_a_model_without_version_directories_is_refused(tmp_path: Path) -> None:
    lay_out(tmp_path, 'platform: "onnxruntime_onnx"', versions=("0", "latest"))
    with pytest.raises(ModelLoadError, match=r"no version directory \(a positive integer name\)"):
        read_model(tmp_path, "tiny")


def test_a_selected_version_without_its_model_file_is_refused(tmp_path: Path) -> None:
    model_dir = lay_out(tmp_path, versions=(1,))
    (model_dir / "2").mkdir()
    with pytest.raises(ModelLoadError, match=r"version 2 has no model file .*tiny/2/model.onnx"):
        read_model(tmp_path, "tiny")
    # Versions the policy leaves out need no file.
    (model_dir / "config.pbtxt").write_text("version_policy { specific { versions: 1 } }")
    assert versions_of(read_model(tmp_path, "tiny").config) == ["1"]


def test_default_model_filename_names_the_file(tmp_path: Path) -> None:
    model_dir = lay_out(tmp_path, 'default_model_filename: "ranker.onnx"', filename="ranker.onnx")
    path = read_model(tmp_path, "tiny").config.versions[0].path
    assert path == (model_dir / "1" / "ranker.onnx").absolute()
    (model_dir / "config.pbtxt").write_text('default_model_filename: "../1/ranker.onnx"')
    with pytest.raises(ModelLoadError, match=r"default_model_filename must be a file name"):
        read_model(tmp_path, "tiny")


# --- refusals ---------------------------------------------------------------------------


def test_a_missing_model_directory_is_refused(tmp_path: Path) -> None:
    lay_out(tmp_path)
    with pytest.raises(ModelLoadError, match=r"no model directory .*/other"):
        read_model(tmp_path, "other")
    for bad_name in ("..", "a/b", ".hidden", ""):
        with pytest.raises(ModelLoadError, match=r"is not a model directory name"):
            read_model(tmp_path, bad_name)


def test_a_name_other_than_the_directory_is_refused(tmp_path: Path) -> None:
    lay_out(tmp_path, 'name: "other"')
    with pytest.raises(
        ModelLoadError, match=r"config.pbtxt: name 'other' differs from the model directory 'tiny'"
    ):
        read_model(tmp_path, "tiny")


def test_a_directory_name_switchyard_cannot_serve_is_refused(tmp_path: Path) -> None:
    lay_out(tmp_path, name="two words")
    with pytest.raises(ModelLoadError, match=r"two words: name: String should match pattern"):
        read_model(tmp_path, "two words")


@pytest.mark.parametrize(
    ("line", "refused"),
    [
        ('platform: "tensorrt_plan"', "platform 'tensorrt_plan'"),
        ('platform: "pytorch_libtorch"', "platform 'pytorch_libtorch'"),
        ('backend: "python"', "backend 'python'"),
        (
            'platform: "onnxruntime_onnx" backend: "tensorrt"',
            "platform 'onnxruntime_onnx' and backend 'tensorrt'",
        ),
    ],
)
def test_other_platforms_and_backends_are_refused(tmp_path: Path, line: str, refused: str) -> None:
    lay_out(tmp_path, line)
    with pytest.raises(ModelLoadError) as caught:
        read_model(tmp_path, "tiny")
    assert str(caught.value) == (
        f"{tmp_path / 'tiny' / 'config.pbtxt'}: {refused} cannot be served: Switchyard runs "
        "ONNX models only (platform 'onnxruntime_onnx' or backend 'onnxruntime')"
    )


@pytest.mark.parametrize(
    "line", ['platform: "onnxruntime_onnx"', 'backend: "onnxruntime"', 'name: "tiny"']
)
def test_onnx_platform_or_backend_is_served(tmp_path: Path, line: str) -> None:
    lay_out(tmp_path, line)
    triton_config = read_model(tmp_path, "tiny").triton_config
    assert (triton_config.name, triton_config.platform, triton_config.backend) == (
        "tiny",
        "onnxruntime_onnx",
        "onnxruntime",
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('name: "tiny"\nmax_batch_size: "eight"', r"2:17 : .*Couldn't parse integer: \"eight\""),
        ("max_batch_size: 8\nmax_batch_size: 4", r"2:17 : .*should not have multiple"),
        ('input [ { name: "x" data_type: TYPE_FP33 } ]', r"1:32 : .*TYPE_FP33"),
        (
            'name: "tiny"\noptimization { cuda { graphs: true }',
            r"2:37 : unexpected end of the text",
        ),
        ("model_warmup [ { name: 'w ]", r"1:24 : unterminated string"),
        ("dynamic_batching { ] }", r"1:20 : expected a field name, got '\]'"),
    ],
)
def test_an_invalid_config_says_where(tmp_path: Path, text: str, message: str) -> None:
    lay_out(tmp_path, text)
    with pytest.raises(ModelLoadError, match=r"tiny/config.pbtxt: invalid ModelConfig text: "):
        read_model(tmp_path, "tiny")
    with pytest.raises(ModelLoadError, match=message):
        read_model(tmp_path, "tiny")


def test_an_unreadable_config_is_refused(tmp_path: Path) -> None:
    model_dir = lay_out(tmp_path)
    (model_dir / "config.pbtxt").write_bytes(b'name: "\xff"')
    with pytest.raises(ModelLoadError, match=r"tiny/config.pbtxt: not UTF-8 text"):
        read_model(tmp_path, "tiny")
    (model_dir / "config.pbtxt").unlink()
    (model_dir / "config.pbtxt").mkdir()
    with pytest.raises(ModelLoadError, match=r"tiny/config.pbtxt: cannot read it: Is a directory"):
        read_model(tmp_path, "tiny")


# --- batching and instances --------------------------------------------------------------


def test_dynamic_batching_maps_onto_switchyard_batching(tmp_path: Path) -> None:
    lay_out(
        tmp_path,
        "max_batch_size: 8\n"
        "dynamic_batching { preferred_batch_size: [ 8, 2 ] max_queue_delay_microseconds: 1500 }",
    )
    batching = read_model(tmp_path, "tiny").config.batching
    assert batching.max_batch_size == 8
    assert batching.max_queue_delay_s == pytest.approx(0.0015)
    assert batching.preferred_batch_sizes == [2, 8]
    options = batching.to_options(8)
    assert (options.max_queue_delay_us, options.preferred_batch_sizes) == (1500, (2, 8))


def test_without_dynamic_batching_queued_requests_batch_with_no_delay(tmp_path: Path) -> None:
    lay_out(tmp_path, "max_batch_size: 16")
    batching = read_model(tmp_path, "tiny").config.batching
    assert (batching.max_batch_size, batching.max_queue_delay_s) == (16, 0.0)
    assert batching.preferred_batch_sizes == []


def test_max_batch_size_zero_turns_batching_off(tmp_path: Path) -> None:
    lay_out(tmp_path, 'name: "tiny"')
    assert read_model(tmp_path, "tiny").config.batching.max_batch_size == 0
    (tmp_path / "tiny" / "config.pbtxt").write_text("dynamic_batching { }")
    model = read_model(tmp_path, "tiny")
    assert model.config.batching.max_batch_size == 0
    assert model.warnings == (
        "config.pbtxt: dynamic_batching has no effect with max_batch_size 0; ignored",
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_batch_size: -1", r"max_batch_size must be 0 or more, got -1"),
        (
            "max_batch_size: 4 dynamic_batching { preferred_batch_size: [ 2, 8 ] }",
            r"dynamic_batching.preferred_batch_size \[8\] must be in 1..max_batch_size \(4\)",
        ),
        ("instance_group [ { count: -2 } ]", r"instance_group.count must be 1 or more"),
    ],
)
def test_invalid_batching_values_are_refused(tmp_path: Path, text: str, message: str) -> None:
    lay_out(tmp_path, text)
    with pytest.raises(ModelLoadError, match=r"tiny/config.pbtxt: " + message):
        read_model(tmp_path, "tiny")


@pytest.mark.parametrize(
    ("groups", "instance_count", "providers"),
    [
        ("", 1, ["auto"]),
        ("instance_group [ { kind: KIND_AUTO } ]", 1, ["auto"]),
        ("instance_group [ { count: 3 kind: KIND_CPU } ]", 3, ["CPUExecutionProvider"]),
        ("instance_group [ { count: 2 kind: KIND_GPU }, { kind: KIND_GPU } ]", 3, GPU_PROVIDERS),
    ],
)
def test_instance_groups_map_onto_instances_and_providers(
    tmp_path: Path, groups: str, instance_count: int, providers: list[str]
) -> None:
    lay_out(tmp_path, "max_batch_size: 4\n" + groups)
    model = read_model(tmp_path, "tiny")
    assert model.config.batching.instance_count == instance_count
    assert model.config.runtime_options.execution_providers == providers
    assert model.config.uses_gpu == (providers == GPU_PROVIDERS)
    assert model.warnings == ()


def test_instance_groups_of_gpu_and_cpu_together_run_on_the_gpu(tmp_path: Path) -> None:
    lay_out(tmp_path, "instance_group [ { kind: KIND_CPU }, { count: 2 kind: KIND_GPU } ]")
    model = read_model(tmp_path, "tiny")
    assert model.config.batching.instance_count == 3
    assert model.config.runtime_options.execution_providers == GPU_PROVIDERS
    assert len(model.warnings) == 1
    assert "KIND_GPU and KIND_CPU together are not supported" in model.warnings[0]


# --- fields Switchyard does not honour ---------------------------------------------------


def test_unhonoured_declared_fields_are_warned_about(tmp_path: Path) -> None:
    lay_out(
        tmp_path,
        """
        max_batch_size: 4
        input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] optional: true } ]
        dynamic_batching { preserve_ordering: true priority_levels: 3 }
        instance_group [ { kind: KIND_GPU gpus: [ 0 ] }, { gpus: 1 }, { kind: KIND_MODEL } ]
        """,
    )
    assert read_model(tmp_path, "tiny").warnings == (
        "config.pbtxt: dynamic_batching.preserve_ordering is not supported by Switchyard; ignored",
        "config.pbtxt: dynamic_batching.priority_levels is not supported by Switchyard; ignored",
        "config.pbtxt: instance_group.gpus is not supported by Switchyard; ignored",
        "config.pbtxt: instance_group.kind KIND_MODEL is not supported by Switchyard; ignored",
        "config.pbtxt: input.optional is not supported by Switchyard; ignored",
    )


def test_a_field_set_many_times_is_warned_about_once(tmp_path: Path) -> None:
    lay_out(
        tmp_path,
        """
        input [ { name: "a" reshape { shape: 1 } }, { name: "b" reshape: { shape: [ 1 ] } } ]
        parameters { key: "k1" value { string_value: "1" } }
        parameters: { key: "k2" value { string_value: "2" } }
        """,
    )
    assert read_model(tmp_path, "tiny").warnings == (
        "config.pbtxt: input.reshape is not supported by Switchyard; ignored",
        "config.pbtxt: parameters is not supported by Switchyard; ignored",
    )


def set_field_paths(message: Message, prefix: str = "") -> list[str]:
    """Every field set in a message, as a path without list indices, depth first."""
    paths = []
    for field, value in message.ListFields():
        path = prefix + field.name
        paths.append(path)
        if field.message_type is not None and not field.message_type.GetOptions().map_entry:
            for item in value if field.is_repeated else [value]:
                paths += set_field_paths(item, path + ".")
    return paths


def declared_by_us(path: str) -> bool:
    descriptor = pb.ModelConfig.DESCRIPTOR
    for name in path.split("."):
        if descriptor is None or name not in descriptor.fields_by_name:
            return False
        descriptor = descriptor.fields_by_name[name].message_type
    return True


def is_top_or_declared(parent_path: str) -> bool:
    return not parent_path or declared_by_us(parent_path)


def test_every_undeclared_triton_field_is_warned_about(tmp_path: Path) -> None:
    lay_out(tmp_path, REAL_TRITON_CONFIG)
    model = read_model(tmp_path, "tiny")
    warned = [
        w.removeprefix("config.pbtxt: ").removesuffix(" is not supported by Switchyard; ignored")
        for w in model.warnings
    ]
    # What tritonclient's full ModelConfig reads from the text and ours does not declare:
    # the outermost undeclared field of each path, in the file's order.
    full = text_format.Parse(REAL_TRITON_CONFIG, triton_model_config.ModelConfig())
    undeclared = [
        path
        for path in set_field_paths(full)
        if not declared_by_us(path) and is_top_or_declared(path.rpartition(".")[0])
    ]
    # Written with their default values, which the parsed message does not keep.
    written_as_default = ["input.format", "input.allow_ragged_batch"]
    expected = list(dict.fromkeys(undeclared + written_as_default))
    declared_unhonoured = [
        "dynamic_batching.preserve_ordering",
        "dynamic_batching.priority_levels",
        "instance_group.gpus",
    ]
    assert sorted(warned) == sorted(expected + declared_unhonoured)
    assert "input.reshape" in warned and "instance_group.rate_limiter" in warned
    assert {"model_warmup", "optimization", "parameters", "response_cache"} <= set(warned)
    # What is declared is read as Triton reads it.
    config = model.config
    assert versions_of(config) == ["1"]
    assert (config.batching.max_batch_size, config.batching.instance_count) == (8, 2)
    assert config.batching.preferred_batch_sizes == [4, 8]
    assert config.runtime_options.execution_providers == GPU_PROVIDERS
    assert [t.name for t in model.triton_config.output] == ["y", "x_copy"]
    assert list(model.triton_config.input[0].dims) == [4]


# --- the JSON config of a load request ---------------------------------------------------


def test_config_json_replaces_the_config_file(tmp_path: Path) -> None:
    lay_out(tmp_path, "this is not { a valid config", versions=(1, 2))
    config_json = json.dumps(
        {
            "name": "tiny",
            "maxBatchSize": 4,
            "version_policy": {"specific": {"versions": ["1"]}},
            "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [4], "reshape": {}}],
            "dynamic_batching": {"max_queue_delay_microseconds": "100", "priority_levels": 2},
            "model_warmup": [{"name": "w"}],
        }
    )
    model = read_model(tmp_path, "tiny", config_json)
    assert versions_of(model.config) == ["1"]
    assert model.config.batching.max_batch_size == 4
    assert model.config.batching.max_queue_delay_s == pytest.approx(0.0001)
    assert model.triton_config.input[0].data_type == pb.TYPE_FP32
    assert model.warnings == (
        "config JSON: input.reshape is not supported by Switchyard; ignored",
        "config JSON: model_warmup is not supported by Switchyard; ignored",
        "config JSON: dynamic_batching.priority_levels is not supported by Switchyard; ignored",
    )


@pytest.mark.parametrize(
    ("config_json", "message"),
    [
        ('{"name": "tiny",', r"invalid JSON: Expecting"),
        ("[1, 2]", r"a ModelConfig must be a JSON object"),
        ('{"max_batch_size": "many"}', r"invalid ModelConfig JSON: .*max_batch_size"),
        ('{"name": "other"}', r"name 'other' differs from the model directory 'tiny'"),
        ('{"platform": "tensorrt_plan"}', r"platform 'tensorrt_plan' cannot be served"),
    ],
)
def test_an_invalid_config_json_is_refused(tmp_path: Path, config_json: str, message: str) -> None:
    lay_out(tmp_path)
    with pytest.raises(ModelLoadError, match=r"model 'tiny': the load request's config JSON: "):
        read_model(tmp_path, "tiny", config_json)
    with pytest.raises(ModelLoadError, match=message):
        read_model(tmp_path, "tiny", config_json)


# --- the config against the loaded model -------------------------------------------------

MATCHING_CONFIG = """
max_batch_size: 8
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ -1 ] } ]
"""


def test_a_matching_config_passes_the_signature_check(
    tmp_path: Path, batched_signature: ModelSignature
) -> None:
    lay_out(tmp_path, MATCHING_CONFIG)
    model = read_model(tmp_path, "tiny")
    # Loaded from the repository as the server will load it.
    path = model.config.versions[0].path
    assert path is not None
    with load_signature(path) as signature:
        assert signature == batched_signature
        check_signature(model.triton_config, signature)  # listing only some outputs is fine
    # Without batching, dims include the batch dimension.
    unbatched = text_format.Parse(
        'input [ { name: "x" data_type: TYPE_FP32 dims: [ -1, 4 ] } ]', pb.ModelConfig()
    )
    check_signature(unbatched, signature)
    check_signature(pb.ModelConfig(), signature)  # nothing listed: the model's are taken


@pytest.mark.parametrize(
    ("text", "problems"),
    [
        (
            'max_batch_size: 8 input [ { name: "x" data_type: TYPE_INT64 dims: [ 4 ] } ]',
            ["input 'x' has data_type TYPE_INT64, the model's is FP32 (TYPE_FP32)"],
        ),
        (
            'max_batch_size: 8 input [ { name: "x" data_type: TYPE_FP32 dims: [ 5 ] } ]',
            ["input 'x' has dims [5], the model's are [4] without the batch dimension"],
        ),
        (
            'input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]',
            ["input 'x' has dims [4], the model's are [-1, 4]"],
        ),
        (
            'max_batch_size: 8 input [ { name: "z" data_type: TYPE_FP32 dims: [ 4 ] } ]',
            [
                "input 'z' is not one of the model's inputs (x)",
                "the model's input 'x' is not listed",
            ],
        ),
        (
            'max_batch_size: 8 output [ { name: "x_copy" data_type: TYPE_STRING dims: [ 4, 1 ] } ]',
            [
                "output 'x_copy' has data_type TYPE_STRING, the model's is FP32 (TYPE_FP32)",
                "output 'x_copy' has dims [4, 1], the model's are [4] without the batch dimension",
            ],
        ),
        (
            'max_batch_size: 8 output [ { name: "score" data_type: TYPE_FP32 dims: [ 1 ] } ]',
            ["output 'score' is not one of the model's outputs (y, x_copy)"],
        ),
    ],
)
def test_a_mismatching_config_fails_the_signature_check(
    batched_signature: ModelSignature, text: str, problems: list[str]
) -> None:
    triton_config = text_format.Parse(text, pb.ModelConfig(name="tiny"))
    with pytest.raises(ModelLoadError) as caught:
        check_signature(triton_config, batched_signature)
    assert str(caught.value) == (
        "model 'tiny': its ModelConfig does not match the model: " + "; ".join(problems)
    )


def test_batching_a_model_without_a_batch_dimension_fails_the_check(
    fixed_signature: ModelSignature,
) -> None:
    triton_config = pb.ModelConfig(name="tiny", max_batch_size=4)
    with pytest.raises(ModelLoadError, match=r"max_batch_size 4 needs a variable first \(batch\) "):
        check_signature(triton_config, fixed_signature)
    check_signature(pb.ModelConfig(name="tiny"), fixed_signature)


def test_the_model_tensors_complete_a_config_that_lists_none(
    batched_signature: ModelSignature,
) -> None:
    completed = with_model_tensors(pb.ModelConfig(max_batch_size=8), batched_signature)
    assert [(t.name, t.data_type, list(t.dims)) for t in completed.input] == [
        ("x", pb.TYPE_FP32, [4])
    ]
    assert [(t.name, list(t.dims)) for t in completed.output] == [("y", [2]), ("x_copy", [4])]
    check_signature(completed, batched_signature)
    listed = text_format.Parse(MATCHING_CONFIG, pb.ModelConfig())
    assert with_model_tensors(listed, batched_signature) == listed


# --- stamps ------------------------------------------------------------------------------


def test_the_stamp_changes_when_a_file_is_touched_added_or_removed(tmp_path: Path) -> None:
    model_dir = lay_out(tmp_path, "max_batch_size: 4")
    model = read_model(tmp_path, "tiny")
    stamp = repository_stamp(tmp_path, "tiny")
    assert model.stamp == stamp == repository_stamp(tmp_path, "tiny")
    assert [entry[0] for entry in stamp] == ["1/model.onnx", "config.pbtxt"]
    assert isinstance(hash(stamp), int)

    config_path = model_dir / "config.pbtxt"
    status = config_path.stat()
    os.utime(config_path, ns=(status.st_atime_ns, status.st_mtime_ns + 1_000_000))
    touched = repository_stamp(tmp_path, "tiny")
    assert touched != stamp

    write_onnx_model(model_dir / "2" / "model.onnx")
    added = repository_stamp(tmp_path, "tiny")
    assert added != touched and "2/model.onnx" in [entry[0] for entry in added]
    assert read_model(tmp_path, "tiny").stamp == added

    (model_dir / "2" / "model.onnx").unlink()
    assert repository_stamp(tmp_path, "tiny") == touched
    assert repository_stamp(tmp_path, "missing") == ()


def test_the_stamp_follows_linked_versions_without_looping(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    write_onnx_model(elsewhere / "model.onnx")
    model_dir = tmp_path / "repo" / "tiny"
    model_dir.mkdir(parents=True)
    (model_dir / "1").symlink_to(elsewhere)
    (elsewhere / "loop").symlink_to(model_dir)
    stamp = repository_stamp(tmp_path / "repo", "tiny")
    assert [entry[0] for entry in stamp] == ["1/model.onnx"]
    assert read_model(tmp_path / "repo", "tiny").config.versions[0].path == (
        model_dir / "1" / "model.onnx"
    )


# --- the reverse, and Triton's own message -----------------------------------------------


def yaml_model(**fields: object) -> ModelConfig:
    return ModelConfig.model_validate(
        {"name": "ranker", "versions": [ModelVersionConfig(version="1", path=Path("m.onnx"))]}
        | fields
    )


def test_a_yaml_model_is_reported_as_a_triton_config() -> None:
    model = yaml_model(
        batching=BatchingConfig(
            max_batch_size=32,
            max_queue_delay_s=0.002,
            preferred_batch_sizes=[8, 16],
            instance_count=2,
        ),
        runtime_options=OnnxRuntimeOptions(execution_providers=GPU_PROVIDERS),
    )
    assert to_triton_config(model, "onnxruntime_onnx") == pb.ModelConfig(
        name="ranker",
        platform="onnxruntime_onnx",
        backend="onnxruntime",
        max_batch_size=32,
        dynamic_batching=pb.ModelDynamicBatching(
            preferred_batch_size=[8, 16], max_queue_delay_microseconds=2000
        ),
        instance_group=[pb.ModelInstanceGroup(count=2, kind=pb.ModelInstanceGroup.KIND_GPU)],
    )


def test_a_yaml_model_without_batching_settings_reports_what_it_serves() -> None:
    model = yaml_model(
        runtime_options=OnnxRuntimeOptions(execution_providers=["CPUExecutionProvider"])
    )
    unbatched = to_triton_config(model, "onnxruntime_onnx")
    assert unbatched.max_batch_size == 0 and not unbatched.HasField("dynamic_batching")
    assert unbatched.instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU
    served = to_triton_config(model, "onnxruntime_onnx", served_max_batch_size=64)
    assert served.max_batch_size == 64
    assert served.HasField("dynamic_batching")
    assert served.dynamic_batching == pb.ModelDynamicBatching()
    on_triton = to_triton_config(yaml_model(), "tensorrt_plan")
    assert (on_triton.backend, on_triton.instance_group[0].kind) == (
        "tensorrt",
        pb.ModelInstanceGroup.KIND_AUTO,
    )


def test_tritonclient_reads_every_field_of_our_config(tmp_path: Path) -> None:
    """Serialized by our message and parsed by Triton's, every field keeps its value: the
    field numbers and types are Triton's."""
    lay_out(tmp_path, REAL_TRITON_CONFIG)
    ours = read_model(tmp_path, "tiny").triton_config
    ours.version_policy.specific.versions.extend([1, 2])  # the oneof's other members
    ours.input[0].optional = True
    ours.default_model_filename = "model.onnx"
    theirs = triton_model_config.ModelConfig.FromString(ours.SerializeToString())
    assert json_format.MessageToDict(theirs, preserving_proto_field_name=True) == (
        json_format.MessageToDict(ours, preserving_proto_field_name=True)
    )
    assert set_field_paths(theirs) == set_field_paths(ours)
    latest = pb.ModelConfig(version_policy=pb.ModelVersionPolicy(latest={"num_versions": 3}))
    parsed = triton_model_config.ModelConfig.FromString(latest.SerializeToString())
    assert parsed.version_policy.latest.num_versions == 3
