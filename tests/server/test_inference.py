"""The inference entry point in process: a real GatewayCore over the demo model, whose
versions' readiness the test switches (an ONNX Runtime model is always ready), to show which
variants an endpoint's ModelReady counts and whose metadata it answers with."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
import yaml

from loadtests.slow_model import build_slow_model
from switchyard.runtimes.base import ModelSignature, Runtime
from switchyard.runtimes.errors import NotFound
from switchyard.server.caller import Actor
from switchyard.server.config import ModelConfig, ModelVersionConfig, load_config
from switchyard.server.gateway_core import GatewayCore
from switchyard.server.metrics import ServerMetrics
from switchyard.server.repository import LoadedModel, ModelRepository, load_model_version


class SwitchedReadiness(Runtime):
    """A loaded runtime whose readiness the test sets; everything else passes through."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self.is_ready = True

    def load(self) -> ModelSignature:
        return self._runtime.load()

    async def infer(
        self,
        inputs: Mapping[str, np.ndarray],
        output_names: Sequence[str],
        deadline_s: float | None = None,
    ) -> dict[str, np.ndarray]:
        return await self._runtime.infer(inputs, output_names, deadline_s)

    async def ready(self) -> bool:
        return self.is_ready

    def close(self) -> None:
        self._runtime.close()


def build_core(
    demo_model_path: Path, workdir: Path
) -> tuple[GatewayCore, dict[str, SwitchedReadiness]]:
    config = {
        "models": [
            {"name": "ranker", "versions": [{"version": "1", "path": str(demo_model_path)}]},
            {"name": "spare", "versions": [{"version": "1", "path": str(demo_model_path)}]},
            # Takes `x`, not `features`: another signature.
            {
                "name": "other",
                "versions": [
                    {
                        "version": "1",
                        "path": str(build_slow_model(workdir / "other.onnx", work_dim=8)),
                    }
                ],
            },
        ],
        "endpoints": [
            {
                "name": "recs",
                "variants": {"live": {"model": "ranker"}, "next": {"model": "spare"}},
                "weights": {"live": 1},  # next takes no primary traffic (a shadow to be)
            },
            {
                "name": "mixed",
                "variants": {"a": {"model": "ranker"}, "b": {"model": "other"}},
                "weights": {"a": 1, "b": 1},  # a tie: the first by name answers metadata
            },
        ],
    }
    path = workdir / "switchyard.yaml"
    path.write_text(yaml.safe_dump(config))
    loaded = load_config(path)
    metrics = ServerMetrics()
    runtimes: dict[str, SwitchedReadiness] = {}

    def loader(model: ModelConfig, version: ModelVersionConfig) -> LoadedModel:
        real = load_model_version(model, version, metrics)
        runtimes[model.name] = SwitchedReadiness(real.runtime)
        return dataclasses.replace(real, runtime=runtimes[model.name])

    repository = ModelRepository(metrics, loader)
    return GatewayCore(loaded, None, metrics, repository), runtimes


def test_endpoint_ready_counts_the_variants_with_primary_traffic(
    demo_model_path: Path, tmp_path: Path
) -> None:
    async def scenario() -> None:
        core, runtimes = build_core(demo_model_path, tmp_path)
        inference = core.inference
        assert not await inference.model_ready("recs")  # the server is not ready yet
        with pytest.raises(NotFound, match="no model or endpoint named 'nope'"):
            await inference.model_ready("nope")  # unknown even before ready
        await core.start()
        try:
            assert await inference.model_ready("recs")
            runtimes["spare"].is_ready = False  # weight 0: callers never wait for it
            assert await inference.model_ready("recs")
            await core.control.set_weights("recs", {"live": 9, "next": 1}, actor=Actor("test"))
            assert not await inference.model_ready("recs")  # now it takes 10%
            runtimes["spare"].is_ready = True
            runtimes["ranker"].is_ready = False
            assert not await inference.model_ready("recs")
            assert not await inference.model_ready("mixed")
            with pytest.raises(NotFound, match="'recs' is an endpoint and has no version '1'"):
                await inference.model_ready("recs", "1")
        finally:
            await core.stop()

    asyncio.run(scenario())


def test_endpoint_metadata_follows_its_heaviest_primary_variant(
    demo_model_path: Path, tmp_path: Path
) -> None:
    async def scenario() -> None:
        core, _ = build_core(demo_model_path, tmp_path)
        await core.start()
        try:
            inference = core.inference
            mixed = inference.model_metadata("mixed")
            assert mixed.name == "mixed" and mixed.versions == ()
            assert [t.name for t in mixed.inputs] == ["features"]  # a and b tie: a answers
            await core.control.set_weights("mixed", {"a": 1, "b": 2}, actor=Actor("test"))
            assert [t.name for t in inference.model_metadata("mixed").inputs] == ["x"]
            config = inference.model_config("mixed")
            assert config.name == "mixed"
            other = inference.model_config("other")
            other.name = "mixed"
            assert config == other
        finally:
            await core.stop()

    asyncio.run(scenario())
