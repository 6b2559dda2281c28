"""Process harnesses of the tests: servers and the CLI in subprocesses, ports, threads, and the
model repositories they serve."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from forwardpass.builder.graph import ExportOptions
from forwardpass.builder.spec import Activation, NetworkSpec

from numerics import random_spec

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "s3cret-token-for-tests"  # the bearer token of the test PKI's token file
# CI (.ci/run) installs every tool the tests use and sets this: a missing one is a failure there.
REQUIRE_TOOLS = os.environ.get("FORWARDPASS_REQUIRE_TOOLS") == "1"


def missing_tool(reason: str) -> None:
    """Skip the test for a tool this machine lacks, saying why; fail instead where tools are required."""
    if REQUIRE_TOOLS:
        pytest.fail(f"{reason} (FORWARDPASS_REQUIRE_TOOLS=1: every tool must be installed)", pytrace=False)
    pytest.skip(reason)


def need_tool(command: str, package: str) -> str:
    """The path of a command the test runs, from the Debian package named; skips (or fails) without it."""
    path = shutil.which(command)
    if path is None:
        missing_tool(f"{command} is not installed: apt-get install {package} (make test does, as root)")
    return path


# The `forwardpass` whose servers the tests start. make test points it at a venv holding only what
# `pip install 'forwardpass[cpu]'` gives a user (and once at the lowest versions allowed), so the
# servers run on the dependency set users get while the clients stay in the test venv. Unset (a
# test run by hand), it is this interpreter's.
SERVER = os.environ.get("FORWARDPASS_SERVER")
SERVER_COMMAND = [SERVER] if SERVER else [sys.executable, "-m", "forwardpass"]
# An installed server does not look in this checkout's web/ for onnxruntime-web or Swagger UI: it is
# told, as make run tells it.
ORT_WEB = ROOT / "web" / "ort"
SWAGGER_UI = ROOT / "web" / "docs" / "swagger-ui"


def serve_command(*args: str) -> list[str]:
    """The command line of `forwardpass serve ARGS` from the server under test."""
    for flag, folder in (("--ort-web-dir", ORT_WEB), ("--swagger-ui-dir", SWAGGER_UI)):
        if SERVER and flag not in args and (folder / ".installed").is_file():
            args = (*args, flag, str(folder))
    return [*SERVER_COMMAND, "serve", *args]


def served_newest_opset() -> int:
    """The newest opset both this onnx and the server's know (the lowest set's onnx is older)."""
    from forwardpass.builder.graph import newest_opset

    if not SERVER:
        return newest_opset()
    code = "from forwardpass.builder.graph import newest_opset; print(newest_opset())"
    bin = Path(SERVER).parent  # not this checkout, whose forwardpass/ would shadow the installed one
    served = subprocess.run([str(bin / "python"), "-c", code], capture_output=True, check=True, cwd=bin)
    return min(newest_opset(), int(served.stdout))


class ServerProcess:
    """`forwardpass serve` in a subprocess on a free loopback port, as users run it."""

    def __init__(self, repository, *args: str, wait: bool = True) -> None:
        command = serve_command("--grpc-port", "0", "--http-port", "0", "--provider", "cpu",
                                "--model-repository", str(repository), *args)  # fmt: skip
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.port = 0
        self.http_url = ""  # http://127.0.0.1:PORT, when the server serves HTTP
        self._banner = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if wait:
            self.wait_ready()

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not self._banner.wait(0.05):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("server did not start:\n" + "".join(self.lines))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)

    def output(self) -> str:
        return "".join(self.lines)

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)
            found = re.search(r"serving on 127\.0\.0\.1:(\d+)", line)
            if found:
                self.port = int(found.group(1))
                http = re.search(r"(https?://127\.0\.0\.1:\d+) \(HTTP\)", line)
                self.http_url = http.group(1) if http else ""
                self._banner.set()


def build_into(repository: Path, name: str, spec: NetworkSpec, version: int = 1, config: str | None = None, **options):
    """A model version in a repository folder, with our config or the one given."""
    from forwardpass.builder.export import export_to_repository

    export_to_repository(spec, ExportOptions(**options), repository, name, version, force=True)
    if config is not None:
        (repository / name / "config.pbtxt").write_text(config)


def served_repository(root: Path | str) -> Path:
    """The repository the server tests serve: the committed models and one model per feature."""
    import shutil

    repository = Path(root) / "models"
    shutil.copytree(ROOT / "models", repository)
    rng = np.random.default_rng(42)
    acts = (Activation("relu"), Activation("tanh"), Activation("sigmoid"))
    build_into(repository, "hidden", random_spec(rng, (3, 5, 4, 2), acts), expose_hidden=True)
    build_into(repository, "columns", random_spec(rng, (3, 4, 1), acts[1:]), layout="columns")
    build_into(repository, "double", random_spec(rng, (3, 4, 1), acts[1:]), dtype="float64")
    small = random_spec(rng, (3, 4, 1), acts[1:])
    build_into(repository, "small", small)
    text = (repository / "small" / "config.pbtxt").read_text().replace("max_batch_size: 1048576", "max_batch_size: 8")
    (repository / "small" / "config.pbtxt").write_text(text + "dynamic_batching { }\n")
    for version in (1, 2):
        build_into(repository, "versions", random_spec(rng, (3, 4, 1), acts[1:]), version)
        build_into(repository, "latest", random_spec(rng, (3, 4, 1), acts[1:]), version)
    with open(repository / "versions" / "config.pbtxt", "a") as config:
        config.write("version_policy: { all { } }\n")
    (repository / "broken" / "1").mkdir(parents=True)
    (repository / "broken" / "1" / "model.onnx").write_bytes(b"this is not an onnx model")
    return repository


def served_repository_apart(root: Path) -> Path:
    """served_repository, built in a child process: the builder writes config.pbtxt through our
    protobuf package `inference`, which a process holding tritonclient's or kserve's cannot import."""
    code = "import sys, harness; harness.served_repository(sys.argv[1])"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    subprocess.run([sys.executable, "-c", code, str(root)], check=True, cwd=ROOT, env=env)
    return root / "models"


def in_threads(function, arguments: list[tuple]) -> list[BaseException]:
    """Run function(*args) for every args at once, one thread each; returns what they raised."""
    errors: list[BaseException] = []

    def guarded(*args):
        try:
            function(*args)
        except Exception as exc:  # collected for the test to assert on, with the thread's own error
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=args) for args in arguments]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def run_cli(*args, timeout: float = 120):
    """`python -m forwardpass ARGS` from the repository root, as a user runs it."""
    env = {**os.environ, "COLUMNS": "200"}  # keep --help lines unwrapped
    args = [str(a) for a in args]
    command = serve_command(*args[1:]) if args[:1] == ["serve"] else [sys.executable, "-m", "forwardpass", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)


def assert_one_error_line(result, match: str, logs_allowed: bool = False) -> None:
    """Exit code 2 and one line on stderr naming the problem, never a traceback (server log lines
    may come before it when logs_allowed)."""
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    if logs_allowed:
        lines = [line for line in lines if " WARNING " not in line and " INFO " not in line]
    assert len(lines) == 1 and match in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def free_port() -> int:
    """A loopback port free now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[str, int]:
    """The /metrics of a server, as {"name/model": value}."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    values = {}
    for line in text.splitlines():
        found = re.match(r'(\w+)\{model="([^"]+)",version="(\d+)"\} (\d+)$', line)
        if found:
            values[f"{found[1]}/{found[2]}"] = int(found[4])
    return values


def answering_worker(stub) -> str:
    """The pid of the worker that answers on this stub's connection (ServerMetadata's trailing metadata)."""
    from forwardpass.protos import grpc_service_pb2 as pb

    _, call = stub.ServerMetadata.with_call(pb.ServerMetadataRequest(), timeout=10)
    return dict(call.trailing_metadata())["forwardpass-worker-pid"]


def make_pki(folder: Path) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA, and a
    token file, made with openssl in `folder`."""
    need_tool("openssl", "openssl")

    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=forwardpass test CA")  # fmt: skip
    for name, extension in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"), ("client", "")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={name}")  # fmt: skip
        (folder / f"{name}.ext").write_text(extension + "\n" if extension else "basicConstraints=CA:FALSE\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")  # fmt: skip
    (folder / "token").write_text(TOKEN + "\n")
    return folder
