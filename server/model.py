"""One loaded model version: its tensors as the protocol shows them, its limits, and its session.

This is the model layer under the servicer: it checks shapes, batch limits and requested outputs
and runs onnxruntime, raising ForwardpassError kinds; it knows nothing about gRPC.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from forwardpass.errors import ForwardpassError, Kind
from forwardpass.protos.model_config_pb2 import ModelConfig
from forwardpass.runtime import Runtime

from .batching import Batcher
from .stats import Statistics

# The protocol's datatype names (KServe V2 / Triton) for the dtypes forwardpass serves.
DATATYPES = {np.dtype(np.float32): "FP32", np.dtype(np.float64): "FP64"}
PLATFORM = "onnxruntime_onnx"


@dataclass(frozen=True)
class Tensor:
    """A tensor as metadata shows it: -1 marks the batch dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def shape_text(self) -> str:
        return "[" + ", ".join(str(d) for d in self.shape) + "]"


@dataclass
class ServedModel:
    """A model version ready to serve: tensors, limits, session and statistics."""

    name: str
    version: int
    runtime: Runtime
    input: Tensor
    outputs: tuple[Tensor, ...]
    max_batch_size: int  # rows per request; 0 means no limit from the config
    config: ModelConfig  # the config.pbtxt as settled against the model file
    stats: Statistics = field(default_factory=Statistics)
    batcher: Batcher | None = None

    def __post_init__(self) -> None:
        batching = self.config.dynamic_batching
        if self.config.HasField("dynamic_batching") and self.max_batch_size > 0:
            self.batcher = Batcher(
                self.runtime,
                self.batch_axis,
                self.max_batch_size,
                batching.preferred_batch_size,
                batching.max_queue_delay_microseconds,
                self.stats,
            )

    @property
    def batch_axis(self) -> int:
        return self.input.shape.index(-1)

    @property
    def dtype(self) -> np.dtype:
        return self.runtime.dtype

    def check_shape(self, shape: tuple[int, ...]) -> int:
        """The number of rows a request of this input shape carries, or the error that names why not."""
        expected = self.input.shape
        fits = len(shape) == len(expected) and all(d == n if d != -1 else n >= 0 for d, n in zip(expected, shape))
        if not fits:
            raise ForwardpassError(
                f"unexpected shape for input '{self.input.name}' for model '{self.name}': "
                f"expected {self.input.shape_text()}, got [{', '.join(str(n) for n in shape)}]"
            )
        rows = shape[self.batch_axis]
        if rows == 0:
            raise ForwardpassError(f"empty batch: input '{self.input.name}' for model '{self.name}' has 0 rows")
        if self.max_batch_size and rows > self.max_batch_size:
            raise ForwardpassError(
                f"batch of {rows} rows is above the max_batch_size {self.max_batch_size} of model '{self.name}'"
            )
        return rows

    def output_names(self, requested: Sequence[str]) -> tuple[str, ...]:
        """The outputs to compute: those requested, or every served one."""
        served = [t.name for t in self.outputs]
        if not requested:
            return tuple(served)
        for name in requested:
            if name not in served:
                raise ForwardpassError(f"unknown output '{name}' for model '{self.name}'; it has {', '.join(served)}")
        if len(set(requested)) != len(requested):
            raise ForwardpassError(f"an output is requested twice: {', '.join(requested)}")
        return tuple(requested)

    def infer(self, x: np.ndarray, rows: int, outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Run x (shape-checked by check_shape), through the dynamic batcher when the config has one."""
        if self.batcher is not None:
            return self.batcher.infer(x, rows, outputs)
        result = self.runtime.run(x, outputs)
        self.stats.record_execution()
        return result


def not_found(name: str, version: str, known: Sequence[str]) -> ForwardpassError:
    """The error for a model or version that is not loaded (NOT_FOUND, as KServe answers)."""
    if version:
        return ForwardpassError(
            f"model '{name}' has no loaded version {version}; loaded: {', '.join(known) or 'none'}", Kind.NOT_FOUND
        )
    return ForwardpassError(f"unknown model '{name}'; the repository has {', '.join(known) or 'none'}", Kind.NOT_FOUND)
