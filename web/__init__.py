"""The page `forwardpass serve` serves at `/`: its static files live in this folder, and this module
says where they are and where onnxruntime-web's wasm backend comes from.

onnxruntime-web (about 14 MB) is neither committed nor in the wheel. `install` fetches it with npm,
pinned by the package-lock.json beside this file (npm checks every file's integrity hash), and
keeps only the three files the wasm backend needs and its licence. The server looks for them in
--ort-web-dir, then in ort/ here (`make web` in a checkout), then in the user's cache
(`forwardpass web-runtime` after a pip install).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from forwardpass.errors import ForwardpassError

FOLDER = Path(__file__).resolve().parent
PAGE_FILES = ("index.html", "page.js", "page.css")
ORT_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
LICENSE = "LICENSE"  # onnxruntime-web's licence, written beside its files wherever they go
ORT_VERSION = json.loads((FOLDER / "package.json").read_text())["dependencies"]["onnxruntime-web"]


def cache_folder() -> Path:
    """Where `forwardpass web-runtime` puts onnxruntime-web by default (XDG's cache folder)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "forwardpass" / f"onnxruntime-web-{ORT_VERSION}"


def ort_folder(explicit: Path | None = None) -> Path | None:
    """The first folder holding all of onnxruntime-web's files: the one given, ort/ here, the cache."""
    for folder in (explicit,) if explicit is not None else (FOLDER / "ort", cache_folder()):
        if all((folder / name).is_file() for name in ORT_FILES):
            return folder
    return None


def how_to_get() -> str:
    """One sentence telling an operator how to give the page onnxruntime-web."""
    return (
        f"onnxruntime-web {ORT_VERSION} is not installed for the page: run `forwardpass web-runtime` "
        "(needs npm), or `make web` in a checkout, then restart the server"
    )


def install(destination: Path | None = None) -> Path:
    """Fetch the pinned onnxruntime-web with npm and keep its wasm backend and licence in destination."""
    destination = destination or cache_folder()
    npm = shutil.which("npm")
    if npm is None:
        raise ForwardpassError("npm is not installed: onnxruntime-web comes from npm (install Node.js and npm)")
    with tempfile.TemporaryDirectory(prefix="forwardpass-web-") as work:
        for name in ("package.json", "package-lock.json"):
            shutil.copy(FOLDER / name, Path(work) / name)
        command = [npm, "ci", "--prefix", work, "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise ForwardpassError(f"npm ci of onnxruntime-web {ORT_VERSION} failed: {last}")
        dist = Path(work) / "node_modules" / "onnxruntime-web" / "dist"
        destination.mkdir(parents=True, exist_ok=True)
        for name in ORT_FILES:
            shutil.copy(dist / name, destination / name)
    shutil.copy(FOLDER / "onnxruntime-web.LICENSE", destination / LICENSE)
    return destination
