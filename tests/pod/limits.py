"""The image under a pod's limits (make pod-limits): the container run as the Kubernetes manifests run it,
their memory and CPU limits and their args, while every attack of docs/reliability.md is thrown at it
and a valid client calls at 50 per second.

    python tests/pod/limits.py --image forwardpass:0.1.0 [--seconds 180]

What must hold (the exit status is 1 otherwise): no OOM kill, no worker restart, live and ready
answered within 1 s throughout (over HTTP and gRPC), at least 99.9% of the valid client's calls
answered OK with the right numbers. The attackers run in a process of their own, so that their work
does not delay this process's clocks. The container listens on loopback only (the manifests' pod
listens on every address; the ports are the only difference) with a repository of the committed
models, a 3-4-512 model (for answers too large to send) and a 3-1,000,000-1 one (a 20 MB file).
Figures: bench/results/pod-limits.json and a table on standard output."""

from __future__ import annotations

import argparse
import functools
import gzip
import http.client
import json
import multiprocessing
import os
import resource
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from test_grpc_stall import stalled_calls  # noqa: E402

from forwardpass.builder.spec import Activation  # noqa: E402
from forwardpass.client import Client  # noqa: E402
from forwardpass.protos import grpc_service_pb2 as pb  # noqa: E402
from forwardpass.protos import grpc_service_pb2_grpc as pb_grpc  # noqa: E402

from harness import build_into, free_port  # noqa: E402
from numerics import random_spec  # noqa: E402

MANIFEST = ROOT / "deploy" / "kubernetes" / "deployment.yaml"
RATE = 50  # valid calls per second
PROBE_EVERY = 0.25  # seconds between rounds of live and ready probes
ANSWER_WITHIN = 1.0  # seconds: a probe slower than this, or not 200, is a miss
OK_SHARE = 0.999  # of the valid client's calls
INFER = "/v2/models/mlp_3_4_1/infer"
ROW = json.dumps({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [0.5, -1, 2]}]}).encode()


def manifest_limits() -> tuple[list[str], str, str]:
    """The forwardpass container's args, memory limit and CPU limit, as deployment.yaml gives them."""
    deployment = yaml.safe_load(MANIFEST.read_text())
    (container,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "forwardpass"]
    limits = container["resources"]["limits"]
    memory = limits["memory"].replace("Gi", "g").replace("Mi", "m")  # docker's units
    return container.get("args", []), memory, str(limits["cpu"])


def repository(folder: Path) -> Path:
    models = folder / "models"
    shutil.copytree(ROOT / "models", models)
    rng = np.random.default_rng(18)
    build_into(models, "answer", random_spec(rng, (3, 4, 512), [Activation("relu"), Activation("identity")]))
    build_into(models, "wide", random_spec(rng, (3, 1_000_000, 1), [Activation("relu"), Activation("sigmoid")]))
    os.chmod(folder, 0o755)
    for path in models.rglob("*"):  # the image's user (uid 1000) reads them
        path.chmod(0o755 if path.is_dir() else 0o644)
    return models


# --- the attacks: each a loop until `stop`, counting what it met -----------------------------------------


class Tally:
    """What each attack met: its outcomes by name, shared by the attack's threads."""

    def __init__(self) -> None:
        self.counts: dict[str, Counter] = {}
        self.lock = threading.Lock()

    def add(self, attack: str, outcome: str | int) -> None:
        with self.lock:
            self.counts.setdefault(attack, Counter())[str(outcome)] += 1


def status_of(port: int, data: bytes, timeout: float = 30, chunk: int = 1 << 20) -> str:
    """Send raw bytes on a new connection and read the status the server answers, or how it ended."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            try:
                for start in range(0, len(data), chunk):
                    sock.sendall(data[start : start + chunk])
            except OSError:
                pass  # refused midway: its answer may still be there to read
            line = sock.makefile("rb").readline()
            return line.split()[1].decode() if line.startswith(b"HTTP/1.1 ") else "closed"
    except TimeoutError:
        return "timeout"
    except OSError as exc:
        return type(exc).__name__


def post(path: str, body: bytes, headers: dict[str, str] | None = None, host: str = "127.0.0.1") -> bytes:
    head = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}", "Connection: close"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def get(path: str, host: str = "127.0.0.1") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()


def every(stop: threading.Event, seconds: float, action) -> None:
    while not stop.is_set():
        action()
        stop.wait(seconds)


def grpc_stalls(stop, tally, ports) -> None:
    """Item 1: 64 ModelInfer calls that send headers and never their message, held a minute at a time."""
    while not stop.is_set():
        release = threading.Event()
        with grpc.insecure_channel(f"127.0.0.1:{ports['grpc']}") as channel:
            calls = stalled_calls(channel, 64, release)
            stop.wait(60)
            tally.add("grpc stalls", f"{sum(not c.done() for c in calls)} of 64 held a minute")
            release.set()


def gzip_bombs(stop, tally, ports) -> None:
    """Item 2: 60 KB gzip bodies that inflate to 60 MB of `0.1,`, `{},` and `[],`."""
    bombs = []
    for item in (b"0.1,", b"{},", b"[],"):
        values = item * (60_000_000 // len(item))
        bombs.append(
            gzip.compress(b'{"inputs":[{"name":"x","shape":[1,3],"datatype":"FP32","data":[' + values + b"0]}]}")
        )
    turn = iter(range(1 << 30))

    def once():
        bomb = bombs[next(turn) % len(bombs)]
        tally.add("gzip bombs", status_of(ports["http"], post(INFER, bomb, {"Content-Encoding": "gzip"})))

    every(stop, 1, once)


class Trickles:
    """Items 3 and 9: `count` connections that each send one byte every 10 s, opened again when the
    server closes one; counts what the server answered on those it closed."""

    def __init__(self, name: str, port: int, count: int, head: bytes) -> None:
        self.name, self.port, self.count, self.head = name, port, count, head

    def run(self, stop, tally) -> None:
        waiting, sent_at = selectors.DefaultSelector(), {}  # epoll: more sockets than select() takes
        while not stop.is_set():
            while len(sent_at) < self.count and not stop.is_set():
                try:
                    sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                    sock.sendall(self.head)
                except OSError as exc:
                    tally.add(self.name, type(exc).__name__)
                    break
                sent_at[sock] = time.monotonic()
                waiting.register(sock, selectors.EVENT_READ)
            for key, _ in waiting.select(1):
                try:
                    answer = key.fileobj.recv(4096)
                except OSError:
                    answer = b""
                tally.add(self.name, answer.split()[1].decode() if answer.startswith(b"HTTP/1.1 ") else "closed")
                self.close(waiting, sent_at, key.fileobj)
            now = time.monotonic()
            for sock, sent in list(sent_at.items()):
                if now - sent >= 10:
                    try:
                        sock.send(b" ")
                        sent_at[sock] = now
                    except OSError:
                        self.close(waiting, sent_at, sock)
                        tally.add(self.name, "reset")
        tally.add(self.name, f"{len(sent_at)} held at the end")
        for sock in list(sent_at):
            self.close(waiting, sent_at, sock)

    @staticmethod
    def close(waiting: selectors.BaseSelector, sent_at: dict, sock: socket.socket) -> None:
        waiting.unregister(sock)
        del sent_at[sock]
        sock.close()


def huge_heads(stop, tally, ports) -> None:
    """Item 4: a 128 MB header value, and four 100 MB heads never finished, every 20 s."""
    value = b"a" * (128 << 20)

    def once():
        tally.add("128 MB header", status_of(ports["http"], b"GET /v2 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + value))
        with ThreadPoolExecutor(4) as pool:
            for outcome in pool.map(lambda _: status_of(ports["http"], b"GET /v2 HTTP/1.1\r\nX: " + value[:100 << 20]),
                                    range(4)):  # fmt: skip
                tally.add("100 MB unfinished heads", outcome)

    every(stop, 20, once)


def paused_uploads(stop, tally, ports) -> None:
    """Item 5: 8 uploads that announce 60 MB and pause, every 30 s: 4 after 1 MB, 4 one byte short."""

    def one(sent: int) -> str:
        head = f"POST {INFER} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {60 << 20}\r\n\r\n".encode()
        return status_of(ports["http"], head + b"[" * sent, timeout=120)

    def wave():
        sizes = [1 << 20] * 4 + [(60 << 20) - 1] * 4
        with ThreadPoolExecutor(8) as pool:
            for sent, outcome in zip(sizes, pool.map(one, sizes)):
                tally.add(f"paused 60 MB uploads, {'1 MB' if sent == 1 << 20 else 'all but 1 byte'} sent", outcome)

    every(stop, 30, wave)


def unread_downloads(stop, tally, ports) -> None:
    """Item 6: 40 requests for the page's 14 MB wasm whose answers are not read for 10 s."""

    def wave():
        socks = []
        for _ in range(40):
            sock = socket.create_connection(("127.0.0.1", ports["http"]), timeout=5)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(get("/static/ort/ort-wasm-simd-threaded.wasm"))
            socks.append(sock)
        stop.wait(10)
        for sock in socks:
            line = sock.makefile("rb").readline()
            tally.add("unread wasm downloads", line.split()[1].decode() if line else "closed")
            sock.close()

    every(stop, 1, wave)


def model_control(stop, tally, ports) -> None:
    """Item 7: loads of the 20 MB model and unloads, which these args (model control mode none) refuse."""

    def once():
        for action in ("load", "unload"):
            tally.add(f"model {action}", status_of(ports["http"], post(f"/v2/repository/models/wide/{action}", b"{}")))

    every(stop, 5, once)


def huge_answers(stop, tally, ports) -> None:
    """Item 8: a 384 KB request to the 3-4-512 model, whose JSON answer would be about 180 MB."""
    rows = 32_000
    body = json.dumps({"inputs": [{"name": "x", "shape": [rows, 3], "datatype": "FP32", "data": [1] * (rows * 3)}]})
    request = post("/v2/models/answer/infer", body.encode())
    every(stop, 2, lambda: tally.add("huge answer", status_of(ports["http"], request)))


def long_names(stop, tally, ports) -> None:
    """Item 10: an input named with 8 M characters, which the log must not echo whole."""
    body = json.dumps({"inputs": [{"name": "n" * 8_000_000, "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]})
    every(stop, 5, lambda: tally.add("8 M-character name", status_of(ports["http"], post(INFER, body.encode()))))


def browser_tricks(stop, tally, ports) -> None:
    """Item 11: a cross-origin text/plain unload, a foreign Host, and the weights' download."""
    port = ports["http"]
    foreign = {"Origin": "http://attacker.example", "Content-Type": "text/plain"}

    def once():
        unload = post("/v2/repository/models/mlp_3_4_1/unload", b"{}", foreign)
        tally.add("cross-origin unload", status_of(port, unload))
        tally.add("foreign Host", status_of(port, get("/v2/models/mlp_3_4_1", host="rebound.example")))
        tally.add("weights download", status_of(port, get("/v2/models/mlp_3_4_1/network/model.onnx")))

    every(stop, 2, once)


def small_ones(stop, tally, ports) -> None:
    """Item 12: each malformed body the review found, once every 2 s."""
    tensor = {"name": "x", "shape": [1, 3], "datatype": "FP32"}
    zipped = gzip.compress(ROW)
    as_string = {"name": "y", "parameters": {"binary_data": "false"}}
    bodies = {
        "id nested 1,000 deep": (b'{"id": ' + b"[" * 1000 + b"]" * 1000 + b', "inputs": []}', {}),
        "booleans as FP32": (json.dumps({"inputs": [{**tensor, "data": [0.1, True, 0.3]}]}).encode(), {}),
        'binary_data "false"': (json.dumps({**json.loads(ROW), "outputs": [as_string]}).encode(), {}),
        "truncated gzip": (zipped[:-6], {"Content-Encoding": "gzip"}),
        "gzip then junk": (zipped + b"junk", {"Content-Encoding": "gzip"}),
    }

    def once():
        for name, (body, headers) in bodies.items():
            tally.add(name, status_of(ports["http"], post(INFER, body, headers)))

    every(stop, 2, once)


def attacks(ports: dict) -> dict:
    """Each attack by name: a function of (stop, tally)."""
    slow = f"POST {INFER} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n{{".encode()
    metrics = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n"  # the head never ends
    loops = [grpc_stalls, gzip_bombs, huge_heads, paused_uploads, unread_downloads, model_control, huge_answers,
             long_names, browser_tricks, small_ones]  # fmt: skip
    named = {loop.__name__: functools.partial(loop, ports=ports) for loop in loops}
    named["slow_bodies"] = Trickles("slow bodies (300)", ports["http"], 300, slow).run
    named["half_sent_metrics"] = Trickles("half-sent /metrics (300)", ports["metrics"], 300, metrics).run
    return named


def attack(ports: dict, seconds: float, results, only: list[str]) -> None:
    """Every attack (or those named in `only`) in a thread of its own, in this (child) process."""
    stop, tally = threading.Event(), Tally()
    _, most = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (most, most))  # 600 held sockets and more
    chosen = [run for name, run in attacks(ports).items() if not only or name in only]
    threads = [threading.Thread(target=run, args=(stop, tally), daemon=True) for run in chosen]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(90)
    results.put({name: dict(counter) for name, counter in tally.counts.items()})


# --- what is measured meanwhile ------------------------------------------------------------------------


class Probes:
    """Live and ready over HTTP and gRPC every PROBE_EVERY seconds: each probe's seconds or its miss."""

    def __init__(self, ports: dict) -> None:
        self.ports, self.seconds, self.misses = ports, {}, Counter()
        self.client = Client(f"127.0.0.1:{ports['grpc']}", timeout=ANSWER_WITHIN * 5)

    def http(self, path: str) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.ports["http"], timeout=ANSWER_WITHIN * 5)
        try:
            connection.request("GET", path)
            if connection.getresponse().status != 200:
                raise RuntimeError("not 200")
        finally:
            connection.close()

    def run(self, stop: threading.Event) -> None:
        probes = {
            "HTTP live": lambda: self.http("/v2/health/live"),
            "HTTP ready": lambda: self.http("/v2/health/ready"),
            "gRPC live": self.client.live,
            "gRPC ready": self.client.ready,
        }
        while not stop.is_set():
            for name, probe in probes.items():
                start = time.monotonic()
                try:
                    ok = probe() is not False
                except Exception:  # noqa: BLE001 - any failure is a miss, counted
                    ok = False
                took = time.monotonic() - start
                self.seconds.setdefault(name, []).append(took)
                if not ok or took > ANSWER_WITHIN:
                    self.misses[name] += 1
            stop.wait(PROBE_EVERY)


class ValidClient:
    """RATE calls a second, taking turns over HTTP (JSON) and gRPC, each checked against the first answer."""

    def __init__(self, ports: dict) -> None:
        self.ports, self.outcomes, self.seconds = ports, Counter(), []
        self.stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(f"127.0.0.1:{ports['grpc']}"))
        self.request = pb.ModelInferRequest(model_name="mlp_3_4_1")
        self.request.inputs.add(name="x", datatype="FP32", shape=[1, 3])
        self.request.raw_input_contents.append(np.array([[0.5, -1, 2]], np.float32).tobytes())
        self.expected = self.grpc_call()

    def grpc_call(self) -> np.ndarray:
        answer = self.stub.ModelInfer(self.request, timeout=5)
        return np.frombuffer(answer.raw_output_contents[0], np.float32).reshape(1, -1)

    def http_call(self) -> np.ndarray:
        connection = http.client.HTTPConnection("127.0.0.1", self.ports["http"], timeout=5)
        try:
            connection.request("POST", INFER, body=ROW, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            answer = json.loads(response.read())
            if response.status != 200:
                raise RuntimeError(f"{response.status}")
            return np.array(answer["outputs"][0]["data"], np.float32).reshape(1, -1)
        finally:
            connection.close()

    def one(self, turn: int) -> None:
        start = time.monotonic()
        try:
            y = self.http_call() if turn % 2 else self.grpc_call()
            outcome = "ok" if np.array_equal(y, self.expected) else "wrong numbers"
        except Exception as exc:  # noqa: BLE001 - counted
            outcome = type(exc).__name__
        self.seconds.append(time.monotonic() - start)
        self.outcomes[outcome] += 1

    def run(self, seconds: float) -> None:
        start = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            for turn in range(int(seconds * RATE)):
                time.sleep(max(0.0, start + turn / RATE - time.monotonic()))
                pool.submit(self.one, turn)


class Memory:
    """The container's memory from its cgroup on this host (v2 or v1), sampled every second: what it
    uses with the page cache (what the limit counts, though the kernel reclaims cache before any OOM
    kill), and its anonymous memory (the processes' own, which no reclaim gives back); OOM kills."""

    def __init__(self, container_id: str) -> None:
        found = [p for p in Path("/sys/fs/cgroup").rglob(f"*{container_id}*") if p.is_dir()]
        v2 = [p for p in found if (p / "memory.current").exists()]
        v1 = [p for p in found if (p / "memory.usage_in_bytes").exists()]
        self.folder, self.v2 = (v2 or v1 or [None])[0], bool(v2)
        self.used: list[int] = []
        self.anonymous: list[int] = []

    def read(self, v2_name: str, v1_name: str) -> str:
        return (self.folder / (v2_name if self.v2 else v1_name)).read_text() if self.folder else ""

    def stat(self, name: str) -> int:
        for line in self.read("memory.stat", "memory.stat").splitlines():
            key, value = line.split()
            if key == name:
                return int(value)
        return 0

    def sample(self, stop: threading.Event) -> None:
        while not stop.wait(1) and self.folder:
            self.used.append(int(self.read("memory.current", "memory.usage_in_bytes")))
            self.anonymous.append(self.stat("anon" if self.v2 else "total_rss"))

    def peak_mb(self) -> float | None:
        text = self.read("memory.peak", "memory.max_usage_in_bytes") if self.folder else ""
        return int(text) / 2**20 if text.strip().isdigit() else (max(self.used) / 2**20 if self.used else None)

    def oom_kills(self) -> int:
        for line in self.read("memory.events", "memory.oom_control").splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
        return 0


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120, check=True).stdout


def percentile(values: list[float], share: float) -> float:
    return float(np.percentile(values, share * 100)) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", default="forwardpass:latest")
    parser.add_argument("--seconds", type=float, default=180)
    parser.add_argument("--only", nargs="*", default=[], help="run only these attacks (names: see attacks())")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "pod-limits.json")
    options = parser.parse_args()
    args, memory, cpus = manifest_limits()
    ports = {"http": free_port(), "grpc": free_port(), "metrics": free_port()}
    folder = Path(tempfile.mkdtemp(prefix="forwardpass-pod-"))
    name = f"forwardpass-pod-limits-{os.getpid()}"
    try:
        models = repository(folder)
        container_id = docker(
            "run", "--detach", "--name", name, "--network", "host", "--memory", memory, "--cpus", cpus,
            "--volume", f"{models}:/mnt/models:ro", options.image, *args,
            "--host", "127.0.0.1", "--metrics-host", "127.0.0.1",
            *(flag for door in ("http", "grpc", "metrics") for flag in (f"--{door}-port", str(ports[door]))),
        ).strip()  # fmt: skip
        print(f"{options.image} with --memory {memory} --cpus {cpus}, args {' '.join(args)}", flush=True)
        wait_ready(ports, name)
        return measure(options, ports, name, container_id, memory, cpus, args)
    finally:
        subprocess.run(["docker", "rm", "--force", name], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def wait_ready(ports: dict, name: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", ports["http"], timeout=2)
            connection.request("GET", "/v2/health/ready")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit("the container did not become ready:\n" + docker("logs", name))


def measure(options, ports: dict, name: str, container_id: str, memory: str, cpus: str, args: list[str]) -> int:
    memory_watch, probes, valid = Memory(container_id), Probes(ports), ValidClient(ports)
    stop = threading.Event()
    watchers = [threading.Thread(target=target, args=(stop,)) for target in (memory_watch.sample, probes.run)]
    for thread in watchers:
        thread.start()
    results = multiprocessing.get_context("spawn").Queue()
    attacker = multiprocessing.get_context("spawn").Process(
        target=attack, args=(ports, options.seconds, results, options.only)
    )
    attacker.start()
    started = time.monotonic()
    valid.run(options.seconds)
    attacks = results.get(timeout=300)
    attacker.join(60)
    stop.set()
    for thread in watchers:
        thread.join()
    logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True).stderr
    state = json.loads(docker("inspect", "--format", "{{json .State}}", name))
    calls = sum(valid.outcomes.values())
    figures = {
        "image": options.image, "memory_limit": memory, "cpus": cpus, "args": args,
        "seconds": round(time.monotonic() - started),
        "oom_kills": memory_watch.oom_kills() + int(state.get("OOMKilled", False)),
        "worker_restarts": logs.count("; restarting it"), "container_running": state.get("Running"),
        "memory_peak_mb": memory_watch.peak_mb(),
        "memory_median_mb": statistics.median(memory_watch.used) / 2**20 if memory_watch.used else None,
        "anonymous_peak_mb": max(memory_watch.anonymous, default=0) / 2**20,
        "anonymous_median_mb": statistics.median(memory_watch.anonymous or [0]) / 2**20,
        "log_mb": len(logs.encode()) / 2**20, "longest_log_line": max(map(len, logs.splitlines()), default=0),
        "probes": {probe: {"count": len(s), "p99_ms": percentile(s, 0.99) * 1000, "max_ms": max(s) * 1000,
                           "misses": probes.misses[probe]} for probe, s in probes.seconds.items()},
        "valid": {"calls": calls, "outcomes": dict(valid.outcomes), "ok_share": valid.outcomes["ok"] / max(calls, 1),
                  "p50_ms": percentile(valid.seconds, 0.5) * 1000, "p99_ms": percentile(valid.seconds, 0.99) * 1000},
        "attacks": attacks,
    }  # fmt: skip
    holds = {
        "0 OOM kills": figures["oom_kills"] == 0,
        "0 worker restarts": figures["worker_restarts"] == 0 and bool(figures["container_running"]),
        "live and ready within 1 s": all(p["misses"] == 0 for p in figures["probes"].values()),
        "99.9% of valid calls OK": figures["valid"]["ok_share"] >= OK_SHARE,
    }
    figures["holds"] = holds
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(figures, indent=2) + "\n")
    options.out.with_suffix(".log").write_text(logs)  # the container's own log, for what went wrong
    report(figures)
    return 0 if all(holds.values()) else 1


def report(figures: dict) -> None:
    f = figures
    print(f"\n{f['seconds']} s; memory with page cache: peak {f['memory_peak_mb']:.0f} MiB of {f['memory_limit']}, "
          f"median {f['memory_median_mb']:.0f} MiB; the processes' own (anonymous): peak {f['anonymous_peak_mb']:.0f} "
          f"MiB, median {f['anonymous_median_mb']:.0f} MiB (sampled each second); log {f['log_mb']:.1f} MiB, longest "
          f"line {f['longest_log_line']} characters")  # fmt: skip
    valid = figures["valid"]
    print(f"valid client: {valid['calls']} calls, {valid['ok_share']:.4%} OK {valid['outcomes']}, "
          f"p50 {valid['p50_ms']:.1f} ms, p99 {valid['p99_ms']:.1f} ms")  # fmt: skip
    print("| probe | count | p99 ms | max ms | misses (> 1 s or not 200) |\n|---|---|---|---|---|")
    for probe, p in figures["probes"].items():
        print(f"| {probe} | {p['count']} | {p['p99_ms']:.1f} | {p['max_ms']:.1f} | {p['misses']} |")
    print("\n| attack | what the server answered (count) |\n|---|---|")
    for attack_name, outcomes in figures["attacks"].items():
        print(f"| {attack_name} | {', '.join(f'{k}: {v}' for k, v in sorted(outcomes.items()))} |")
    print()
    for hold, ok in figures["holds"].items():
        print(f"{'held' if ok else 'FAILED'}: {hold}")


if __name__ == "__main__":
    sys.exit(main())
