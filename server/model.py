"""One loaded model version: its tensors as the protocol shows them, its limits, and its session.

The data plane checks a request against these tensors and limits (server/inference.py), then
calls `infer`, which runs onnxruntime directly or through the dynamic batcher.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from forwardpass.builder.readback import ReadBack
from forwardpass.dtypes import BY_DATATYPE
from forwardpass.protos.model_config_pb2 import ModelConfig
from forwardpass.runtime import Runtime

from .batching import Batcher
from .stats import Statistics
from .tracing import Trace


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
    network: ReadBack | None = None  # the file read back: its spec, layout and dtype (for the page)
    # The values in one row of each output, by name: an answer's size is checked by them on every request.
    output_widths: dict[str, int] = field(init=False)
    output_names: tuple[str, ...] = field(init=False)  # in the model's order: what a request naming none gets
    batch_axis: int = field(init=False)  # where the input's -1 is: its rows
    # The values in one row of all outputs together: the answer to a request that names none, sized per row.
    row_values: int = field(init=False)
    # The input's shape before and after its rows when it has one -1, else None: a request's shape is
    # compared with them as slices, in C (server/inference.py), with nothing else looked up per request.
    shape_around_rows: tuple[tuple[int, ...], tuple[int, ...]] | None = field(init=False)
    input_dtype: np.dtype = field(init=False)  # the input's values as NumPy holds them
    # The bytes of one row of the input when it has one -1 (else None), and of one row of every output
    # together: a request's raw bytes and its answer are sized by them.
    input_row_bytes: int | None = field(init=False)
    answer_row_bytes: int = field(init=False)

    def __post_init__(self) -> None:
        self.output_widths = {t.name: math.prod(d for d in t.shape if d != -1) for t in self.outputs}
        self.output_names = tuple(t.name for t in self.outputs)
        self.batch_axis = self.input.shape.index(-1)
        self.row_values = sum(self.output_widths.values())
        shape, axis = self.input.shape, self.batch_axis
        self.shape_around_rows = (shape[:axis], shape[axis + 1 :]) if shape.count(-1) == 1 else None
        self.input_dtype = BY_DATATYPE[self.input.datatype].numpy
        itemsize = self.input_dtype.itemsize  # the outputs' too
        self.input_row_bytes = math.prod(d for d in shape if d != -1) * itemsize if self.shape_around_rows else None
        self.answer_row_bytes = self.row_values * itemsize
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
    def dtype(self) -> np.dtype:
        return self.runtime.dtype

    def infer(
        self, x: np.ndarray, rows: int, outputs: tuple[str, ...], trace: Trace | None = None
    ) -> dict[str, np.ndarray]:
        """Run x, already checked by the data plane, through the dynamic batcher when the config has one;
        a traced request's queue and compute phases are noted on its trace. The batcher counts its runs;
        a run of one request is counted with its answer (the data plane's record_success, ran_alone)."""
        if self.batcher is not None:
            return self.batcher.infer(x, rows, outputs, trace)
        if trace is None:
            return self.runtime.run_trusted(x, outputs)
        start = time.monotonic_ns()
        result = self.runtime.run_trusted(x, outputs)
        trace.add("compute", start, time.monotonic_ns())
        return result
