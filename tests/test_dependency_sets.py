"""The dependency sets the servers under test run on (FORWARDPASS_SERVER, set by make test): the runtime
set, only what `pip install 'forwardpass[cpu]'` resolves for a user, and the lowest set, each direct
dependency at the lower bound pyproject.toml declares (FORWARDPASS_LOWEST=1), so every bound is a tested fact."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.version import Version

from harness import ROOT, SERVER

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOWEST = os.environ.get("FORWARDPASS_LOWEST") == "1"
# Packages of the test extra that a user's install never pulls in: a server venv holding one is not the runtime set.
TEST_ONLY = ("pytest", "tritonclient", "kserve", "playwright", "ruff", "grpcio-tools", "hypothesis", "schemathesis")

pytestmark = pytest.mark.skipif(not SERVER, reason="FORWARDPASS_SERVER is unset: the servers come from the test venv")


def installed() -> dict[str, dict]:
    """Every distribution in the server's venv: {normalized name: {version, editable}}."""
    python = Path(SERVER).parent / "python"
    code = """
import importlib.metadata as m, json
rows = {}
for d in m.distributions():
    url = json.loads(d.read_text("direct_url.json") or "{}")
    rows[d.metadata["Name"]] = {"version": d.version, "editable": url.get("dir_info", {}).get("editable", False)}
print(json.dumps(rows))
"""
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    return {normalized(name): row for name, row in json.loads(done.stdout).items()}


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement(text: str) -> tuple[str, str | None]:
    """(name, lower bound or None) of one requirement line such as 'numpy>=1.24.2,<3'."""
    text = text.split(";")[0]
    name = re.match(r"[A-Za-z0-9_.-]+", text).group(0)
    lower = re.search(r">=\s*([0-9][^,\s]*)", text)
    return normalized(name.split("[")[0]), lower.group(1) if lower else None


def runtime_requirements() -> list[tuple[str, str | None]]:
    lines = PYPROJECT["project"]["dependencies"] + PYPROJECT["project"]["optional-dependencies"]["cpu"]
    return [requirement(line) for line in lines if "win32" not in line or os.name == "nt"]


def test_the_server_venv_is_the_runtime_set_installed_as_a_user_installs_it():
    rows = installed()
    assert "forwardpass" in rows and not rows["forwardpass"]["editable"], rows.get("forwardpass")
    assert not [name for name in TEST_ONLY if name in rows]
    for name, _ in runtime_requirements():
        assert name in rows, f"{name} is a runtime dependency but is not installed"


@pytest.mark.skipif(not LOWEST, reason="FORWARDPASS_LOWEST is unset: this server is not the lowest set")
def test_each_direct_dependency_resolved_to_its_declared_lower_bound():
    rows = installed()
    wrong = {
        name: (lower, rows[name]["version"])
        for name, lower in runtime_requirements()
        if lower is not None and Version(rows[name]["version"]) != Version(lower)
    }
    assert not wrong, f"(declared lower bound, resolved) differ: {wrong}; raise the bound to what installs"


@pytest.mark.skipif(LOWEST, reason="the lowest set is checked against its bounds instead")
def test_the_runtime_set_takes_the_newest_protobuf_pip_allows_a_user():
    # The test venv's tritonclient pins protobuf < 7; the users' set must not inherit that.
    protobuf = installed()["protobuf"]["version"]
    upper = next(line for line in PYPROJECT["project"]["dependencies"] if line.startswith("protobuf"))
    assert int(protobuf.split(".")[0]) + 1 == int(re.search(r"<\s*(\d+)", upper).group(1)), (protobuf, upper)
