"""The standalone gateway exports the latency policy's signal for an HPA or KEDA."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import tritonclient.http as triton_http

from loadtests.gateway_process import demo_model_config, metric_sum, scrape_metrics, start_gateway


def test_autoscaled_models_export_replicas_needed(demo_model_path: Path, tmp_path: Path) -> None:
    config = demo_model_config(demo_model_path, autoscaling_signal_interval_s=0.2)
    config["models"][0]["autoscaling"] = {"target_latency_s": 0.05, "max_ongoing_requests": 4}
    gateway = start_gateway(config, tmp_path)
    try:
        client = triton_http.InferenceServerClient(gateway.http_url)
        tensor = triton_http.InferInput("features", [1, 16], "FP32")
        tensor.set_data_from_numpy(np.zeros((1, 16), dtype=np.float32))
        labels = {"deployment": "ranker", "variant": "1"}
        deadline = time.monotonic() + 20
        while True:
            for _ in range(20):
                client.infer("ranker", [tensor])
            text = scrape_metrics(gateway)
            if "switchyard_autoscaling_replicas_needed{" in text:
                break
            assert time.monotonic() < deadline, "no autoscaling signal exported"
            time.sleep(0.2)
        assert metric_sum(text, "switchyard_autoscaling_replicas_needed", **labels) > 0
        ratio = metric_sum(text, "switchyard_autoscaling_latency_ratio", **labels)
        assert 0 < ratio < 1  # a 7 us model is far under a 50 ms target
    finally:
        gateway.stop()
