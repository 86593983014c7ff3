from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from loadtests.gateway_process import Gateway, demo_model_config, start_gateway
from switchyard.demo.build_model import ensure_built

# Small on purpose, so the size limits can be tested with small payloads.
TEST_MAX_REQUEST_SIZE_BYTES = 256 * 1024


@pytest.fixture(scope="session")
def demo_model_path() -> Path:
    return ensure_built()


@pytest.fixture(scope="session")
def direct_session(demo_model_path: Path) -> ort.InferenceSession:
    """ONNX Runtime called directly: the reference every served output is compared with."""
    return ort.InferenceSession(str(demo_model_path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="session")
def gateway(demo_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = demo_model_config(demo_model_path, max_request_size_bytes=TEST_MAX_REQUEST_SIZE_BYTES)
    running = start_gateway(config, tmp_path_factory.mktemp("gateway"))
    yield running
    assert running.stop() == 0, running.log()


@pytest.fixture
def features() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(4, 16)).astype(np.float32)
