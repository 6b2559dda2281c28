"""The model versions loaded from a repository folder in Triton's layout (forwardpass/layout.py).

By default the latest version of each model is loaded, as in Triton; `version_policy` in the
config picks others. A model that cannot load stops start-up with one line naming the file and
the reason, or, with skip_bad, is kept as not ready with that reason.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from forwardpass.builder.readback import read_file
from forwardpass.errors import ForwardpassError, Kind
from forwardpass.layout import (
    CONFIG_FILE,
    model_folder,
    model_folders,
    parse_version,
    shown,
    version_folders,
)
from forwardpass.layout import not_found as no_such_model
from forwardpass.protos.model_config_pb2 import ModelConfig, ModelVersionPolicy
from forwardpass.runtime import Runtime

from .config import default_config, model_file, provider_for, read_config, settle
from .model import ServedModel

log = logging.getLogger(__name__)

UNLOADED = "unloaded"
LISTED = 20  # models a not-found answer names; the rest are counted


@dataclass
class ModelEntry:
    """One model folder: its loaded versions, or why it is not ready."""

    name: str
    versions: dict[int, ServedModel] = field(default_factory=dict)
    reason: str = ""

    @property
    def ready(self) -> bool:
        return bool(self.versions) and not self.reason


class Repository:
    """The models of one repository folder: loaded at start-up, and again by refresh (poll mode) or
    load_model / unload_model (explicit mode). The tables are replaced whole, never edited in
    place, so a request sees either the old set of versions or the new one; a version it already
    holds finishes its call even after it was replaced."""

    def __init__(
        self,
        root: str | Path,
        provider: str = "auto",
        threads: int | None = 1,
        skip_bad: bool = False,
        columns_inside: bool = True,
        max_model_mb: float | None = None,
    ):
        self.root = Path(root)
        self.max_model_mb = max_model_mb  # a larger model file (MiB) is refused
        self.provider, self.threads, self.skip_bad = provider, threads, skip_bad
        self.columns_inside = columns_inside  # large rows-layout batches through the derived session
        self.models = {}
        # How a folder comes to be served, so a not-found answer can say why one is not: ModelControl
        # sets these to the server's --model-control-mode and --repository-poll-secs.
        self.mode = "none"
        self.poll_secs = 0.0
        self.failed: dict[str, str] = {}  # explicit mode: why the last load of a model not served failed

    @property
    def models(self) -> dict[str, ModelEntry]:
        """Each model folder's entry, by name."""
        return self._models

    @models.setter
    def models(self, models: dict[str, ModelEntry]) -> None:
        # Set whole, with the latest version of each ready model beside it: what most calls ask for
        # (no version) is one lookup.
        self._models = models
        self.latest = {name: entry.versions[max(entry.versions)] for name, entry in models.items() if entry.ready}

    def load(self, only: Collection[str] | None = None) -> None:
        """Load every model folder (or those named); the first bad one raises unless skip_bad."""
        folders = self._folders()
        if only is not None:
            unknown = sorted(set(only) - {f.name for f in folders})
            if unknown:
                raise ForwardpassError(f"model repository {self.root} has no model {unknown[0]!r}", Kind.NOT_FOUND)
        models = {}
        for folder in folders:
            if only is not None and folder.name not in only:
                models[folder.name] = ModelEntry(folder.name, reason=UNLOADED)
                continue
            try:
                models[folder.name] = self._load_model(folder)
            except ForwardpassError as exc:
                if not self.skip_bad:
                    raise
                log.warning("model %s is not ready: %s", folder.name, exc)
                models[folder.name] = ModelEntry(folder.name, reason=self._inside(str(exc)))
        self.models = models

    def refresh(self) -> None:
        """Poll mode: load new model folders and versions, drop removed ones, keep what still
        stands; a version that fails to load is refused and what served before keeps serving."""
        on_disk = {folder.name: folder for folder in self._folders(allow_empty=True)}
        self.models = {name: self._refreshed(folder, self.models.get(name)) for name, folder in on_disk.items()}

    def load_model(self, name: str) -> None:
        """Explicit mode: load a model folder (new versions too); on failure raise and keep the old."""
        folder = model_folder(self.root, name)
        if folder is None:
            raise no_such_model(name)
        entry = self._refreshed(folder, self.models.get(name))
        if not entry.ready:
            self.failed = {**self.failed, name: entry.reason}
            raise ForwardpassError(f"model '{name}' could not load: {entry.reason}", Kind.UNAVAILABLE)
        self.models = {**self.models, name: entry}
        self.failed = {n: reason for n, reason in self.failed.items() if n != name}

    def unload_model(self, name: str) -> None:
        """Explicit mode: stop serving a model (calls already running finish)."""
        if name not in self.models:
            raise no_such_model(name)
        self.models = {**self.models, name: ModelEntry(name, reason=UNLOADED)}

    def _inside(self, reason: str) -> str:
        """A reason a client may read: paths relative to the repository, so that no answer (the
        index, a not-ready error) shows where the server keeps it; the log keeps the full path."""
        roots = {str(self.root.resolve()), str(self.root.absolute()), str(self.root)} - {"."}
        for root in sorted(roots, key=len, reverse=True):  # the longest first: it holds the others
            reason = reason.replace(root.rstrip(os.sep) + os.sep, "")
        return reason

    def _folders(self, allow_empty: bool = False) -> list[Path]:
        if not self.root.is_dir():
            raise ForwardpassError(f"model repository {self.root} is not a folder", Kind.NOT_FOUND)
        folders = model_folders(self.root)
        if not folders and not allow_empty:
            raise ForwardpassError(f"model repository {self.root} has no model folders", Kind.NOT_FOUND)
        return folders

    def _refreshed(self, folder: Path, entry: ModelEntry | None) -> ModelEntry:
        """The entry a folder now calls for: versions kept, new ones loaded, failures refused."""
        serving = entry is not None and entry.ready
        try:
            config = read_config(folder)
            wanted = select_versions(
                _present(folder), config.version_policy if config else ModelVersionPolicy(), folder
            )
        except ForwardpassError as exc:
            if serving:
                log.warning("model %s: %s; it keeps serving version %s", folder.name, exc, sorted(entry.versions))
                return entry
            return ModelEntry(folder.name, reason=self._inside(str(exc)))
        versions, refused = {}, []
        for version in wanted:
            if serving and version in entry.versions:
                versions[version] = entry.versions[version]
                continue
            try:
                versions[version] = self._load_version(folder, version, config)
            except ForwardpassError as exc:
                log.warning("refusing %s version %d: %s", folder.name, version, exc)
                refused.append(str(exc))
        if not versions:
            if serving:
                return entry  # nothing new could load: what served before keeps serving
            why = f": {refused[-1]}" if refused else ""  # the newest version's reason
            return ModelEntry(folder.name, reason=self._inside(f"no version of {folder} could load{why}"))
        if serving and versions.keys() != entry.versions.keys():
            log.info("model %s now serves version %s (was %s)", folder.name, sorted(versions), sorted(entry.versions))
        return ModelEntry(folder.name, versions)

    def get(self, name: str, version: str = "") -> ServedModel:
        """The loaded version asked for (the latest when empty); INVALID_ARGUMENT for a name or
        version no folder could have, NOT_FOUND or UNAVAILABLE otherwise."""
        if not version:
            latest = self.latest.get(name)
            if latest is not None:
                return latest
        number = parse_version(version) if version else None
        entry = self.entry(name)
        if not entry.ready:
            raise ForwardpassError(f"model '{name}' is not ready: {self._not_served(name)}", Kind.UNAVAILABLE)
        if number is None:
            return entry.versions[max(entry.versions)]
        if number not in entry.versions:
            loaded = listed([str(v) for v in sorted(entry.versions)])
            raise ForwardpassError(f"model '{name}' has no loaded version {version}; loaded: {loaded}", Kind.NOT_FOUND)
        return entry.versions[number]

    def entry(self, name: str) -> ModelEntry:
        """The model folder's entry; INVALID_ARGUMENT for a name that is a path, NOT_FOUND if unknown,
        saying why a folder of that name is not served and which models are."""
        entry = self.models.get(name)
        if entry is None:
            why = f"{self._not_served(name)}; " if model_folder(self.root, name) is not None else ""
            loaded = listed(sorted(n for n, e in self.models.items() if e.ready))
            raise ForwardpassError(f"unknown model {shown(name)}; {why}loaded: {loaded}", Kind.NOT_FOUND)
        return entry

    def _not_served(self, name: str) -> str:
        """Why the model folder `name` serves nothing: not loaded, not rescanned yet, or its load failed."""
        entry = self.models.get(name)
        if entry is not None and entry.reason != UNLOADED:
            return f"it failed to load: {entry.reason}"
        if self.mode == "explicit":
            failed = f"; its last load failed: {self.failed[name]}" if name in self.failed else ""
            return (
                f"its folder is in the repository but it is not loaded (--model-control-mode explicit): load it "
                f"with POST /v2/repository/models/{name}/load or the gRPC RepositoryModelLoad{failed}"
            )
        if self.mode == "poll":
            return (
                "its folder is in the repository but the server has not rescanned it yet "
                f"(--model-control-mode poll rescans every {self.poll_secs:g} s)"
            )
        return (
            "its folder is in the repository but appeared after start-up, and without --model-control-mode "
            "poll or explicit models load at start-up only"
        )

    def _load_model(self, folder: Path) -> ModelEntry:
        config = read_config(folder)
        present = _present(folder)
        entry = ModelEntry(folder.name)
        for version in select_versions(present, config.version_policy if config else ModelVersionPolicy(), folder):
            entry.versions[version] = self._load_version(folder, version, config)
        return entry

    def _check_size(self, path: Path) -> None:
        """Refuse a model file over --max-model-mb before reading it: loading takes a few times its size."""
        if self.max_model_mb is None or not path.is_file():
            return  # a missing file is reported, by name, when it is read
        size = path.stat().st_size
        if size > self.max_model_mb * 2**20:
            raise ForwardpassError(
                f"{path} is {size / 2**20:.3g} MiB, more than --max-model-mb {self.max_model_mb:g}; "
                "serve it with a larger --max-model-mb",
                Kind.TOO_LARGE,
            )

    def _load_version(self, folder: Path, version: int, config: ModelConfig | None) -> ServedModel:
        path = folder / str(version) / model_file(config or ModelConfig())
        self._check_size(path)
        back = read_file(path)  # also refuses, by name, a file that is not a Gemm + activation chain
        provider = provider_for(config or ModelConfig(), self.provider)
        runtime = Runtime(
            path, provider=provider, threads=self.threads, columns_inside=self.columns_inside, read_back=back
        )
        settled = ModelConfig()
        settled.CopyFrom(config or default_config(folder.name, runtime, back.layout))
        served_input, outputs = settle(settled, folder.name, runtime, back.layout, folder / CONFIG_FILE)
        log.info("loaded %s version %d from %s on %s", folder.name, version, path, runtime.provider)
        return ServedModel(
            folder.name, version, runtime, served_input, outputs, settled.max_batch_size, settled, network=back
        )


def listed(names: list[str]) -> str:
    """Names for a message: the first LISTED of them, then how many more."""
    if not names:
        return "none"
    more = f" and {len(names) - LISTED} more" if len(names) > LISTED else ""
    return ", ".join(names[:LISTED]) + more


def _present(folder: Path) -> list[int]:
    """The version numbers of a model folder; none is an error."""
    present = list(version_folders(folder))
    if not present:
        raise ForwardpassError(f"{folder}: no version folders (1/, 2/, ...)")
    return present


def select_versions(present: list[int], policy: ModelVersionPolicy, folder: Path) -> list[int]:
    """The versions a Triton version_policy serves: latest (1 by default), all, or specific ones."""
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return present
    if choice == "specific":
        missing = sorted(set(policy.specific.versions) - set(present))
        if missing:
            raise ForwardpassError(f"{folder}: version_policy lists versions {missing}, which have no folder")
        return sorted(set(policy.specific.versions))
    count = policy.latest.num_versions if choice == "latest" else 1
    return present[-max(count, 1) :]
