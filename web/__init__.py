"""The page `forwardpass serve` serves at `/`: its static files live in this folder, and this module
says where they are and where onnxruntime-web's wasm backend comes from; docs/ holds the page at
/docs, which browses the server's OpenAPI document with Swagger UI (swagger-ui-dist), fetched the same way.

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
from dataclasses import dataclass
from pathlib import Path

from forwardpass.errors import ForwardpassError

FOLDER = Path(__file__).resolve().parent
PAGE_FILES = ("index.html", "page.js", "page.css", "landscape.js", "landscape.css", "batch.js", "batch.css")
ORT_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
LICENSE = "LICENSE"  # a fetched package's licence, written beside its files wherever they go
ORT_VERSION = json.loads((FOLDER / "package.json").read_text())["dependencies"]["onnxruntime-web"]


@dataclass(frozen=True)
class Fetched:
    """An npm package the pages serve files of: pinned by the lock in `lock`, fetched into `here`
    in a checkout (`make web`) or the user's cache (`forwardpass web-runtime`), never committed."""

    package: str
    lock: Path  # the folder of the package.json and package-lock.json that pin it
    dist: str  # the folder inside the package that holds the files
    files: tuple[str, ...]
    here: Path  # where `make web` puts them in a checkout
    licence: Path | None = None  # our copy of its licence (onnxruntime-web's has none); None: the package's own

    @property
    def version(self) -> str:
        return json.loads((self.lock / "package.json").read_text())["dependencies"][self.package]


ORT = Fetched("onnxruntime-web", FOLDER, "dist", ORT_FILES, FOLDER / "ort", FOLDER / "onnxruntime-web.LICENSE")
DOCS = FOLDER / "docs"
# Swagger UI's bundle and stylesheet; the standalone preset (a top bar to type another URL) is left out.
SWAGGER = Fetched("swagger-ui-dist", DOCS, "", ("swagger-ui-bundle.js", "swagger-ui.css"), DOCS / "swagger-ui")


def cache_folder(fetched: Fetched = ORT) -> Path:
    """Where `forwardpass web-runtime` puts a fetched package by default (XDG's cache folder)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "forwardpass" / f"{fetched.package}-{fetched.version}"


def ort_folder(explicit: Path | None = None, fetched: Fetched = ORT) -> Path | None:
    """The first folder holding all of a fetched package's files (onnxruntime-web's by default): the
    one given, its folder here, the cache."""
    for folder in (explicit,) if explicit is not None else (fetched.here, cache_folder(fetched)):
        if all((folder / name).is_file() for name in fetched.files):
            return folder
    return None


def how_to_get() -> str:
    """One sentence telling an operator how to give the page onnxruntime-web."""
    return (
        f"onnxruntime-web {ORT_VERSION} is not installed for the page: run `forwardpass web-runtime` "
        "(needs npm), or `make web` in a checkout, then restart the server"
    )


def install(destination: Path | None = None, fetched: Fetched = ORT) -> Path:
    """Fetch a pinned package with npm (onnxruntime-web by default) and keep its files and licence in
    destination. --ignore-scripts: no install script runs (swagger-ui-dist's dependency has one)."""
    destination = destination or cache_folder(fetched)
    npm = shutil.which("npm")
    if npm is None:
        raise ForwardpassError(f"npm is not installed: {fetched.package} comes from npm (install Node.js and npm)")
    with tempfile.TemporaryDirectory(prefix="forwardpass-web-") as work:
        for name in ("package.json", "package-lock.json"):
            shutil.copy(fetched.lock / name, Path(work) / name)
        command = [npm, "ci", "--prefix", work, "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise ForwardpassError(f"npm ci of {fetched.package} {fetched.version} failed: {last}")
        dist = Path(work) / "node_modules" / fetched.package / fetched.dist
        destination.mkdir(parents=True, exist_ok=True)
        for name in fetched.files:
            shutil.copy(dist / name, destination / name)
        shutil.copy(fetched.licence or Path(work) / "node_modules" / fetched.package / LICENSE, destination / LICENSE)
    return destination
