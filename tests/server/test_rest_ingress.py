"""The real gateway over REST: the real tritonclient.http client, and raw HTTP for bad input."""

from __future__ import annotations

import gzip
import http.client
import importlib.metadata
import json
from collections.abc import Sequence

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from loadtests.gateway_process import Gateway
from switchyard.server.rest_ingress import INLINE_INFLATE_MAX_BYTES
from tests.conftest import TEST_MAX_REQUEST_SIZE_BYTES


@pytest.fixture
def client(gateway: Gateway) -> triton_http.InferenceServerClient:
    return triton_http.InferenceServerClient(gateway.http_url)


def features_input(data: np.ndarray, binary: bool = True) -> triton_http.InferInput:
    tensor = triton_http.InferInput("features", list(data.shape), "FP32")
    tensor.set_data_from_numpy(data, binary_data=binary)
    return tensor


def post(
    gateway: Gateway, path: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", gateway.http_port, timeout=10)
    connection.request("POST", path, body=body, headers=headers or {})
    response = connection.getresponse()
    result = response.status, dict(response.getheaders()), response.read()
    connection.close()
    return result


def assert_error(status: int, body: bytes, expected_status: int, *fragments: str) -> None:
    assert status == expected_status, body
    message = json.loads(body)["error"]
    for fragment in fragments:
        assert fragment in message, message
    assert "Traceback" not in message


# Bad requests too: any JSON values, a shape of strings, extra top-level members.
def json_request(data: Sequence[object], shape: Sequence[object], **extra: object) -> bytes:
    tensor = {"name": "features", "datatype": "FP32", "shape": shape, "data": data}
    return json.dumps({"inputs": [tensor], **extra}).encode()


def test_health_and_metadata(client: triton_http.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("ranker")
    assert client.is_model_ready("ranker", "1")
    assert not client.is_model_ready("ranker", "2")
    server = client.get_server_metadata()
    assert server["name"] == "switchyard" and "binary_tensor_data" in server["extensions"]
    model = client.get_model_metadata("ranker", "1")
    assert model["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 16]}]
    assert [o["name"] for o in model["outputs"]] == ["logit", "score"]


@pytest.mark.parametrize("binary_input", [True, False])
@pytest.mark.parametrize("binary_output", [True, False])
def test_infer_matches_onnxruntime(
    client: triton_http.InferenceServerClient,
    direct_session: ort.InferenceSession,
    features: np.ndarray,
    binary_input: bool,
    binary_output: bool,
) -> None:
    result = client.infer(
        "ranker",
        [features_input(features, binary_input)],
        outputs=[
            triton_http.InferRequestedOutput("logit", binary_data=binary_output),
            triton_http.InferRequestedOutput("score", binary_data=binary_output),
        ],
        request_id="r1",
    )
    logit, score = direct_session.run(["logit", "score"], {"features": features})
    # JSON carries float32 values as decimal text: equal after the round trip to float32.
    np.testing.assert_array_equal(result.as_numpy("logit").astype(np.float32), logit)
    np.testing.assert_array_equal(result.as_numpy("score").astype(np.float32), score)
    response = result.get_response()
    assert (response["id"], response["model_name"], response["model_version"]) == (
        "r1",
        "ranker",
        "1",
    )


def test_infer_with_client_defaults_and_gzip(
    client: triton_http.InferenceServerClient,
    direct_session: ort.InferenceSession,
    features: np.ndarray,
) -> None:
    # No outputs named: tritonclient asks for every output in binary.
    for compression in (None, "gzip", "deflate"):
        result = client.infer(
            "ranker", [features_input(features)], request_compression_algorithm=compression
        )
        np.testing.assert_array_equal(
            result.as_numpy("score"), direct_session.run(["score"], {"features": features})[0]
        )


def test_requested_output_subset(
    client: triton_http.InferenceServerClient, features: np.ndarray
) -> None:
    result = client.infer(
        "ranker", [features_input(features)], outputs=[triton_http.InferRequestedOutput("score")]
    )
    assert [o["name"] for o in result.get_response()["outputs"]] == ["score"]


def test_unknown_model_version_and_route(
    gateway: Gateway, client: triton_http.InferenceServerClient, features: np.ndarray
) -> None:
    with pytest.raises(InferenceServerException) as error:
        client.infer("nope", [features_input(features)])
    assert error.value.status() == "404" and "'nope'" in error.value.message()
    status, _, body = post(
        gateway, "/v2/models/ranker/versions/3/infer", json_request([0.0] * 16, [1, 16])
    )
    assert_error(status, body, 404, "version '3'")
    status, _, body = post(gateway, "/v2/models/ranker/explain", b"{}")
    assert_error(status, body, 404, "no route")
    status, _, body = post(gateway, "/v1/models/ranker:predict", b"{}")
    assert_error(status, body, 404, "/v2")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", "/v2", "GET"),
        ("POST", "/v2/health/live", "GET"),
        ("POST", "/v2/health/ready", "GET"),
        ("POST", "/v2/models/ranker", "GET"),
        ("PUT", "/v2/models/ranker/versions/1", "GET"),
        ("POST", "/v2/models/ranker/ready", "GET"),
        ("DELETE", "/v2/models/ranker/config", "GET"),
        ("GET", "/v2/models/ranker/infer", "POST"),
        ("GET", "/v1/recommend", "POST"),
    ],
)
def test_wrong_method_is_405_with_allow(
    gateway: Gateway, method: str, path: str, allowed: str
) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", gateway.http_port, timeout=10)
    connection.request(method, path)
    response = connection.getresponse()
    body = response.read()
    connection.close()
    assert_error(response.status, body, 405, method, allowed)
    assert response.getheader("Allow") == allowed


def test_server_version_is_the_installed_package_version(
    client: triton_http.InferenceServerClient,
) -> None:
    assert client.get_server_metadata()["version"] == importlib.metadata.version("switchyard")


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        (b"{not json", ["not valid JSON"]),
        (b"[1, 2]", ["JSON object"]),
        (b'{"inputs": 3}', ["'inputs'", "wrong type"]),
        (b'{"outputs": []}', ["'inputs' is required"]),
        (json_request([0.0] * 16, [1, "16"]), ["'features'", "list of integers"]),
        (json_request([0.0] * 15, [1, 16]), ["'features'", "15 values", "16"]),
        (json_request(["a"] * 16, [1, 16]), ["'features'", "FP32"]),
        (json_request([0.0] * 16, [16]), ["'features'", "shape [16]"]),
        (json_request([0.0] * 16, [2**40, 16]), ["'features'", "maximum request size"]),
        (
            json.dumps(
                {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 16], "data": [0] * 16}]}
            ).encode(),
            ["['features']", "['x']"],
        ),
        (
            json.dumps(
                {
                    "inputs": [
                        {
                            "name": "features",
                            "datatype": "INT64",
                            "shape": [1, 16],
                            "data": [0] * 16,
                        }
                    ]
                }
            ).encode(),
            ["'features'", "INT64", "FP32"],
        ),
    ],
)
def test_bad_json_requests_are_400(gateway: Gateway, body: bytes, fragments: list[str]) -> None:
    status, _, response = post(gateway, "/v2/models/ranker/infer", body)
    assert_error(status, response, 400, *fragments)


def binary_request(raw: bytes, declared_size: int, shape: list[int]) -> tuple[bytes, int]:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "features",
                    "datatype": "FP32",
                    "shape": shape,
                    "parameters": {"binary_data_size": declared_size},
                }
            ]
        }
    ).encode()
    return header + raw, len(header)


def test_binary_extension_errors(gateway: Gateway, features: np.ndarray) -> None:
    raw = features.tobytes()
    path = "/v2/models/ranker/infer"
    body, header_length = binary_request(raw[:-4], len(raw) - 4, [4, 16])
    status, _, response = post(
        gateway, path, body, {"Inference-Header-Content-Length": str(header_length)}
    )
    assert_error(status, response, 400, "'features'", "252 raw bytes", "256")
    body, header_length = binary_request(raw, len(raw) + 8, [4, 16])
    status, _, response = post(
        gateway, path, body, {"Inference-Header-Content-Length": str(header_length)}
    )
    assert_error(status, response, 400, "'features'", "binary_data_size")
    body, header_length = binary_request(raw + b"extra", len(raw), [4, 16])
    status, _, response = post(
        gateway, path, body, {"Inference-Header-Content-Length": str(header_length)}
    )
    assert_error(status, response, 400, "5 binary bytes")
    for bad_length in ("abc", str(len(body) + 1), "-1"):
        status, _, response = post(
            gateway, path, body, {"Inference-Header-Content-Length": bad_length}
        )
        assert_error(status, response, 400, "Inference-Header-Content-Length")
    body, header_length = binary_request(raw, len(raw), [4, 16])
    status, _, response = post(
        gateway, path, body, {"Inference-Header-Content-Length": str(header_length - 3)}
    )
    assert_error(status, response, 400, "not valid JSON")


def test_oversized_and_undecodable_bodies(gateway: Gateway) -> None:
    path = "/v2/models/ranker/infer"
    big = b" " * (TEST_MAX_REQUEST_SIZE_BYTES + 1)
    status, _, response = post(gateway, path, big)
    assert_error(status, response, 413, "maximum")
    bomb = gzip.compress(b" " * (TEST_MAX_REQUEST_SIZE_BYTES * 4))
    status, _, response = post(gateway, path, bomb, {"Content-Encoding": "gzip"})
    assert_error(status, response, 413, "decompressed")
    status, _, response = post(gateway, path, b"garbage", {"Content-Encoding": "gzip"})
    assert_error(status, response, 400, "gzip")
    status, _, response = post(gateway, path, b"{}", {"Content-Encoding": "br"})
    assert_error(status, response, 415, "br")


def test_server_survives_bad_requests(
    gateway: Gateway, client: triton_http.InferenceServerClient, features: np.ndarray
) -> None:
    for _ in range(20):
        status, _, _ = post(gateway, "/v2/models/ranker/infer", b"\x00\xff garbage")
        assert status == 400
    assert client.is_server_ready()
    assert client.infer("ranker", [features_input(features)]).as_numpy("score").shape == (4, 1)


def test_metrics_count_requests_by_outcome(
    gateway: Gateway, client: triton_http.InferenceServerClient, features: np.ndarray
) -> None:
    client.infer("ranker", [features_input(features)])
    post(gateway, "/v2/models/nope/infer", b"{}")
    connection = http.client.HTTPConnection("127.0.0.1", gateway.metrics_port, timeout=10)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    assert (
        'switchyard_requests_total{model="ranker",protocol="rest",status="ok",version="1"}' in text
    )
    assert 'model="_unknown",protocol="rest",status="not_found"' in text
    assert "switchyard_request_latency_seconds_bucket" in text
    assert 'switchyard_requests_in_flight{protocol="rest"}' in text


def test_requests_larger_than_one_batch_run_as_several(
    client: triton_http.InferenceServerClient, direct_session: ort.InferenceSession
) -> None:
    rows = np.random.default_rng(5).normal(size=(150, 16)).astype(np.float32)  # batches: 64
    result = client.infer("ranker", [features_input(rows)])
    np.testing.assert_array_equal(
        result.as_numpy("score"), direct_session.run(["score"], {"features": rows})[0]
    )


@pytest.mark.parametrize(
    ("tensor", "fragments"),
    [
        (
            {"datatype": "FP32", "shape": [0, 10**12], "data": []},
            ["no elements", "1000000000000", "maximum"],
        ),
        ({"datatype": "FP32", "shape": [1] * 100, "data": [0.5]}, ["100 dimensions", "32"]),
        ({"datatype": "BYTES", "shape": [1], "data": [10**9]}, ["BYTES", "string", "integer"]),
        ({"datatype": "FP32", "shape": [1, 2], "data": [None, 1.0]}, ["FP32", "null"]),
        ({"datatype": "FP32", "shape": [1, 2], "data": [True, 1.0]}, ["FP32", "true/false"]),
        ({"datatype": "FP32", "shape": [1, 2], "data": ["1.5", 1.0]}, ["FP32", "string"]),
    ],
)
def test_bad_tensors_are_the_callers_fault(
    gateway: Gateway, tensor: dict[str, object], fragments: list[str]
) -> None:
    body = json.dumps({"inputs": [{"name": "features", **tensor}]}).encode()
    status, _, response = post(gateway, "/v2/models/ranker/infer", body)
    assert_error(status, response, 400, "'features'", *fragments)


def test_a_huge_model_name_is_not_found_with_a_short_message(
    gateway: Gateway, client: triton_http.InferenceServerClient, features: np.ndarray
) -> None:
    name = "m" * 20_000
    status, _, response = post(
        gateway, f"/v2/models/{name}/infer", json_request([0.0] * 16, [1, 16])
    )
    assert_error(status, response, 404, "no model or endpoint named 'mmm", "(20000 characters)")
    assert len(response) < 1000, len(response)
    connection = http.client.HTTPConnection("127.0.0.1", gateway.http_port, timeout=10)
    connection.request("GET", f"/v2/models/{name}/versions/{'v' * 20_000}/ready")
    ready = connection.getresponse()
    assert ready.status == 404 and len(ready.read()) < 1000
    assert client.infer("ranker", [features_input(features)]).as_numpy("score").shape == (4, 1)


def test_gzip_bodies_cut_short_or_large_are_handled(gateway: Gateway, features: np.ndarray) -> None:
    path = "/v2/models/ranker/infer"
    whole = gzip.compress(json_request(features.ravel().tolist(), [4, 16]))
    status, _, response = post(
        gateway, path, whole[: len(whole) // 2], {"Content-Encoding": "gzip"}
    )
    assert_error(status, response, 400, "not valid gzip data", "ends early")
    # Over the inline size: inflated off the event loop, answered the same.
    rows = np.random.default_rng(3).normal(size=(200, 16)).astype(np.float32)
    big = gzip.compress(json_request(rows.ravel().tolist(), [200, 16]))
    assert len(big) > INLINE_INFLATE_MAX_BYTES
    status, _, response = post(gateway, path, big, {"Content-Encoding": "gzip"})
    assert status == 200, response
    assert len(json.loads(response)["outputs"][0]["data"]) == 200
    bomb = gzip.compress(b" " * (64 * TEST_MAX_REQUEST_SIZE_BYTES))
    status, _, response = post(gateway, path, bomb, {"Content-Encoding": "gzip"})
    assert_error(status, response, 413, "decompressed")


@pytest.mark.parametrize("request_id", ["a\r\nx-injected: 1", "r" * 5000, "bad id"])
def test_an_unechoable_request_id_is_answered_without_the_header(
    gateway: Gateway, features: np.ndarray, request_id: str
) -> None:
    # OIP's id is any string and comes back in the body; x-request-id only carries ids a
    # header can (a newline there dropped the connection).
    body = json_request(features.reshape(-1).tolist(), list(features.shape), id=request_id)
    status, headers, answer = post(gateway, "/v2/models/ranker/infer", body)
    assert status == 200, answer
    assert json.loads(answer)["id"] == request_id
    assert "x-request-id" not in headers and "x-injected" not in headers
    status, headers, _ = post(
        gateway,
        "/v2/models/ranker/infer",
        json_request(features.reshape(-1).tolist(), list(features.shape), id="fine-id"),
    )
    assert status == 200 and headers["x-request-id"] == "fine-id"
