"""Which models are loaded while the server runs: Triton's --model-control-mode.

none      what loads at start-up stays; RepositoryModelLoad/Unload are refused
poll      every worker rescans the repository each --repository-poll-secs: a new version is
          loaded, made ready and only then takes traffic; a version that fails to load is
          refused and the old one keeps serving
explicit  RepositoryModelLoad/Unload (and --load-model at start-up) decide. The wanted set lives
          in one small file the supervisor creates: model name -> generation. The worker that
          takes a call loads (or unloads) first, so a failure changes nothing, then bumps the
          model's generation in the file under a file lock. Every worker watches the file and
          reconciles: it loads what it has not applied at that generation and unloads what left
          the set. No signals: a worker that starts (or restarts) reads the same file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from forwardpass.errors import ForwardpassError, Kind

from .repository import Repository

log = logging.getLogger(__name__)

FOLLOW_SECS = 0.1  # how often a worker looks at the wanted file: a stat, nothing more


class ModelControl:
    """Applies load, unload and rescans to one worker's repository, one change at a time."""

    def __init__(self, repository: Repository, mode: str, wanted_file: Path | None, on_change: Callable[[], None]):
        self.repository, self.mode, self.wanted_file, self.on_change = repository, mode, wanted_file, on_change
        repository.mode = mode  # its not-found answers say how a folder comes to be served
        self._lock = threading.Lock()
        self._applied: dict[str, int] = {}  # explicit mode: the generation of each model this worker has loaded
        self._seen: tuple[int, int] | None = None  # the wanted file's (inode, mtime) last applied

    def wanted(self) -> list[str] | None:
        """Explicit mode: the models every worker should have loaded (None in the other modes)."""
        if self.mode != "explicit" or self.wanted_file is None:
            return None
        loaded = read_wanted(self.wanted_file)
        self._applied = dict(loaded)  # start-up loads exactly these
        return sorted(loaded)

    def load(self, name: str) -> None:
        """RepositoryModelLoad: load here, then tell the others through the wanted file."""
        self._explicit_only("load")
        with self._lock:
            self.repository.load_model(name)
            with self._editing() as loaded:
                loaded[name] = loaded.get(name, 0) + 1
                self._applied[name] = loaded[name]
        self.on_change()

    def unload(self, name: str) -> None:
        """RepositoryModelUnload: unload here, then tell the others through the wanted file."""
        self._explicit_only("unload")
        with self._lock:
            self.repository.unload_model(name)
            with self._editing() as loaded:
                loaded.pop(name, None)
                self._applied.pop(name, None)
        self.on_change()

    def follow(self) -> threading.Thread:
        """Explicit mode: reconcile with the wanted file whenever it changes, in a daemon thread."""

        def loop() -> None:
            while True:
                try:
                    if _stamp(self.wanted_file) != self._seen:
                        self.reconcile()
                except Exception:  # a failed pass must not end the following
                    log.exception("applying the wanted models failed")
                time.sleep(FOLLOW_SECS)

        thread = threading.Thread(target=loop, name="model-control", daemon=True)
        thread.start()
        return thread

    def reconcile(self) -> None:
        """Make this worker's loaded models the wanted set, at the wanted generations."""
        with self._lock:
            self._seen = _stamp(self.wanted_file)
            wanted = read_wanted(self.wanted_file)
            changed = False
            for name, generation in sorted(wanted.items()):
                if self._applied.get(name) == generation:
                    continue
                try:
                    self.repository.load_model(name)
                except ForwardpassError as exc:
                    log.warning("could not load %s as a sibling worker did: %s", name, exc)
                self._applied[name] = generation  # tried at this generation: no retry loop
                changed = True
            for name in sorted(set(self._applied) - set(wanted)):
                with contextlib.suppress(ForwardpassError):  # already gone here
                    self.repository.unload_model(name)
                del self._applied[name]
                changed = True
        if changed:
            self.on_change()

    def poll(self, seconds: float) -> None:
        """Poll mode: rescan every `seconds` in a daemon thread."""
        self.repository.poll_secs = seconds

        def loop() -> None:
            while True:
                time.sleep(seconds)
                try:
                    with self._lock:
                        self.repository.refresh()
                except Exception:  # a rescan that fails must not end the polling
                    log.exception("repository rescan failed")
                self.on_change()

        threading.Thread(target=loop, name="repository-poll", daemon=True).start()

    def _explicit_only(self, what: str) -> None:
        if self.mode != "explicit":
            raise ForwardpassError(
                f"explicit model {what} is not allowed in model control mode '{self.mode}' "
                "(start the server with --model-control-mode explicit)",
                Kind.UNSUPPORTED,
            )

    @contextlib.contextmanager
    def _editing(self) -> Iterator[dict[str, int]]:
        """The wanted set to change in place, read and written under a lock shared by every worker,
        so two loads on two workers at once both stay in it."""
        if self.wanted_file is None:
            yield {}
            return
        with open(self.wanted_file.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            loaded = read_wanted(self.wanted_file)
            yield loaded
            write_wanted(self.wanted_file, loaded)
        # _seen stays as it was: the file may also hold a sibling's change this worker has not
        # applied yet, so the follower looks at it again (its own change is already applied).


def read_wanted(path: Path) -> dict[str, int]:
    """The wanted set: model name -> generation."""
    return json.loads(path.read_text())["loaded"]


def write_wanted(path: Path, loaded: dict[str, int]) -> None:
    """Replace the wanted file in one step, so a worker never reads half of it."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"loaded": loaded}, sort_keys=True))
    os.replace(tmp, path)


def _stamp(path: Path) -> tuple[int, int]:
    # os.replace gives every write a new inode, so this changes with every edit
    info = os.stat(path)
    return info.st_ino, info.st_mtime_ns
