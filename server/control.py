"""Which models are loaded while the server runs: Triton's --model-control-mode.

none      what loads at start-up stays; RepositoryModelLoad/Unload are refused
poll      every worker rescans the repository each --repository-poll-secs: a new version is
          loaded, made ready and only then takes traffic; a version that fails to load is
          refused and the old one keeps serving
explicit  RepositoryModelLoad/Unload (and --load-model at start-up) decide. The worker that
          takes the call applies it, writes the wanted set to a file the supervisor created,
          and signals the supervisor (SIGUSR1), which passes the signal to every worker, so
          each one applies the same set; a restarted worker starts from that file.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from forwardpass.errors import ForwardpassError, Kind

from .repository import Repository

log = logging.getLogger(__name__)

MODES = ("none", "poll", "explicit")


class ModelControl:
    """Applies load, unload and rescans to one worker's repository, one change at a time."""

    def __init__(self, repository: Repository, mode: str, wanted_file: Path | None, on_change: Callable[[], None]):
        self.repository, self.mode, self.wanted_file, self.on_change = repository, mode, wanted_file, on_change
        self._lock = threading.Lock()

    def wanted(self) -> list[str] | None:
        """Explicit mode: the models every worker should have loaded (None in the other modes)."""
        if self.mode != "explicit" or self.wanted_file is None:
            return None
        return json.loads(self.wanted_file.read_text())["loaded"]

    def load(self, name: str) -> None:
        """RepositoryModelLoad."""
        self._explicit_only("load")
        with self._lock:
            self.repository.load_model(name)
            self._publish(sorted({*self._loaded(), name}))
        self.on_change()

    def unload(self, name: str) -> None:
        """RepositoryModelUnload."""
        self._explicit_only("unload")
        with self._lock:
            self.repository.unload_model(name)
            self._publish(sorted(set(self._loaded()) - {name}))
        self.on_change()

    def apply_wanted(self) -> None:
        """Make this worker's loaded set the one in the wanted file (a sibling changed it)."""
        wanted = set(self.wanted() or ())
        with self._lock:
            for name in sorted(wanted - set(self._loaded())):
                try:
                    self.repository.load_model(name)
                except ForwardpassError as exc:
                    log.warning("could not load %s as a sibling worker did: %s", name, exc)
            for name in sorted(set(self._loaded()) - wanted):
                self.repository.unload_model(name)
        self.on_change()

    def poll(self, seconds: float) -> None:
        """Poll mode: rescan every `seconds` in a daemon thread."""

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

    def _loaded(self) -> list[str]:
        return [name for name, entry in self.repository.models.items() if entry.ready]

    def _explicit_only(self, what: str) -> None:
        if self.mode != "explicit":
            raise ForwardpassError(
                f"explicit model {what} is not allowed in model control mode '{self.mode}' "
                "(start the server with --model-control-mode explicit)",
                Kind.UNSUPPORTED,
            )

    def _publish(self, loaded: list[str]) -> None:
        if self.wanted_file is None:
            return
        write_wanted(self.wanted_file, loaded)
        os.kill(os.getppid(), signal.SIGUSR1)  # the supervisor passes it on to every worker


def write_wanted(path: Path, loaded: list[str]) -> None:
    """Replace the wanted file in one step, so a worker never reads half of it."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"loaded": loaded}))
    os.replace(tmp, path)
