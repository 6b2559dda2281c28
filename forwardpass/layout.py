"""The model repository's layout, as Triton has it, and the rules for its names:

    <repository>/<model>/config.pbtxt               optional
    <repository>/<model>/<version>/model.onnx       the file the server loads
    <repository>/<model>/<version>/weights.npz      the intended weights, when forwardpass built it

A model name is one entry of the repository folder: never a path. A version is a positive number
written in ASCII digits without a leading zero, so that each version has exactly one spelling in
folder names and in every request ("01", "１" and "²" are not versions). The builder, the server,
its metrics and its workers all find models and versions here, by the same rules.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path

from .errors import ForwardpassError, Kind

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
CONFIG_FILE = "config.pbtxt"
WEIGHTS_FILE = "weights.npz"
VERSION = re.compile(r"[1-9][0-9]{0,17}")  # ASCII only (re's [0-9], unlike str.isdigit); fits in int64
FORBIDDEN_IN_NAMES = ("/", "\\", "\0")
SHOWN_NAME_CHARS = 200  # a message quotes at most this much of a name a caller sent
_warned: set[Path] = set()


def shown(name: str, limit: int = SHOWN_NAME_CHARS, quote: Callable[[str], str] = repr) -> str:
    """A caller's string as a message (repr) or a log line (str) quotes it: cut to `limit` characters,
    saying how long it was, so no caller's string is echoed whole."""
    if len(name) <= limit:
        return quote(name)
    return f"{quote(name[:limit])}... ({len(name)} characters)"


def check_model_name(name: str) -> str:
    """The name, if it can be a model folder of the repository; INVALID_ARGUMENT otherwise."""
    if not name:
        raise ForwardpassError("the model name is empty")
    if any(c in name for c in FORBIDDEN_IN_NAMES) or name.startswith("."):
        raise ForwardpassError(
            f"model name {shown(name)} is not a model folder name: no path separators, no leading dot"
        )
    return name


def parse_version(text: str) -> int:
    """A requested version as a number; INVALID_ARGUMENT for any other spelling."""
    if not VERSION.fullmatch(text):
        raise ForwardpassError(
            f"model version {text!r} is not a version: ASCII digits without a leading zero, e.g. '1'"
        )
    return int(text)


def model_folders(repository: Path) -> list[Path]:
    """The repository's model folders, by name (a missing repository has none)."""
    if not repository.is_dir():
        return []
    return sorted(p for p in repository.iterdir() if p.is_dir() and not p.name.startswith("."))


def model_folder(repository: Path, name: str) -> Path | None:
    """The folder of a model name (checked), or None when the repository has no such model."""
    folder = repository / check_model_name(name)
    return folder if folder in model_folders(repository) else None


def version_folders(model_dir: Path) -> dict[int, Path]:
    """The version folders of a model folder by number; other folder names are skipped, with a warning."""
    if not model_dir.is_dir():
        return {}
    versions = {}
    for path in sorted(model_dir.iterdir()):
        if not path.is_dir():
            continue
        if VERSION.fullmatch(path.name):
            versions[int(path.name)] = path
        elif path not in _warned:  # once: poll mode rescans every few seconds
            _warned.add(path)
            log.warning(
                "%s: skipping folder %r: version folders are named 1, 2, ... in ASCII digits", model_dir, path.name
            )
    return dict(sorted(versions.items()))


def not_found(name: str) -> ForwardpassError:
    """The one answer for a model the repository lacks, whatever else exists at that path."""
    return ForwardpassError(f"the model repository has no model {shown(name)}", Kind.NOT_FOUND)
