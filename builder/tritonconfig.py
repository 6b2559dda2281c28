"""Triton's `config.pbtxt` for a model forwardpass builds or serves.

Without a config Triton would assume max_batch_size 4, so every exported model carries one. Rows
layout has a batch dimension, so Triton's dims leave it out; columns layout has none
(max_batch_size 0) and its batch is the last dim, -1.
"""

from __future__ import annotations

from collections.abc import Sequence

from .graph import ExportOptions
from .spec import NetworkSpec

DEFAULT_MAX_BATCH_SIZE = 1_048_576
TRITON_TYPES = {"float32": "TYPE_FP32", "float64": "TYPE_FP64"}
PLATFORM = "onnxruntime_onnx"


def spec_config_text(
    spec: NetworkSpec, options: ExportOptions, name: str, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
) -> str:
    """The config.pbtxt of a spec exported with `options`."""
    outputs = [(options.output_name, spec.sizes[-1])]
    if options.expose_hidden:
        for l, n in enumerate(spec.sizes[1:], 1):
            outputs += [(f"Z{l}", n)] + ([(f"A{l}", n)] if l < spec.depth else [])
    return config_text(
        name, options.layout, options.dtype, (options.input_name, spec.sizes[0]), outputs, max_batch_size
    )


def config_text(
    name: str,
    layout: str,
    dtype: str,
    input: tuple[str, int],
    outputs: Sequence[tuple[str, int]],
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
) -> str:
    """The config.pbtxt text: name, platform, max_batch_size, the input and the outputs (name, width)."""
    rows = layout == "rows"
    lines = [
        f'name: "{name}"',
        f'platform: "{PLATFORM}"',
        f"max_batch_size: {max_batch_size if rows else 0}",
        _tensors("input", [input], dtype, rows),
        _tensors("output", outputs, dtype, rows),
    ]
    return "\n".join(lines) + "\n"


def _tensors(kind: str, tensors: Sequence[tuple[str, int]], dtype: str, rows: bool) -> str:
    entries = []
    for name, width in tensors:
        dims = f"[ {width} ]" if rows else f"[ {width}, -1 ]"
        entries.append(f'  {{\n    name: "{name}"\n    data_type: {TRITON_TYPES[dtype]}\n    dims: {dims}\n  }}')
    return f"{kind} [\n" + ",\n".join(entries) + "\n]"
