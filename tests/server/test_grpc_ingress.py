"""The real gateway over gRPC, called with the real tritonclient.grpc client."""

from __future__ import annotations

import importlib.metadata
from contextlib import AbstractContextManager
from types import TracebackType

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton_grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from loadtests.gateway_process import Gateway, metric_sum, scrape_metrics
from tests.conftest import TEST_MAX_REQUEST_SIZE_BYTES


@pytest.fixture
def client(gateway: Gateway) -> triton_grpc.InferenceServerClient:
    return triton_grpc.InferenceServerClient(gateway.grpc_url)


@pytest.fixture
def stub(gateway: Gateway) -> service_pb2_grpc.GRPCInferenceServiceStub:
    """tritonclient's own generated stub, for requests its high-level client never sends."""
    channel = grpc.insecure_channel(
        gateway.grpc_url, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
    )
    return service_pb2_grpc.GRPCInferenceServiceStub(channel)


def features_input(data: np.ndarray) -> triton_grpc.InferInput:
    tensor = triton_grpc.InferInput("features", list(data.shape), "FP32")
    tensor.set_data_from_numpy(data)
    return tensor


def expect_status(code: grpc.StatusCode, *fragments: str) -> AbstractContextManager[object]:
    """Context manager: the call fails with `code` and a message holding every fragment."""

    class Expectation:
        def __enter__(self) -> Expectation:
            return self

        def __exit__(
            self,
            exc_type: type[BaseException] | None,
            exc: BaseException | None,
            tb: TracebackType | None,
        ) -> bool:
            assert exc is not None, f"expected {code.name}, the call succeeded"
            if isinstance(exc, InferenceServerException):
                status, message = exc.status(), exc.message()
            else:  # the generated stub's calls raise grpc.RpcError, which is also a grpc.Call
                assert isinstance(exc, grpc.Call), f"expected {code.name}, got {exc!r}"
                status, message = exc.code(), exc.details()
            assert str(status) in (str(code), code.name), f"{status}: {message}"
            for fragment in fragments:
                assert fragment in message, message
            assert "Traceback" not in message
            return True

    return Expectation()


def test_health_and_server_metadata(client: triton_grpc.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("ranker")
    assert client.is_model_ready("ranker", "1")
    metadata = client.get_server_metadata()
    assert metadata.name == "switchyard"
    assert metadata.version == importlib.metadata.version("switchyard")
    assert "binary_tensor_data" in metadata.extensions


def test_model_metadata(client: triton_grpc.InferenceServerClient) -> None:
    metadata = client.get_model_metadata("ranker")
    assert metadata.name == "ranker"
    assert list(metadata.versions) == ["1"]
    assert metadata.platform == "onnxruntime_onnx"
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("features", "FP32", [-1, 16])
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs] == [
        ("logit", "FP32", [-1, 1]),
        ("score", "FP32", [-1, 1]),
    ]


def test_infer_raw_matches_onnxruntime(
    client: triton_grpc.InferenceServerClient,
    direct_session: ort.InferenceSession,
    features: np.ndarray,
) -> None:
    result = client.infer("ranker", [features_input(features)], request_id="req-7")
    logit, score = direct_session.run(["logit", "score"], {"features": features})
    np.testing.assert_array_equal(result.as_numpy("logit"), logit)
    np.testing.assert_array_equal(result.as_numpy("score"), score)
    response = result.get_response()
    assert response.id == "req-7"
    assert (response.model_name, response.model_version) == ("ranker", "1")


def test_infer_requested_output_subset(
    client: triton_grpc.InferenceServerClient,
    direct_session: ort.InferenceSession,
    features: np.ndarray,
) -> None:
    result = client.infer(
        "ranker",
        [features_input(features)],
        model_version="1",
        outputs=[triton_grpc.InferRequestedOutput("score")],
    )
    assert [output.name for output in result.get_response().outputs] == ["score"]
    assert result.as_numpy("logit") is None
    np.testing.assert_array_equal(
        result.as_numpy("score"), direct_session.run(["score"], {"features": features})[0]
    )


def test_infer_typed_contents_matches_onnxruntime(
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
    direct_session: ort.InferenceSession,
    features: np.ndarray,
) -> None:
    request = service_pb2.ModelInferRequest(model_name="ranker", id="typed")
    tensor = request.inputs.add(name="features", datatype="FP32", shape=list(features.shape))
    tensor.contents.fp32_contents.extend(features.ravel().tolist())
    response = stub.ModelInfer(request)
    assert response.id == "typed"
    outputs = {
        out.name: np.frombuffer(raw, np.float32).reshape(out.shape)
        for out, raw in zip(response.outputs, response.raw_output_contents, strict=True)
    }
    logit, score = direct_session.run(["logit", "score"], {"features": features})
    np.testing.assert_array_equal(outputs["logit"], logit)
    np.testing.assert_array_equal(outputs["score"], score)


def test_unknown_model_and_version_are_not_found(
    client: triton_grpc.InferenceServerClient, features: np.ndarray
) -> None:
    with expect_status(grpc.StatusCode.NOT_FOUND, "'nope'", "ranker"):
        client.infer("nope", [features_input(features)])
    with expect_status(grpc.StatusCode.NOT_FOUND, "version '9'"):
        client.infer("ranker", [features_input(features)], model_version="9")
    with expect_status(grpc.StatusCode.NOT_FOUND, "'nope'"):
        client.get_model_metadata("nope")
    with expect_status(grpc.StatusCode.NOT_FOUND, "'nope'"):
        client.is_model_ready("nope")


def test_wrong_input_name_datatype_and_shape(
    client: triton_grpc.InferenceServerClient, features: np.ndarray
) -> None:
    wrong_name = triton_grpc.InferInput("feats", [4, 16], "FP32")
    wrong_name.set_data_from_numpy(features)
    with expect_status(grpc.StatusCode.INVALID_ARGUMENT, "feats", "features"):
        client.infer("ranker", [wrong_name])
    wrong_type = triton_grpc.InferInput("features", [4, 16], "FP64")
    wrong_type.set_data_from_numpy(features.astype(np.float64))
    with expect_status(grpc.StatusCode.INVALID_ARGUMENT, "'features'", "FP64", "FP32"):
        client.infer("ranker", [wrong_type])
    with expect_status(grpc.StatusCode.INVALID_ARGUMENT, "'features'", "[4, 15]"):
        client.infer("ranker", [features_input(features[:, :15].copy())])
    with expect_status(grpc.StatusCode.INVALID_ARGUMENT, "'score'", "do not exist"):
        client.infer(
            "ranker",
            [features_input(features)],
            outputs=[triton_grpc.InferRequestedOutput("scores")],
        )


def test_raw_size_mismatch_names_the_tensor(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, features: np.ndarray
) -> None:
    request = service_pb2.ModelInferRequest(model_name="ranker")
    request.inputs.add(name="features", datatype="FP32", shape=[4, 16])
    request.raw_input_contents.append(features.tobytes()[:-4])
    with expect_status(grpc.StatusCode.INVALID_ARGUMENT, "'features'", "252 raw bytes", "256"):
        stub.ModelInfer(request)
    extra = service_pb2.ModelInferRequest(model_name="ranker")
    extra.inputs.add(name="features", datatype="FP32", shape=[4, 16])
    extra.raw_input_contents.extend([features.tobytes(), b"x"])
    with expect_status(grpc.StatusCode.INVALID_ARGUMENT, "raw_input_contents has 2 entries"):
        stub.ModelInfer(extra)


def test_typed_contents_count_mismatch(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    request = service_pb2.ModelInferRequest(model_name="ranker")
    tensor = request.inputs.add(name="features", datatype="FP32", shape=[2, 16])
    tensor.contents.fp32_contents.extend([0.5] * 31)
    with expect_status(grpc.StatusCode.INVALID_ARGUMENT, "'features'", "31 values", "32"):
        stub.ModelInfer(request)


def test_huge_declared_shape_is_refused_before_allocation(
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
) -> None:
    request = service_pb2.ModelInferRequest(model_name="ranker")
    request.inputs.add(name="features", datatype="FP32", shape=[2**40, 16])
    request.raw_input_contents.append(b"")
    with expect_status(grpc.StatusCode.INVALID_ARGUMENT, "'features'", "maximum request size"):
        stub.ModelInfer(request)
    negative = service_pb2.ModelInferRequest(model_name="ranker")
    negative.inputs.add(name="features", datatype="FP32", shape=[-4, 16])
    with expect_status(grpc.StatusCode.INVALID_ARGUMENT, "negative dimension"):
        stub.ModelInfer(negative)


def test_message_over_the_size_limit_is_resource_exhausted(
    client: triton_grpc.InferenceServerClient,
) -> None:
    rows = TEST_MAX_REQUEST_SIZE_BYTES // (16 * 4) + 1
    big = np.zeros((rows, 16), dtype=np.float32)
    with expect_status(grpc.StatusCode.RESOURCE_EXHAUSTED):
        client.infer("ranker", [features_input(big)])
    assert client.is_server_live()


def test_unsupported_datatype_is_invalid(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    request = service_pb2.ModelInferRequest(model_name="ranker")
    request.inputs.add(name="features", datatype="FLOAT", shape=[1, 16])
    with expect_status(grpc.StatusCode.INVALID_ARGUMENT, "'features'", "unsupported datatype"):
        stub.ModelInfer(request)


def test_server_survives_bad_requests(
    client: triton_grpc.InferenceServerClient,
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
    features: np.ndarray,
) -> None:
    for _ in range(20):
        with pytest.raises(grpc.RpcError):
            stub.ModelInfer(service_pb2.ModelInferRequest(model_name="ranker"))
    assert client.is_server_ready()
    assert client.infer("ranker", [features_input(features)]).as_numpy("score").shape == (4, 1)


@pytest.mark.parametrize(
    ("shape", "fragments"),
    [([0, 10**12], ["no elements", "maximum request size"]), ([1] * 100, ["100 dimensions"])],
)
def test_bad_shapes_are_invalid_argument(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, shape: list[int], fragments: list[str]
) -> None:
    request = service_pb2.ModelInferRequest(model_name="ranker")
    request.inputs.add(name="features", datatype="FP32", shape=shape)
    request.raw_input_contents.append(b"" if 0 in shape else b"\x00" * 4)
    with expect_status(grpc.StatusCode.INVALID_ARGUMENT, "'features'", *fragments):
        stub.ModelInfer(request)


def test_a_huge_model_name_is_not_found_with_a_short_message(
    client: triton_grpc.InferenceServerClient, features: np.ndarray
) -> None:
    # The whole name in the status would pass grpc's 8 KiB metadata limit: no NOT_FOUND then.
    with pytest.raises(InferenceServerException) as raised:
        client.infer("m" * 20_000, [features_input(features)])
    assert raised.value.status() == "StatusCode.NOT_FOUND", raised.value.message()
    assert "(20000 characters)" in raised.value.message()
    assert len(raised.value.message()) < 1000
    with expect_status(grpc.StatusCode.NOT_FOUND, "(20000 characters)"):
        client.get_model_metadata("ranker", "v" * 20_000)


UNDECODABLE = [b"\xff\xff\xff\xff", b"\x0a\x05ab"]  # a tag cut short, a field cut short
BAD_UTF8_FIELD_1 = b"\x0a\x02\xc3\x28"  # for messages whose field 1 is a string


@pytest.mark.parametrize(
    ("method", "string_field_1"),
    [
        ("/inference.GRPCInferenceService/ModelInfer", True),
        ("/inference.GRPCInferenceService/ServerLive", False),
        ("/inference.GRPCInferenceService/RepositoryIndex", True),
        ("/switchyard.recommend.v1.Recommender/Recommend", True),
    ],
)
def test_undecodable_protobufs_are_invalid_argument_without_a_traceback(
    gateway: Gateway, client: triton_grpc.InferenceServerClient, method: str, string_field_1: bool
) -> None:
    undecodable = [*UNDECODABLE, BAD_UTF8_FIELD_1] if string_field_1 else UNDECODABLE
    log_start = len(gateway.log())
    shed_before = metric_sum(
        scrape_metrics(gateway), "switchyard_shed_requests_total", reason="undecodable_request"
    )
    with grpc.insecure_channel(gateway.grpc_url) as channel:
        # No serializers: the bytes go as they are.
        call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(method)
        for wire in undecodable:
            with expect_status(grpc.StatusCode.INVALID_ARGUMENT, "not a valid protobuf message"):
                call(wire, timeout=10)
    shed_after = metric_sum(
        scrape_metrics(gateway), "switchyard_shed_requests_total", reason="undecodable_request"
    )
    assert shed_after - shed_before == len(undecodable)
    new_log = gateway.log()[log_start:]
    assert "Traceback" not in new_log and "Unexpected" not in new_log, new_log
    assert client.is_server_ready()


@pytest.mark.parametrize("request_id", ["a\nb", "r" * 20000])
def test_an_unechoable_request_id_is_answered_without_the_trailer(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, features: np.ndarray, request_id: str
) -> None:
    # A newline is no metadata value, and 20,000 characters overflow the client's 8 KiB of
    # metadata: the id comes back in the response, not in the x-request-id trailer.
    request = service_pb2.ModelInferRequest(model_name="ranker", id=request_id)
    request.inputs.add(name="features", datatype="FP32", shape=list(features.shape))
    request.raw_input_contents.append(features.astype(np.float32).tobytes())
    response, call = stub.ModelInfer.with_call(request, timeout=30)
    assert response.id == request_id
    assert "x-request-id" not in dict(call.trailing_metadata() or ())
