"""Our .proto must match tritonclient's on the wire: same names, field numbers and types.

Both define `inference.*` messages; ours live in a private descriptor pool
(protos/generate.py), so both can be imported in one process, as here.
"""

from __future__ import annotations

import pickle

from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor, EnumDescriptor
from tritonclient.grpc import model_config_pb2  # noqa: F401 - registers inference.ModelConfig
from tritonclient.grpc import service_pb2 as triton_pb

from switchyard.protos import open_inference_pb2 as our_pb


def fields(descriptor: Descriptor) -> dict[str, tuple[int, int, bool]]:
    return {f.name: (f.number, f.type, f.is_repeated) for f in descriptor.fields}


def assert_compatible(ours: Descriptor, theirs: Descriptor) -> None:
    assert ours.full_name == theirs.full_name
    their_fields = fields(theirs)
    for name, spec in fields(ours).items():
        assert their_fields.get(name) == spec, f"{ours.full_name}.{name}"
    for nested in ours.nested_types:
        assert_compatible(nested, theirs.nested_types_by_name[nested.name])
    for enum in ours.enum_types:
        assert enum_values(enum) == enum_values(theirs.enum_types_by_name[enum.name])


def enum_values(descriptor: EnumDescriptor) -> dict[str, int]:
    return {value.name: value.number for value in descriptor.values}


def test_every_message_matches_tritonclient() -> None:
    ours = our_pb.DESCRIPTOR
    assert ours.package == "inference"
    assert len(ours.message_types_by_name) == 29
    triton_pool = descriptor_pool.Default()
    for descriptor in ours.message_types_by_name.values():
        assert_compatible(descriptor, triton_pool.FindMessageTypeByName(descriptor.full_name))
    for enum in ours.enum_types_by_name.values():
        assert enum_values(enum) == enum_values(triton_pool.FindEnumTypeByName(enum.full_name))


def test_service_methods_match_tritonclient() -> None:
    ours = our_pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    theirs = triton_pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert ours.full_name == "inference.GRPCInferenceService"
    assert len(ours.methods) == 10
    for method in ours.methods:
        their_method = theirs.methods_by_name[method.name]
        assert method.input_type.full_name == their_method.input_type.full_name
        assert method.output_type.full_name == their_method.output_type.full_name


def test_messages_cross_between_the_two_stubs_and_pickle() -> None:
    request = our_pb.ModelInferRequest(model_name="ranker", id="r1")
    request.inputs.add(name="features", datatype="FP32", shape=[1, 16])
    request.raw_input_contents.append(b"\0" * 64)
    theirs = triton_pb.ModelInferRequest.FromString(request.SerializeToString())
    assert (theirs.model_name, theirs.inputs[0].name, list(theirs.inputs[0].shape)) == (
        "ranker",
        "features",
        [1, 16],
    )
    # Ray Serve's gRPC proxy pickles request messages to hand them to replicas.
    assert pickle.loads(pickle.dumps(request)) == request
