"""Peer inference servers for the serving benchmark: MLServer and PyTriton, each in its own venv.

Each peer serves the same ONNX model, under the name ``mlp_3_4_1``, over the same Open Inference
Protocol (KServe V2) gRPC API as forwardpass, on 127.0.0.1 only, so one client can drive them all:

    python = ensure_venv("mlserver", cache_dir)
    proc = start_mlserver(python, model_path, port, workdir, parallel_workers=0)
    try:
        wait_ready(port, proc, timeout=120)
        ...  # send requests to 127.0.0.1:port
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
}

STAMP = ".peer-installed"


def _say(message: str) -> None:
    """One progress line on stderr: venv builds and server starts take minutes, say what is going on."""
    print(f"[peers] {message}", file=sys.stderr, flush=True)


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
    # The interpreter running this module: the peers need a CPython 3.11 with a shared libpython.
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    _say(f"venv-{name}: upgrading pip")
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
    _say(f"venv-{name}: installing {' '.join(packages)} (minutes)")
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *packages], check=True)
    stamp.write_text(wanted)
    _say(f"venv-{name}: ready in {time.monotonic() - started:.0f} s")
    return python


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (the kernel picks it; a race is possible but rare)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _start(argv: list[str], workdir: Path, env: dict[str, str]) -> subprocess.Popen:
    """Start a server in a session of its own (so stop() can signal it and all its children),
    its stdout and stderr going to ``workdir/server.log`` (a pipe nobody reads could fill and block it).
    """
    log = open(workdir / "server.log", "wb")  # noqa: SIM115 - the child keeps it; closed in stop()
    proc = subprocess.Popen(
        argv,
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    proc.log_path = workdir / "server.log"  # type: ignore[attr-defined]
    proc.log_file = log  # type: ignore[attr-defined]
    return proc


def _tail(proc: subprocess.Popen, chars: int = 4000) -> str:
    """The last ``chars`` characters of a server's log, for error messages."""
    path = getattr(proc, "log_path", None)
    if path is None or not Path(path).exists():
        return "(no log)"
    return Path(path).read_text(errors="replace")[-chars:]


def start_mlserver(
    python: Path,
    model: Path,
    port: int,
    workdir: Path,
    parallel_workers: int = 1,
    adaptive_batching: bool = False,
) -> subprocess.Popen:
    """Start MLServer serving ``model`` (ONNX) as ``mlp_3_4_1`` over gRPC on 127.0.0.1:``port``.

    The model runs in ``mlserver_runtime.OnnxModel``, a custom runtime as MLServer users write one.
    ``parallel_workers=0`` runs inference in the main process (MLServer's fastest setting); with
    ``adaptive_batching`` requests are merged up to 64 rows or 2 ms. HTTP goes to a free port;
    metrics are off. The settings files are written into ``workdir``.
    """
    workdir = Path(workdir).resolve()
    model_dir = workdir / MODEL_NAME
    model_dir.mkdir(parents=True, exist_ok=True)
    settings = {
        "host": HOST,
        "grpc_port": port,
        "http_port": free_port(),
        "metrics_endpoint": None,  # no metrics server: one less port and process
        "parallel_workers": parallel_workers,
        "debug": False,
    }
    (workdir / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    model_settings: dict[str, object] = {
        "name": MODEL_NAME,
        "implementation": "mlserver_runtime.OnnxModel",
        "parameters": {"uri": str(Path(model).resolve())},
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 1]}],
    }
    if adaptive_batching:
        model_settings["max_batch_size"] = 64
        model_settings["max_batch_time"] = 0.002
    (model_dir / "model-settings.json").write_text(json.dumps(model_settings, indent=2) + "\n")
    env = dict(os.environ)
    # MLServer imports the runtime by module name; the parallel workers inherit this path too.
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), *filter(None, [env.get("PYTHONPATH")])])
    # The venv's bin/ first on PATH: MLServer's workers are started with that interpreter.
    env["PATH"] = os.pathsep.join([str(Path(python).parent), env.get("PATH", "")])
    _say(f"mlserver: starting on {HOST}:{port} (parallel_workers={parallel_workers}, adaptive={adaptive_batching})")
    return _start([str(python), "-m", "mlserver", "start", str(workdir)], workdir, env)


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
    python: Path, model: Path, port: int, workdir: Path, max_batch_size: int = 65536
) -> subprocess.Popen:
    """Start PyTriton's bundled Triton server (CPU) serving ``model`` as ``mlp_3_4_1`` on 127.0.0.1:``port``.

    The infer function runs onnxruntime on the same file; Triton's dynamic batcher is on (no delay)
    up to ``max_batch_size`` rows. HTTP and metrics go to other free ports.
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
        str(free_port()),
        "--metrics-port",
        str(free_port()),
        "--max-batch-size",
        str(max_batch_size),
        "--workspace",
        str(workdir / "workspace"),
    ]
    _say(f"pytriton: starting on {HOST}:{port} (max_batch_size={max_batch_size})")
    return _start(argv, workdir, env)


def wait_ready(port: int, process: subprocess.Popen, timeout: float) -> None:
    """Wait until the server on 127.0.0.1:``port`` says ServerReady, or raise with its log's tail.

    A raw unary call keeps this free of any protocol stubs: the request is the empty message and
    the response's field 1 is the bool ``ready`` (b"\\x08\\x01" when true).
    """
    import grpc  # the caller's grpc; imported here so the module loads without it

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(f"{HOST}:{port}") as channel:
        ready = channel.unary_unary("/inference.GRPCInferenceService/ServerReady")
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode} before ready:\n{_tail(process)}")
            try:
                if ready(b"", timeout=1.0) == b"\x08\x01":
                    return
            except grpc.RpcError:
                pass  # not listening yet, or not ready: ask again
            if time.monotonic() > deadline:
                raise TimeoutError(f"server on port {port} not ready after {timeout:.0f} s:\n{_tail(process)}")
            time.sleep(0.25)


def stop(process: subprocess.Popen, timeout: float = 20.0) -> None:
    """Stop a server started here and every process in its session: SIGTERM, then SIGKILL after ``timeout``."""
    pgid = process.pid  # start_new_session made the server a session and group leader
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _say(f"pid {process.pid}: no exit {timeout:.0f} s after SIGTERM, killing its group")
    # Children may outlive the leader (or ignore SIGTERM): wait for the group to empty, then kill it.
    deadline = time.monotonic() + timeout
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _group_alive(pgid):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()
    log = getattr(process, "log_file", None)
    if log is not None:
        log.close()


def _group_alive(pgid: int) -> bool:
    """Whether any process is still in group ``pgid`` (signal 0 probes without signalling)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
