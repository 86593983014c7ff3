"""ONNX Runtime as a Switchyard runtime (CPU, CUDA or TensorRT execution providers)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from switchyard.runtimes.base import ModelSignature, Runtime, TensorSpec
from switchyard.runtimes.datatypes import OIP_TO_NUMPY
from switchyard.runtimes.errors import ModelLoadError
from switchyard.runtimes.run_placement import RunPlacement

log = logging.getLogger(__name__)

# "auto" tries these in order and keeps those this onnxruntime build offers.
AUTO_PROVIDER_PREFERENCE = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "CPUExecutionProvider",
)
CPU_PROVIDER = "CPUExecutionProvider"
# About what a thread-pool hop costs here: submit, wake a thread, hand the result back.
DEFAULT_INLINE_BELOW_S = 0.0002

ORT_TYPE_TO_OIP = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


@dataclass(frozen=True, slots=True)
class OrtOptions:
    """Runtime options of an ONNX Runtime model (the config's `runtime_options`)."""

    execution_providers: tuple[str, ...] = ("auto",)
    intra_op_threads: int = 0  # 0 lets ONNX Runtime choose
    inter_op_threads: int = 0
    # Sessions run concurrently from this many threads; ONNX Runtime releases the GIL.
    max_concurrent_runs: int = 1
    warmup: bool = True
    # Runs that take less than this run on the event loop itself (runtimes/run_placement.py):
    # for a model of microseconds, handing it to a thread costs more than the run. 0: always
    # a thread.
    inline_below_s: float = DEFAULT_INLINE_BELOW_S


def resolve_providers(requested: Sequence[str], available: Sequence[str]) -> list[str]:
    """The execution providers to try, best first, always ending with the CPU."""
    wanted = AUTO_PROVIDER_PREFERENCE if "auto" in requested else tuple(requested)
    missing = [p for p in wanted if p not in available]
    if missing and "auto" not in requested:
        log.warning("execution providers %s are not in this onnxruntime build", missing)
    chosen = [p for p in wanted if p in available and p != CPU_PROVIDER]
    return [*chosen, CPU_PROVIDER]


def _tensor_spec(node: ort.NodeArg) -> TensorSpec:
    datatype = ORT_TYPE_TO_OIP.get(node.type)
    if datatype is None:
        raise ModelLoadError(f"tensor '{node.name}' has type {node.type}, which is not supported")
    # Symbolic or unknown dimensions are variable: -1.
    shape = tuple(dim if isinstance(dim, int) and dim >= 0 else -1 for dim in node.shape)
    return TensorSpec(node.name, datatype, shape)


def _warmup_inputs(specs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    """One all-zero input row per tensor, variable dimensions set to 1."""
    feeds = {}
    for spec in specs:
        shape = tuple(1 if dim < 0 else dim for dim in spec.shape)
        if spec.datatype == "BYTES":
            feeds[spec.name] = np.full(shape, "", dtype=object)
        else:
            feeds[spec.name] = np.zeros(shape, dtype=OIP_TO_NUMPY[spec.datatype])
    return feeds


class OnnxRuntimeModel(Runtime):
    """One ONNX model in one InferenceSession, run from a small thread pool, or on the event
    loop while its runs are faster than a thread hop (`inline_below_s`, see run_placement)."""

    def __init__(self, model_path: Path, options: OrtOptions, model_label: str) -> None:
        self._path = model_path
        self._options = options
        self._label = model_label
        self._session: ort.InferenceSession | None = None
        self._string_inputs: frozenset[str] = frozenset()
        self._executor = ThreadPoolExecutor(
            max_workers=options.max_concurrent_runs, thread_name_prefix=f"ort-{model_label}"
        )
        self._placement = RunPlacement(options.inline_below_s)

    def load(self) -> ModelSignature:
        if not self._path.is_file():
            raise ModelLoadError(f"model '{self._label}': file not found: {self._path}")
        providers = resolve_providers(
            self._options.execution_providers, ort.get_available_providers()
        )
        self._session = self._create_session(providers)
        log.info(
            "model '%s' runs on %s (from %s)",
            self._label,
            ", ".join(self._session.get_providers()),
            self._path,
        )
        signature = ModelSignature(
            platform="onnxruntime_onnx",
            inputs=tuple(_tensor_spec(node) for node in self._session.get_inputs()),
            outputs=tuple(_tensor_spec(node) for node in self._session.get_outputs()),
        )
        self._string_inputs = frozenset(s.name for s in signature.inputs if s.datatype == "BYTES")
        if self._options.warmup:
            self._warm_up(signature)
        return signature

    def _warm_up(self, signature: ModelSignature) -> None:
        """One run on an all-zero row, so the first request does not pay for lazy set-up; a
        model that cannot run it is not served (a ModelLoadError, not onnxruntime's own)."""
        assert self._session is not None
        try:
            self._session.run(None, _warmup_inputs(signature.inputs))
        except Exception as exc:  # onnxruntime raises several unrelated types
            raise ModelLoadError(
                f"model '{self._label}': the warm-up run (one all-zero row, variable "
                f"dimensions set to 1) failed: {_first_line(exc)}; fix the model, or set "
                "runtime_options.warmup: false to serve it without one"
            ) from exc

    def _create_session(self, providers: list[str]) -> ort.InferenceSession:
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = self._options.intra_op_threads
        session_options.inter_op_num_threads = self._options.inter_op_threads
        while True:
            try:
                return ort.InferenceSession(
                    str(self._path), sess_options=session_options, providers=providers
                )
            except Exception as exc:  # onnxruntime raises several unrelated types
                if len(providers) > 1:
                    # An accelerator present in the build but not usable on this host
                    # (missing CUDA or TensorRT libraries): fall back to the next one.
                    log.warning(
                        "model '%s': %s failed (%s); trying %s",
                        self._label,
                        providers[0],
                        str(exc).splitlines()[0],
                        providers[1],
                    )
                    providers = providers[1:]
                    continue
                raise ModelLoadError(
                    f"model '{self._label}': {self._path} is not a loadable ONNX model: "
                    f"{_first_line(exc)}"
                ) from exc

    def _run(
        self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str]
    ) -> list[np.ndarray]:
        assert self._session is not None, "load() must be called before infer()"
        feeds = dict(inputs)
        for name in self._string_inputs:
            # OIP BYTES arrive as bytes objects; ONNX string tensors take str.
            feeds[name] = np.vectorize(_as_str, otypes=[object])(feeds[name])
        # onnxruntime ships no types; its run() answers one array per output name.
        outputs: list[np.ndarray] = self._session.run(list(output_names), feeds)
        return outputs

    async def infer(
        self,
        inputs: Mapping[str, np.ndarray],
        output_names: Sequence[str],
        deadline_s: float | None = None,  # a started session.run cannot be interrupted
    ) -> dict[str, np.ndarray]:
        inline = self._placement.next_inline()
        if inline:
            results, run_s = self._timed_run(inputs, output_names)
        else:
            loop = asyncio.get_running_loop()
            results, run_s = await loop.run_in_executor(
                self._executor, self._timed_run, inputs, output_names
            )
        self._placement.observe(run_s, inline)
        return dict(zip(output_names, results, strict=True))

    def _timed_run(
        self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str]
    ) -> tuple[list[np.ndarray], float]:
        started_s = time.perf_counter()
        results = self._run(inputs, output_names)
        return results, time.perf_counter() - started_s

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._session = None


def _first_line(error: Exception) -> str:
    """What onnxruntime says, without the stack trace some of its messages carry."""
    text = str(error).strip()
    return text.splitlines()[0] if text else repr(error)


def _as_str(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
