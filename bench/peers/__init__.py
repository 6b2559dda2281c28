"""Peer inference servers for the serving benchmark: MLServer, PyTriton and KServe, each in its own venv.

Each peer serves the same ONNX model, under the name ``mlp_3_4_1``, over the same Open Inference
Protocol (KServe V2) API as forwardpass, on 127.0.0.1 only, so one client can drive them all: MLServer
and PyTriton over gRPC and HTTP/REST, KServe's Python model server over HTTP/REST only:

    python = ensure_venv("mlserver", cache_dir)
    proc = start_mlserver(python, model_path, port, workdir, parallel_workers=0, http_port=http_port)
    try:
        wait_http_ready(http_port, proc, timeout=120)
        ...  # send requests to 127.0.0.1:port (gRPC) or http_port
    finally:
        stop(proc)

The peers run in virtualenvs of their own because their pins (protobuf, grpcio, numpy, uvloop)
clash with each other and with the project's environment. Nothing here hard-codes a location:
every path is an argument.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HOST = "127.0.0.1"
MODEL_NAME = "mlp_3_4_1"
HERE = Path(__file__).resolve().parent

# Pinned so that a benchmark compares the same peers from one run to the next.
VENV_PACKAGES: dict[str, list[str]] = {
    "mlserver": [
        "mlserver==1.7.1",
        # pip would pick uvloop 0.23, with which MLServer 1.7.1 loses its parallel-inference
        # worker at start-up.
        "uvloop==0.21.0",
        "onnxruntime==1.32.0",
        "numpy",
    ],
    "pytriton": ["nvidia-pytriton==0.7.0", "onnxruntime==1.32.0", "numpy"],
    "kserve": ["kserve==0.21.0", "onnxruntime==1.32.0", "numpy"],
    # Triton's load generator, not a server: tritonclient 2.41 bundles a perf_analyzer binary that
    # runs on this glibc (the perf-analyzer wheels from 2.60 on need 2.38); it links libcudart.so.12
    # even without a GPU, which this wheel provides, and Debian's libb64-0d.
    "perf_analyzer": ["tritonclient[grpc]==2.41.0", "nvidia-cuda-runtime-cu12"],
}

STAMP = ".peer-installed"


def _say(message: str) -> None:
    """One progress line on stderr: venv builds and server starts take minutes, say what is going on."""
    print(f"[peers] {message}", file=sys.stderr, flush=True)


def default_root() -> Path:
    """Where the venvs live unless --root says otherwise: outside the work tree, so they survive it."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "forwardpass-peers"


def ensure_venv(name: str, root: Path) -> Path:
    """Create (once) the virtualenv ``root/venv-{name}`` with the pinned packages; return its python.

    A stamp file holding the package list marks a complete install: a venv without it (an install
    that was interrupted) or with another list is rebuilt from scratch rather than patched.
    """
    if name not in VENV_PACKAGES:
        raise ValueError(f"unknown peer venv {name!r}; known: {', '.join(VENV_PACKAGES)}")
    packages = VENV_PACKAGES[name]
    venv = Path(root) / f"venv-{name}"
    python = venv / "bin" / "python"
    stamp = venv / STAMP
    wanted = "\n".join(packages) + "\n"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        _say(f"venv-{name}: reusing {venv}")
        return python
    if venv.exists():
        _say(f"venv-{name}: incomplete or outdated, removing {venv}")
        # rm -rf rather than shutil.rmtree: the tree is large and may hold read-only files.
        subprocess.run(["rm", "-rf", str(venv)], check=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    _say(f"venv-{name}: creating {venv}")
    # On the interpreter running this (its base install, when that is a venv itself): PyTriton's
    # Python-backend stub then loads this interpreter's shared libpython (see start_pytriton).
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    _say(f"venv-{name}: upgrading pip")
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
    _say(f"venv-{name}: installing {' '.join(packages)} (minutes)")
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *packages], check=True)
    stamp.write_text(wanted)
    _say(f"venv-{name}: ready in {time.monotonic() - started:.0f} s")
    return python


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now and that this process has not handed out before: the
    kernel may give the same free port twice in a row, and a server started with it may not be
    listening yet, or may share it (forwardpass's workers bind with SO_REUSEPORT) with another."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


class PeerProcess(subprocess.Popen):
    """A server process whose stdout and stderr go to ``log_path`` (a pipe nobody reads could fill and block it)."""

    log_path: Path


def _start(argv: list[str], workdir: Path, env: dict[str, str]) -> PeerProcess:
    """Start a server in a session of its own, so that stop() can signal it and all its children at once."""
    log_path = workdir / "server.log"
    with open(log_path, "wb") as log:  # the child holds its own copy of the descriptor
        process = PeerProcess(
            argv,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    process.log_path = log_path
    return process


def _tail(process: subprocess.Popen, chars: int = 4000) -> str:
    """The last ``chars`` characters of a server's log, for error messages."""
    path = getattr(process, "log_path", None)
    if path is None or not Path(path).exists():
        return "(no log)"
    return Path(path).read_text(errors="replace")[-chars:]


def start_mlserver(
    python: Path,
    model: Path,
    port: int,
    workdir: Path,
    parallel_workers: int = 1,
    http_port: int | None = None,
) -> subprocess.Popen:
    """Start MLServer serving ``model`` (ONNX) as ``mlp_3_4_1`` over gRPC on 127.0.0.1:``port``.

    The model runs in ``mlserver_runtime.OnnxModel``, a custom runtime as MLServer users write one.
    ``parallel_workers=0`` runs inference in the main process (MLServer's fastest setting). HTTP/REST
    goes to ``http_port`` (a free port when None); metrics are off. The settings files and the
    server's log (server.log) are written into ``workdir``.
    """
    workdir = Path(workdir).resolve()
    model_dir = workdir / MODEL_NAME
    model_dir.mkdir(parents=True, exist_ok=True)
    settings = {
        "host": HOST,
        "grpc_port": port,
        "http_port": http_port or free_port(),
        "metrics_endpoint": None,  # no metrics server: one less port and process
        "parallel_workers": parallel_workers,
        "debug": False,
    }
    (workdir / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    model_settings = {
        "name": MODEL_NAME,
        "implementation": "mlserver_runtime.OnnxModel",
        "parameters": {"uri": str(Path(model).resolve())},
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 1]}],
    }
    (model_dir / "model-settings.json").write_text(json.dumps(model_settings, indent=2) + "\n")
    env = dict(os.environ)
    # MLServer imports the runtime by module name; the parallel workers inherit this path too.
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), *filter(None, [env.get("PYTHONPATH")])])
    _say(f"mlserver: starting on {HOST}:{port} (parallel_workers={parallel_workers})")
    # The venv's console script: the mlserver package has no __main__ to run with -m.
    return _start([str(Path(python).parent / "mlserver"), "start", str(workdir)], workdir, env)


def _libdir(python: Path) -> str:
    """The LIBDIR of ``python`` (where its libpython lives), asked of the interpreter itself."""
    out = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR') or '')"],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def start_pytriton(
    python: Path, model: Path, port: int, workdir: Path, max_batch_size: int = 65536, http_port: int | None = None
) -> subprocess.Popen:
    """Start PyTriton (CPU) serving ``model`` as ``mlp_3_4_1`` on 127.0.0.1:``port``.

    A Python model behind the front end of PyTriton's bundled Triton server, not Triton's onnxruntime
    backend: its infer function runs onnxruntime on the same file; Triton's dynamic batcher is on (no delay)
    up to ``max_batch_size`` rows. Triton's HTTP/REST goes to ``http_port`` (a free port when None), metrics
    to another free port. PyTriton's workspace
    (sockets, model store) and the server's log (server.log) are in ``workdir``.
    """
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    # The Python-backend stub links libpython3.11.so.1.0 by soname: without the venv interpreter's
    # own LIBDIR first, another 3.11 build may load and the model fails with RLock errors.
    libdir = _libdir(python)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [libdir, env.get("LD_LIBRARY_PATH")]))
    argv = [
        str(python),
        str(HERE / "pytriton_server.py"),
        "--model",
        str(Path(model).resolve()),
        "--grpc-port",
        str(port),
        "--http-port",
        str(http_port or free_port()),
        "--metrics-port",
        str(free_port()),
        "--max-batch-size",
        str(max_batch_size),
        "--workspace",
        str(workdir / "workspace"),
    ]
    _say(f"pytriton: starting on {HOST}:{port} (max_batch_size={max_batch_size})")
    return _start(argv, workdir, env)


def start_kserve(python: Path, model: Path, http_port: int, workdir: Path) -> subprocess.Popen:
    """Start KServe's Python model server serving ``model`` as ``mlp_3_4_1`` over V2 REST on 127.0.0.1:``http_port``.

    ``kserve_server.py``: a small ``kserve.Model`` subclass running onnxruntime (one thread) on the file,
    one uvicorn worker, no gRPC. The server's log (server.log) is written into ``workdir``.
    """
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [str(python), str(HERE / "kserve_server.py"), "--onnx", str(Path(model).resolve())]
    _say(f"kserve: starting on {HOST}:{http_port}")
    return _start([*argv, "--http-port", str(http_port)], workdir, dict(os.environ))


def wait_http_ready(
    port: int, process: subprocess.Popen, timeout: float, model: str = MODEL_NAME, headers: dict | None = None
) -> None:
    """Wait until ``GET /v2/models/{model}/ready`` on 127.0.0.1:``port`` answers 200 (asked with ``headers``),
    or raise with the log's tail."""
    import urllib.error
    import urllib.request

    url = f"http://{HOST}:{port}/v2/models/{model}/ready"
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before ready:\n{_tail(process)}")
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=1.0) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass  # not listening yet, or the model not loaded yet: ask again
        if time.monotonic() > deadline:
            raise TimeoutError(f"server on port {port} not ready after {timeout:.0f} s:\n{_tail(process)}")
        time.sleep(0.1)


def stop(process: subprocess.Popen, timeout: float = 20.0) -> None:
    """Stop a server started here and every process in its session: SIGTERM, then SIGKILL after ``timeout``.

    The whole group is signalled, as a terminal's Ctrl-C would: both servers run worker processes
    (MLServer's inference pool, Triton and PyTriton's proxies) that must not outlive the benchmark.
    """
    pgid = process.pid  # start_new_session made the server the leader of its own group
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    # Wait for the leader and for its children, which may take longer to shut down (or hang).
    while time.monotonic() < deadline:
        process.poll()
        if process.returncode is not None and not _group_alive(pgid):
            return
        time.sleep(0.1)
    _say(f"pid {pgid}: still running {timeout:.0f} s after SIGTERM, killing its process group")
    _signal_group(pgid, signal.SIGKILL)
    process.wait()
    # The group's other members were reparented: give the kernel a moment to reap them.
    while _group_alive(pgid) and time.monotonic() < deadline + 5:
        time.sleep(0.1)


def _signal_group(pgid: int, signum: int) -> None:
    """Send ``signum`` to process group ``pgid``; a group that is already gone is fine."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass


def _group_alive(pgid: int) -> bool:
    """Whether any live (not zombie) process is still in group ``pgid``.

    A zombie has exited and only waits to be reaped by its parent, so it does not count. Read
    from /proc; where there is none, a signal-0 probe answers (zombies included).
    """
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        # After the command name in parentheses (which may itself hold spaces): state, ppid, pgrp.
        state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            return True
    return False
