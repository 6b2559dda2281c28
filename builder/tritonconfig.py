"""Triton's `config.pbtxt` for a model forwardpass builds or serves, as a ModelConfig message.

Without a config Triton would assume max_batch_size 4, so every exported model carries one. Rows
layout has a batch dimension, so Triton's dims leave it out; columns layout has none
(max_batch_size 0) and its batch is the last dim, -1. The server builds the same message for a
model folder that has no config, so both sides agree on what "the default" is.
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf import text_format

from forwardpass.dtypes import dtype as dtype_named
from forwardpass.protos.model_config_pb2 import DataType, ModelConfig

from .graph import ExportOptions, output_widths
from .spec import NetworkSpec

DEFAULT_MAX_BATCH_SIZE = 1_048_576
PLATFORM = "onnxruntime_onnx"


def spec_config(
    spec: NetworkSpec, options: ExportOptions, name: str, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
) -> ModelConfig:
    """The config of a spec exported with `options`."""
    return model_config(
        name, options.layout, options.dtype, (options.input_name, spec.sizes[0]), output_widths(spec, options),
        max_batch_size,
    )  # fmt: skip


def model_config(
    name: str,
    layout: str,
    dtype: str,
    input: tuple[str, int],
    outputs: Sequence[tuple[str, int]],
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
) -> ModelConfig:
    """Name, platform, max_batch_size, the input and the outputs (name, width)."""
    rows = layout == "rows"
    data_type = DataType.Value(dtype_named(dtype).config)
    config = ModelConfig(name=name, platform=PLATFORM, max_batch_size=max_batch_size if rows else 0)
    for tensors, (tensor_name, width) in [(config.input, input)] + [(config.output, out) for out in outputs]:
        tensors.add(name=tensor_name, data_type=data_type, dims=[width] if rows else [width, -1])
    return config


def config_text(config: ModelConfig) -> str:
    """The config.pbtxt text of a message (protobuf's text format, as Triton reads it)."""
    text = text_format.MessageToString(config)
    if config.max_batch_size == 0:  # proto3 prints no zeros, but Triton's autocomplete reads a missing one as "guess"
        text = text.replace("input {", "max_batch_size: 0\ninput {", 1)
    return text
