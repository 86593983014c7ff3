"""Our .proto must match tritonclient's on the wire: same names, field numbers and types.

Both define `inference.*` messages, so the two generated modules cannot share one process's
default descriptor pool. Ours is compiled here into a pool of its own instead; for the same
reason tests talk to the gateway over the network and never import `protos.*_pb2`.
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import Descriptor, FileDescriptor
from grpc_tools import protoc
from tritonclient.grpc import model_config_pb2  # noqa: F401 - registers inference.ModelConfig
from tritonclient.grpc import service_pb2 as triton_pb

from tests.support import REPO_ROOT


def our_file_descriptor(tmp_path: Path) -> FileDescriptor:
    descriptor_set = tmp_path / "ours.pb"
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{REPO_ROOT}",
            f"--descriptor_set_out={descriptor_set}",
            "protos/open_inference.proto",
        ]
    )
    assert status == 0
    file_set = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file_proto in file_set.file:
        pool.Add(file_proto)
    return pool.FindFileByName("protos/open_inference.proto")


def fields(descriptor: Descriptor) -> dict[str, tuple[int, int, bool]]:
    return {f.name: (f.number, f.type, f.is_repeated) for f in descriptor.fields}


def assert_compatible(ours: Descriptor, theirs: Descriptor) -> None:
    assert ours.full_name == theirs.full_name
    their_fields = fields(theirs)
    for name, spec in fields(ours).items():
        assert their_fields.get(name) == spec, f"{ours.full_name}.{name}"
    for nested in ours.nested_types:
        assert_compatible(nested, theirs.nested_types_by_name[nested.name])


def test_every_message_matches_tritonclient(tmp_path: Path) -> None:
    ours = our_file_descriptor(tmp_path)
    assert ours.package == "inference"
    assert len(ours.message_types_by_name) == 17
    triton_pool = descriptor_pool.Default()
    for descriptor in ours.message_types_by_name.values():
        assert_compatible(descriptor, triton_pool.FindMessageTypeByName(descriptor.full_name))


def test_service_methods_match_tritonclient(tmp_path: Path) -> None:
    ours = our_file_descriptor(tmp_path).services_by_name["GRPCInferenceService"]
    theirs = triton_pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert ours.full_name == "inference.GRPCInferenceService"
    assert len(ours.methods) == 7
    for method in ours.methods:
        their_method = theirs.methods_by_name[method.name]
        assert method.input_type.full_name == their_method.input_type.full_name
        assert method.output_type.full_name == their_method.output_type.full_name
