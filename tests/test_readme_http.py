"""The docs' marked examples, run as a reader runs them while `make run` serves, and held to the
answers the docs show, exactly.

In README.md and docs/*.md, `<!-- test: run GROUP -->` before a fenced sh or python block marks it
to run, `<!-- test: file GROUP NAME -->` a block to save as NAME first, and `<!-- test: prints -->`
the block showing what the run block before it prints. A group's blocks run in order, README.md
first, in one folder holding a copy of models/ and examples/, against one server started as `make
run` starts it (its model control flags read from the Makefile) on free ports. What a reader would
type is changed only where this machine differs from theirs: make run's ports (8000, 8001) become the
server's, `forwardpass infer` without `--url` gets the default one so that it can, and
`.venv-run/bin/` becomes this interpreter's folder, which holds forwardpass and the extras the
examples import. Before each run block the server must serve every model in the folder, as make
run's poll does within about 2 s of a build.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import numpy as np
import pytest

from forwardpass.builder.oracle import forward
from forwardpass.builder.readback import read_file
from forwardpass.protos import grpc_service_pb2 as pb
from forwardpass.protos import grpc_service_pb2_grpc as pb_grpc
from forwardpass.tolerance import compare

from harness import ROOT, ServerProcess, answering_worker, need_tool

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARK = re.compile(r"<!-- test: (run|file|prints)((?: \S+)*) -->")
SERVED_WITHIN_S = 20  # make run polls every 2 s; a loaded machine loads a model more slowly
# The groups this module runs; the classifier recipe needs scikit-learn (tests/test_classifier_recipe.py).
GROUPS = ("first-steps", "serving")


@dataclass
class Block:
    """One marked code block: where it is, what to do with it, and what it must print."""

    where: str  # doc:line
    kind: str  # "run" or "file"
    group: str
    language: str
    code: str
    name: str = ""  # the file a "file" block is saved as
    prints: str | None = None


def marked_blocks(path: Path) -> list[Block]:
    """The marked blocks of one doc, in order, each run block with the prints block that follows it."""
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        mark = MARK.fullmatch(lines[i].strip())
        if not mark:
            i += 1
            continue
        where = f"{path.relative_to(ROOT)}:{i + 1}"
        assert lines[i + 1].startswith("```"), f"{where}: a marker must stand right above a fenced block"
        end = lines.index("```", i + 2)
        language, code = lines[i + 1][3:].strip(), "\n".join(lines[i + 2 : end]) + "\n"
        kind, args = mark[1], mark[2].split()
        if kind == "prints":
            assert blocks and blocks[-1].kind == "run" and blocks[-1].prints is None, f"{where}: prints of what?"
            blocks[-1].prints = code
        else:
            assert len(args) == (1 if kind == "run" else 2), f"{where}: {lines[i]}"
            blocks.append(Block(where, kind, args[0], language, code, *args[1:]))
        i = end + 1
    return blocks


def group(name: str) -> list[Block]:
    """A group's blocks across the docs, README.md first."""
    return [block for doc in DOCS for block in marked_blocks(doc) if block.group == name]


def make_run_flags() -> list[str]:
    """The model control flags `make run` serves with, from the Makefile's run recipe."""
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^run:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert recipe, "the Makefile has no run target"
    flags = re.findall(r"(--model-control-mode|--repository-poll-secs) (\S+)", recipe[1])
    return [part for flag in flags for part in flag]


class Session:
    """A reader's folder (a copy of models/ and examples/) and the server make run would start on it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        for part in ("models", "examples"):
            shutil.copytree(ROOT / part, folder / part)
        self.server = ServerProcess(folder / "models", *make_run_flags())
        self.http_port = urlsplit(self.server.http_url).port

    def close(self) -> None:
        assert self.server.stop() == 0, self.server.output()

    def as_here(self, code: str) -> str:
        """The example with this machine's server, ports and interpreter in place of a reader's."""
        code = re.sub(r"forwardpass infer (?!.*--url)", "forwardpass infer --url 127.0.0.1:8001 ", code)
        code = code.replace("127.0.0.1:8000", f"127.0.0.1:{self.http_port}")
        code = code.replace("127.0.0.1:8001", self.server.url)
        return code.replace(".venv-run/bin/", f"{Path(sys.executable).parent}/")

    def workers(self) -> set[str]:
        """The pids of the server's workers: its supervisor's children."""
        supervisor, pids = str(self.server.process.pid), set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                if stat.read_text().rsplit(")", 1)[1].split()[1] == supervisor:
                    pids.add(stat.parent.name)
            except OSError:
                continue  # gone meanwhile
        return pids

    def wait_served(self) -> None:
        """Until every worker serves every model in the folder, as make run's poll has it within seconds
        of a build (each worker rescans on its own, and each connection lands on one of them)."""
        names = sorted(p.name for p in (self.folder / "models").iterdir() if p.is_dir())
        wanted = {(pid, name) for pid in self.workers() for name in names}
        ready: set[tuple[str, str]] = set()
        deadline = time.monotonic() + SERVED_WITHIN_S
        while not wanted <= ready:
            assert time.monotonic() < deadline, f"not served {SERVED_WITHIN_S} s after a build: {wanted - ready}"
            with grpc.insecure_channel(self.server.url, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
                stub = pb_grpc.GRPCInferenceServiceStub(channel)
                pid = answering_worker(stub)
                for name in names:
                    if stub.ModelReady(pb.ModelReadyRequest(name=name), timeout=10).ready:
                        ready.add((pid, name))
            time.sleep(0.05)

    def check(self, block: Block) -> subprocess.CompletedProcess | None:
        """Save a file block; run a run block and hold its output to the doc's."""
        if block.kind == "file":
            (self.folder / block.name).write_text(block.code)
            return None
        code = self.as_here(block.code)
        if block.language == "sh":
            if "curl " in code:
                need_tool("curl", "curl")
            command = ["bash", "-c", "set -euo pipefail\n" + code]
        else:
            assert block.language == "python", f"{block.where}: cannot run {block.language}"
            command = [sys.executable, "-c", code]
        self.wait_served()
        result = subprocess.run(command, capture_output=True, text=True, cwd=self.folder, timeout=180)
        assert result.returncode == 0, f"{block.where} failed:\n{code}\n{result.stdout}{result.stderr}"
        if block.prints is not None:
            assert result.stdout == block.prints, (
                f"{block.where} printed\n{result.stdout}\nbut the doc shows\n{block.prints}"
            )
        return result


def run_group(name: str, folder: Path) -> list[Block]:
    """Every block of a group, in order, in one session; the blocks it ran."""
    blocks = group(name)
    session = Session(folder)
    try:
        for block in blocks:
            session.check(block)
    finally:
        session.close()
    return blocks


def test_the_docs_mark_the_first_steps_and_the_clients():
    every = [block for doc in DOCS for block in marked_blocks(doc)]
    assert {block.group for block in every} == {*GROUPS, "classifier"}
    first = marked_blocks(ROOT / "README.md")[0]
    assert first.group == "first-steps" and "curl" in first.code and first.prints, first.where
    assert any("--activations relu,softmax" in block.code for block in group("first-steps"))
    serving = group("serving")
    assert all(block.where.startswith("docs/serving.md") and block.prints for block in serving)
    clients = "".join(block.code for block in serving)
    assert all(name in clients for name in ("curl ", "tritonclient.http", "tritonclient.grpc", "InferenceRESTClient"))


@pytest.mark.parametrize("name", GROUPS)
def test_examples_print_what_the_docs_show(tmp_path, name):
    blocks = run_group(name, tmp_path)
    assert sum(block.prints is not None for block in blocks) >= 3


def test_the_answers_shown_are_the_oracles():
    """The 3-4-1 answers the docs show are the float64 oracle's, within the float32 bound."""
    back = read_file(ROOT / "models" / "mlp_3_4_1" / "1" / "model.onnx")
    shown = 0
    for block in group("first-steps") + group("serving"):
        if block.prints is None or "/v2/models/mlp_3_4_1/infer" not in block.code:
            continue
        request = json.loads(re.search(r"-d '(.*?)'", block.code, re.DOTALL)[1])["inputs"][0]
        x = np.array(request["data"], np.float32).reshape(request["shape"])
        y = np.array(json.loads(block.prints)["outputs"][0]["data"], np.float32).reshape(-1, 1)
        assert compare(back.spec, x.T, y.T, back.dtype).ok, (block.where, y, forward(back.spec, x.T).output.T)
        shown += 1
    assert shown >= 2
