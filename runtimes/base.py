"""The runtime interface every model backend implements, and the metadata it reports."""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output: OIP datatype and shape, -1 marking a variable dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ModelSignature:
    """What a loaded model takes and returns, and which platform runs it."""

    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    # The most rows one call may carry, when the runtime has a limit (Triton's config does).
    max_batch_size: int | None = None
    # By name, for the look-ups every request makes.
    _inputs_by_name: Mapping[str, TensorSpec] = field(init=False, repr=False, compare=False)
    _outputs_by_name: Mapping[str, TensorSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_inputs_by_name", {spec.name: spec for spec in self.inputs})
        object.__setattr__(self, "_outputs_by_name", {spec.name: spec for spec in self.outputs})

    def input(self, name: str) -> TensorSpec | None:
        return self._inputs_by_name.get(name)

    def output(self, name: str) -> TensorSpec | None:
        return self._outputs_by_name.get(name)


class Runtime(abc.ABC):
    """A loaded model that runs inference on numpy arrays.

    `load` may block (reading files, compiling, warming up) and is called once, before the
    model is served. `infer` is awaited on the event loop; implementations that compute
    on the CPU or GPU do so off the loop so that the loop keeps taking requests.
    """

    @abc.abstractmethod
    def load(self) -> ModelSignature:
        """Load the model and return its signature; raise ModelLoadError on failure."""

    @abc.abstractmethod
    async def infer(
        self,
        inputs: Mapping[str, np.ndarray],
        output_names: Sequence[str],
        deadline_s: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Run the model on validated inputs and return the named outputs.

        `deadline_s` (time.monotonic) is when the last caller waiting on this call gives up;
        remote runtimes pass it on, in-process ones may ignore it.
        """

    async def ready(self) -> bool:
        """Whether the model can serve now; remote runtimes ask their server."""
        return True

    def close(self) -> None:  # noqa: B027 - optional hook, most runtimes hold nothing
        """Release what the runtime holds (threads, sessions), from any thread."""

    async def aclose(self) -> None:
        """Release everything, on the event loop (connections that belong to it too)."""
        self.close()
