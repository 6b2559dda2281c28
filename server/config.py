"""A model's Triton `config.pbtxt`: read it as Triton would, check it against the model file.

Honoured: name, platform/backend, max_batch_size, input, output, dynamic_batching, version_policy,
default_model_filename and the instance_group kind (KIND_GPU means the CUDA provider). Any other
field Triton knows is parsed and ignored with a warning; a field Triton does not know is an error,
as it is in Triton. Without a config, the one `forwardpass build` writes applies.
"""

from __future__ import annotations

import logging
from pathlib import Path

from google.protobuf import text_format

from forwardpass.builder.tritonconfig import PLATFORM, model_config
from forwardpass.dtypes import of_numpy
from forwardpass.errors import ForwardpassError
from forwardpass.layout import CONFIG_FILE, MODEL_FILE, model_folders
from forwardpass.protos.model_config_pb2 import DataType, ModelConfig, ModelInstanceGroup
from forwardpass.runtime import Runtime

from .model import Tensor

log = logging.getLogger(__name__)

HONOURED = {
    "name", "platform", "backend", "max_batch_size", "input", "output", "dynamic_batching", "version_policy",
    "instance_group", "default_model_filename",
}  # fmt: skip
BACKEND = "onnxruntime"


def read_config(model_dir: Path) -> ModelConfig | None:
    """The parsed config.pbtxt of a model folder, or None when there is none."""
    config = parse_config(model_dir)
    for descriptor, _ in config.ListFields() if config is not None else ():
        if descriptor.name not in HONOURED:
            log.warning("%s: field '%s' is ignored by forwardpass", model_dir / CONFIG_FILE, descriptor.name)
    return config


def parse_config(model_dir: Path) -> ModelConfig | None:
    """read_config without its warnings about ignored fields."""
    path = model_dir / CONFIG_FILE
    if not path.exists():
        return None
    config = ModelConfig()
    try:
        text_format.Parse(path.read_text(), config)
    except (text_format.ParseError, UnicodeDecodeError) as exc:
        raise ForwardpassError(f"{path}: {exc}") from None
    return config


def asks_for_batching(repository: Path) -> bool:
    """Whether any model folder's config.pbtxt asks for dynamic batching (one that cannot be read
    counts as not: loading it says what is wrong)."""
    for folder in model_folders(repository):
        try:  # quietly: loading the model warns about its fields once
            config = parse_config(folder)
        except (ForwardpassError, OSError):
            continue
        if config is not None and config.HasField("dynamic_batching") and config.max_batch_size > 0:
            return True
    return False


def default_config(name: str, runtime: Runtime, layout: str) -> ModelConfig:
    """The config `forwardpass build` would write for this model."""
    width = _widths(runtime, layout)
    outputs = [(o, width[o]) for o in runtime.output_names]
    return model_config(
        name, layout, of_numpy(runtime.dtype).name, (runtime.input_name, width[runtime.input_name]), outputs
    )


def settle(config: ModelConfig, name: str, runtime: Runtime, layout: str, where: Path) -> tuple[Tensor, tuple]:
    """Check a config against the model and fill what it leaves out; returns the served tensors.

    Shapes follow Triton: with max_batch_size > 0 the config's dims leave out the batch, which
    metadata shows as a leading -1; a columns model has no leading batch (max_batch_size 0) and
    its batch is the last dim.
    """
    if config.name and config.name != name:
        raise ForwardpassError(f"{where}: name '{config.name}' differs from the folder name '{name}'")
    if config.platform not in ("", PLATFORM) or config.backend not in ("", BACKEND):
        raise ForwardpassError(f"{where}: platform '{config.platform or config.backend}' is not {PLATFORM}")
    if config.max_batch_size < 0:
        raise ForwardpassError(f"{where}: max_batch_size {config.max_batch_size} is negative")
    if layout == "columns" and config.max_batch_size > 0:
        raise ForwardpassError(
            f"{where}: max_batch_size {config.max_batch_size} on a columns-layout model; its batch is the last "
            "dimension, which Triton serves with max_batch_size: 0"
        )
    served = of_numpy(runtime.dtype)
    datatype, data_type = served.datatype, DataType.Value(served.config)
    width = _widths(runtime, layout)
    rows = layout == "rows"

    def shape(w: int) -> tuple[int, ...]:
        return (-1, w) if rows else (w, -1)

    def dims(w: int) -> list[int]:
        return [w] if config.max_batch_size > 0 else list(shape(w))

    if not config.input:
        config.input.add(name=runtime.input_name, data_type=data_type, dims=dims(width[runtime.input_name]))
    if not config.output:
        for out in runtime.output_names:
            config.output.add(name=out, data_type=data_type, dims=dims(width[out]))
    if len(config.input) != 1 or config.input[0].name != runtime.input_name:
        listed = ", ".join(f"'{i.name}'" for i in config.input)
        raise ForwardpassError(f"{where}: input {listed} does not match the model's one input '{runtime.input_name}'")
    for tensor in [*config.input, *config.output]:
        if tensor.name not in width:
            raise ForwardpassError(f"{where}: output '{tensor.name}' is not an output of the model")
        if tensor.data_type != data_type or list(tensor.dims) != dims(width[tensor.name]):
            raise ForwardpassError(
                f"{where}: '{tensor.name}' is {DataType.Name(tensor.data_type)} dims {list(tensor.dims)}, "
                f"the model has {DataType.Name(data_type)} dims {dims(width[tensor.name])}"
            )
    batching = config.dynamic_batching
    if config.HasField("dynamic_batching") and config.max_batch_size == 0:
        log.warning("%s: dynamic_batching needs max_batch_size > 0; requests run one by one", where)
    if any(
        size < 1 or (config.max_batch_size and size > config.max_batch_size) for size in batching.preferred_batch_size
    ):
        raise ForwardpassError(
            f"{where}: preferred_batch_size {list(batching.preferred_batch_size)} outside 1..max_batch_size"
        )
    served_in = Tensor(runtime.input_name, datatype, shape(width[runtime.input_name]))
    return served_in, tuple(Tensor(o.name, datatype, shape(width[o.name])) for o in config.output)


def provider_for(config: ModelConfig, default: str) -> str:
    """The execution provider the config's instance_group asks for, or the server's default."""
    kinds = {group.kind for group in config.instance_group}
    if ModelInstanceGroup.KIND_GPU in kinds:
        return "cuda"
    if ModelInstanceGroup.KIND_CPU in kinds:
        return "cpu"
    return default


def model_file(config: ModelConfig) -> str:
    return config.default_model_filename or MODEL_FILE


def _widths(runtime: Runtime, layout: str) -> dict[str, int]:
    """Each input's and output's non-batch width, read from the session."""
    axis = 1 if layout == "rows" else 0
    tensors = [*runtime.session.get_inputs(), *runtime.session.get_outputs()]
    return {t.name: t.shape[axis] for t in tensors}
