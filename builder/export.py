"""Writing models to disk: one file, or a Triton-layout repository `models/<name>/<version>/`.

Writes are atomic (a temporary file renamed into place), and nothing is overwritten without
`force`: a new build into an existing model folder becomes version N+1. A server that rescans the
repository (poll mode) never sees half a build: config.pbtxt is written first, and a new version
folder is filled beside the model folders and renamed into place whole.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx

from forwardpass.errors import SpecError
from forwardpass.layout import CONFIG_FILE, MODEL_FILE, WEIGHTS_FILE, check_model_name, version_folders

from .graph import ExportOptions, build_model, check, serialize
from .npz import npz_bytes
from .spec import NetworkSpec
from .tritonconfig import DEFAULT_MAX_BATCH_SIZE, config_text, spec_config


@dataclass(frozen=True)
class Written:
    """The files one export wrote."""

    model: Path
    config: Path | None = None
    weights: Path | None = None


def export_file(
    spec: NetworkSpec, options: ExportOptions, path: str | os.PathLike, force: bool = False, name: str | None = None
) -> Written:
    """Build, check and write one .onnx file; an existing file is kept unless `force`."""
    path = Path(path)
    if path.exists() and not force:
        raise SpecError(f"{path} exists; pass --force to replace it")
    write_atomic(path, model_bytes(spec, options, name))
    return Written(path)


def export_to_repository(
    spec: NetworkSpec,
    options: ExportOptions,
    repository: str | os.PathLike,
    name: str,
    version: int | None = None,
    force: bool = False,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    save_weights: bool = True,
) -> Written:
    """Write <repository>/<name>/<version>/model.onnx (+ weights.npz) and <name>/config.pbtxt.

    Without a version this is the next one (1 in a new folder); with `force` and no version the
    latest is replaced. An existing config that describes another network is never overwritten
    without `force`, since the versions already there would no longer match it.
    """
    if max_batch_size < 1:
        raise SpecError(f"max_batch_size must be at least 1, got {max_batch_size}")
    model_dir = Path(repository) / check_model_name(name)
    versions = existing_versions(model_dir)
    if version is None:
        version = versions[-1] if force and versions else (versions[-1] + 1 if versions else 1)
    elif version < 1:
        raise SpecError(f"version must be a positive int, got {version}")
    elif version in versions and not force:
        raise SpecError(
            f"{model_dir / str(version)} exists; pass --force to replace it, "
            f"or leave out --version to write {versions[-1] + 1}"
        )
    config = config_text(spec_config(spec, options, name, max_batch_size))
    config_path = model_dir / CONFIG_FILE
    if config_path.exists() and config_path.read_text() != config and not force:
        raise SpecError(
            f"{config_path} describes a different model (name, sizes, layout, dtype or limits); "
            "use another --name, or --force"
        )
    data = model_bytes(spec, options, name)
    write_atomic(config_path, config.encode())  # first: a version must never load without its config
    version_dir = model_dir / str(version)
    files = {MODEL_FILE: data, **({WEIGHTS_FILE: npz_bytes(spec)} if save_weights else {})}
    if version_dir.exists():  # --force over an existing version: file by file, each atomic
        for file, content in files.items():
            write_atomic(version_dir / file, content)
    else:
        write_folder_atomic(version_dir, files)
    return Written(version_dir / MODEL_FILE, config_path, version_dir / WEIGHTS_FILE if save_weights else None)


def model_bytes(spec: NetworkSpec, options: ExportOptions, name: str | None = None) -> bytes:
    """The checked model's bytes."""
    model = build_model(spec, options, name)
    check(model)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    return serialize(model)


def existing_versions(model_dir: Path) -> list[int]:
    """The version folders in a model folder, ascending."""
    return list(version_folders(model_dir))


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file 0600; a repository is read by servers under other users (a container's
        # uid 1000, Triton's), so give it the mode a plain open() would under the umask.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_folder_atomic(path: Path, files: dict[str, bytes]) -> None:
    """Fill a new folder in a hidden one two levels up (the repository, whose dot folders are no
    models), then rename it into place: it appears whole or not at all."""
    staging = Path(tempfile.mkdtemp(dir=path.parent.parent, prefix=f".{path.parent.name}-{path.name}.", suffix=".tmp"))
    try:
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp's 0700 would shut out a server under another user
        for file, content in files.items():
            write_atomic(staging / file, content)
        try:
            os.rename(staging, path)  # atomic; fails if the folder appeared meanwhile
        except OSError as exc:
            raise SpecError(f"{path} appeared while this build wrote it ({exc.strerror}); build again") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _umask() -> int:
    """The process's umask (reading it means setting it: put it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
