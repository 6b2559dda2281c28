"""The HTTP door's time and memory budget against slow, hostile and huge input, each against a real
server on loopback: probes that slow clients cannot starve, bodies with a deadline and a minimum
rate, heads capped at 64 KiB, a per-worker budget of body bytes, bodies that cannot be a request
refused before they are parsed, answers bounded before they are computed, static files streamed,
a bounded /metrics and log lines of bounded length. Memory is read from /proc/<worker>/status."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import http.client
import json
import os
import re
import select
import shutil
import socket
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from forwardpass.builder.spec import Activation
from forwardpass.protos import grpc_service_pb2 as pb
from forwardpass.protos import grpc_service_pb2_grpc as pb_grpc
from forwardpass.server import rest
from forwardpass.server.rest import BodyLimits, HttpError, RestApp

from harness import ROOT, ServerProcess, build_into, free_port, scrape
from numerics import random_spec

INFER = "/v2/models/mlp_3_4_1/infer"


@pytest.fixture
def repository(tmp_path):
    shutil.copytree(ROOT / "models", tmp_path / "models")
    return tmp_path / "models"


@contextlib.contextmanager
def serving(repository, *args: str):
    """A one-worker server (so every call meets the same worker), stopped cleanly at the end."""
    server = ServerProcess(repository, "--workers", "1", *args)
    try:
        yield server
    finally:
        assert server.stop() == 0, server.output()


@contextlib.contextmanager
def watching_live(server):
    """The time each of a stream of live probes took while the block runs, in seconds."""
    stop, took = threading.Event(), []

    def probe() -> None:
        while not stop.is_set():
            start = time.monotonic()
            assert call(server, "GET", "/v2/health/live", timeout=60)[0] == 200
            took.append(time.monotonic() - start)
            time.sleep(0.01)

    thread = threading.Thread(target=probe)
    thread.start()
    try:
        yield took
    finally:
        stop.set()
        thread.join()


def port_of(server) -> int:
    return int(server.http_url.rsplit(":", 1)[1])


def call(server, method: str, path: str, body: bytes | None = None, headers=None, timeout: float = 60):
    """One request on its own connection: (status, headers, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port_of(server), timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def error(answer) -> str:
    return json.loads(answer[2])["error"]


def half_sent(server, length: int, sent: bytes = b'{"inputs": [') -> socket.socket:
    """A connection whose infer request announces `length` bytes and sends only `sent` of them."""
    sock = socket.create_connection(("127.0.0.1", port_of(server)), timeout=30)
    head = f"POST {INFER} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n\r\n".encode()
    sock.sendall(head + sent)
    return sock


def answer_on(sock: socket.socket, timeout: float = 30) -> bytes:
    """Whatever the server sends on a connection until it closes it (or `timeout` passes)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        pass
    return data


def is_open(sock: socket.socket) -> bool:
    """Whether the server has not closed a connection (nothing is ever sent on it)."""
    if not select.select([sock], [], [], 0)[0]:
        return True
    try:
        return sock.recv(1) != b""
    except ConnectionError:  # closed with data unread: a reset
        return False


def worker_pid(server) -> int:
    """The one worker process of a --workers 1 server (the supervisor's child)."""
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def memory_mb(pid: int, field: str) -> float:
    """VmRSS or VmHWM (the peak) of a process, in MB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", status, re.M)[1]) / 1024


def one_row_request() -> bytes:
    return json.dumps({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}).encode()


# 1. Health routes


def test_live_answers_while_slow_bodies_fill_the_worker(repository):
    with serving(repository, "--max-concurrent-rpcs", "4") as server, contextlib.ExitStack() as held:
        for _ in range(6):
            held.enter_context(half_sent(server, 1000))
        time.sleep(0.5)
        for path in ("/v2/health/live", "/v2/health/ready"):
            assert call(server, "GET", path)[0] == 200, path
        answer = call(server, "POST", INFER, one_row_request())
        assert answer[0] == 503 and "in flight" in error(answer)  # the cap itself still holds


def test_a_health_route_sent_a_body_skips_it_and_closes_the_connection(repository):
    with serving(repository) as server:
        with socket.create_connection(("127.0.0.1", port_of(server)), timeout=10) as sock:
            sock.sendall(
                b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n" + b"x" * 10
            )
            answer = answer_on(sock, timeout=10)  # closed by the server: no wait for the 99,990 bytes
    assert answer.startswith(b"HTTP/1.1 200") and b'{"live":true}' in answer, answer
    assert b"connection: close" in answer.lower()


# 2. Slow bodies


def test_a_body_past_its_deadline_is_408(repository):
    with serving(repository, "--http-body-timeout", "2", "--http-min-body-rate", "0") as server:
        with half_sent(server, 1000, b"") as sock:
            start = time.monotonic()
            for _ in range(8):  # a byte every 0.5 s: never 30 s apart, never done
                time.sleep(0.5)
                try:
                    sock.sendall(b" ")
                except OSError:
                    break
            answer = answer_on(sock, timeout=10)
            assert answer.startswith(b"HTTP/1.1 408") and b"--http-body-timeout" in answer, answer
            assert time.monotonic() - start < 6


def test_a_body_below_the_minimum_rate_is_408_after_the_grace(repository):
    with serving(repository, "--http-min-body-rate", "1000") as server, half_sent(server, 100_000, b"") as sock:
        start = time.monotonic()
        answer = b""
        while time.monotonic() - start < 15 and not answer:
            try:
                sock.sendall(b" ")  # 2 bytes a second
            except OSError:
                break
            sock.settimeout(0.5)
            try:
                answer = sock.recv(65536)
            except TimeoutError:
                pass
        took = time.monotonic() - start
        answer += answer_on(sock, timeout=10)  # the head and the body may come in two segments
        assert answer.startswith(b"HTTP/1.1 408") and b"--http-min-body-rate" in answer, answer
        assert 4.5 < took < 8


def body_wait(timeout: float):
    """RestApp._body waiting for a body that never comes, with a `timeout`-second deadline, in process."""
    app = RestApp(None, 1 << 20, 8, BodyLimits(timeout, 0, 1 << 20))

    async def never():
        await asyncio.Event().wait()

    return app._body(never, {}, [0], 1 << 20, (1 << 20, ""))


def test_the_body_timer_is_a_408_and_a_stop_stays_a_cancellation():
    """The timer that ends a body's wait cancels the task and makes that a 408; a cancellation of the task
    by the server itself (a stop), alone or in the same pass of the loop as the timer, stays one."""

    async def timed_out():
        with pytest.raises(HttpError) as refused:
            await body_wait(0.05)
        assert refused.value.status == 408 and asyncio.current_task().cancelling() == 0

    async def stopped(timeout: float, after: float | None):
        """Cancel the waiting task at once, or `after` seconds on, after the body's timer is due."""
        task = asyncio.create_task(body_wait(timeout))
        await asyncio.sleep(0)  # the task waits for the body, its timer set
        if after is None:
            task.cancel()
        else:
            asyncio.get_running_loop().call_later(after, task.cancel)
            time.sleep(0.05)  # both are due by the loop's next pass: the timer fires first, then the stop
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(timed_out())
    asyncio.run(stopped(30, None))  # long before the deadline
    asyncio.run(stopped(0.001, 0.002))


def test_the_body_timer_follows_the_chunks(monkeypatch):
    """One timer serves the whole body: chunks that keep coming, each sooner than the pause allowed
    between them, go on past the first moment it was set for; a pause longer than that is a 408."""
    monkeypatch.setattr(rest, "READ_TIMEOUT", 0.2)
    app = RestApp(None, 1 << 20, 8, BodyLimits(30, 0, 1 << 20))

    def chunks(pauses: list[float]):
        async def receive():
            await asyncio.sleep(pauses.pop(0))
            return {"type": "http.request", "body": b"x", "more_body": bool(pauses)}

        return receive

    async def read(pauses: list[float]):
        return await app._body(chunks(pauses), {}, [0], 1 << 20, (1 << 20, ""))

    assert asyncio.run(read([0.1] * 6)) == b"x" * 6  # 0.6 s in all, three times the pause allowed
    with pytest.raises(HttpError) as refused:
        asyncio.run(read([0.1, 0.1, 0.5, 0.1]))
    assert refused.value.status == 408 and "no part of the body came for 0.2 s" in str(refused.value)


# 3. Heads


def test_a_header_above_64_kib_is_431(repository):
    with serving(repository) as server:
        answer = call(server, "GET", "/v2/health/live", headers={"X-Big": "a" * (1 << 20)})
        assert answer[0] == 431 and "65536" in error(answer)
        with socket.create_connection(("127.0.0.1", port_of(server)), timeout=10) as sock:
            sent = 0
            try:
                sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nX-Unfinished: ")
                for _ in range(100):  # up to 100 MB of one header that never ends
                    sock.sendall(b"b" * (1 << 20))
                    sent += 1 << 20
            except OSError:
                pass
            assert sent < 8 << 20, sent  # cut off early, not gathered
        assert call(server, "GET", "/v2/health/live")[0] == 200


# 4. The budget of body bytes


def test_body_bytes_past_the_worker_budget_are_503_with_retry_after(repository):
    with serving(repository, "--max-message-mb", "1", "--http-body-budget-mb", "2") as server:
        with contextlib.ExitStack() as held:
            for _ in range(2):  # 2 x 900 KB held, under the 1 MiB limit each
                held.enter_context(half_sent(server, 1_000_000, b"[" * 900_000))
            time.sleep(1)
            answer = call(server, "POST", INFER, b" " * 600_000 + one_row_request())
            assert answer[0] == 503 and answer[1]["Retry-After"] == "1", answer
            assert "--http-body-budget-mb" in error(answer)
        time.sleep(0.5)  # the held bytes are given back as the connections go
        assert call(server, "POST", INFER, b" " * 900_000 + one_row_request())[0] == 200


def test_a_body_holds_the_memory_of_the_bytes_it_sent_not_of_the_bytes_it_announced(repository):
    # Eight uploads announce 60 MB and send 1 MB each: the worker holds their 8 MB, not 480 (a buffer
    # sized by Content-Length took a 1 GiB container with 2 workers to its limit).
    with serving(repository) as server:
        pid = worker_pid(server)
        before = memory_mb(pid, "VmRSS")
        with contextlib.ExitStack() as held:
            for _ in range(8):
                held.enter_context(half_sent(server, 60 * 2**20, b"[" * 2**20))
            time.sleep(1.5)  # every byte sent has reached the worker
            grown = memory_mb(pid, "VmRSS") - before
        assert grown < 64, f"8 uploads of 1 MB sent raised the worker by {grown:.0f} MB"
        assert call(server, "GET", "/v2/health/live")[0] == 200


# 5. Bodies that cannot be a request


def test_a_body_of_empty_lists_is_refused_before_it_is_parsed(repository):
    bomb = gzip.compress(b'{"inputs": [' + b"[]," * 20_000_000 + b"[]]}", 9)  # 60 KB in, 60 MB of JSON
    assert len(bomb) < 200_000
    with serving(repository) as server:
        pid = worker_pid(server)
        before = memory_mb(pid, "VmHWM")
        with watching_live(server) as took:
            for _ in range(3):
                answer = call(server, "POST", INFER, bomb, {"Content-Encoding": "gzip"})
                assert answer[0] == 413 and "values" in error(answer), answer[:2]
        grown = memory_mb(pid, "VmHWM") - before
    assert grown < 256, f"the worker's peak grew by {grown:.0f} MB"
    assert max(took) < 1, f"live took {max(took):.2f} s"


def test_the_body_of_any_other_call_is_small(repository):
    bomb = gzip.compress(b"[]," * 20_000_000 + b"[]", 9)
    with serving(repository) as server:
        for path in ("/v2/repository/index", "/v2/repository/models/mlp_3_4_1/load"):
            answer = call(server, "POST", path, bomb, {"Content-Encoding": "gzip"})
            assert answer[0] == 413 and "1048576 bytes a call to this route" in error(answer), answer
            answer = call(server, "POST", path, b'{"ready": true}' + b" " * 2_000_000)
            assert answer[0] == 413 and "1048576" in error(answer), answer
        assert call(server, "POST", "/v2/repository/index", b'{"ready": true}')[0] == 200


def test_a_body_nested_deeper_than_a_request_is_refused_before_it_is_parsed(repository):
    data = "[" * 40 + "1, 2, 3" + "]" * 40  # one row, 40 lists deep
    document = (
        f'{{"id": "{"p" * 70_000}", "inputs": [{{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": {data}}}]}}'
    )
    with serving(repository) as server:
        answer = call(server, "POST", INFER, document.encode())
        assert answer[0] == 400 and "43 levels deep" in error(answer), answer  # with the document, inputs and the input
        flat = document.replace(data, "[[1, 2, 3]]")  # as deep as a request nests: answered
        assert call(server, "POST", INFER, flat.encode())[0] == 200


def test_a_body_inflating_past_what_the_model_takes_is_413_naming_the_bound(repository):
    config = repository / "mlp_3_4_1" / "config.pbtxt"
    config.write_text(config.read_text().replace("max_batch_size: 1048576", "max_batch_size: 8"))
    with serving(repository) as server:
        body = b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]' + b" " * 1_000_000
        answer = call(server, "POST", INFER, gzip.compress(body + b"}"), {"Content-Encoding": "gzip"})
        assert answer[0] == 413 and "max_batch_size 8" in error(answer), answer
        data = ",".join(["1"] * 3 * 20_000)  # 20,000 rows of JSON where 8 are taken: refused unparsed
        body = f'{{"inputs": [{{"name": "x", "shape": [20000, 3], "datatype": "FP32", "data": [{data}]}}]}}'.encode()
        answer = call(server, "POST", INFER, body)
        assert answer[0] == 413 and "max_batch_size 8" in error(answer), answer
        assert call(server, "POST", INFER, gzip.compress(one_row_request()), {"Content-Encoding": "gzip"})[0] == 200


@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested"])
def test_the_largest_json_request_admitted_raises_the_worker_by_under_256_mb(repository, nested):
    # The most values a JSON request may hold (a nested row counts as one too), each written with 24
    # or 30 digits: about 64 MiB, the largest body admitted. A whole parse of 40 MB of such JSON held
    # about 150 MB besides the body, which with the body and the model's arrays passed 256 MB.
    rows = (2**21 - 4096) // (4 if nested else 3)
    x = np.random.default_rng(5).standard_normal((rows, 3))
    text = np.char.mod("%.29e" if nested else "%.23e", x).astype(object)
    data = (
        "[" + ",".join("[" + ",".join(row) + "]" for row in text) + "]"
        if nested
        else "[" + ",".join(text.ravel()) + "]"
    )
    body = f'{{"inputs": [{{"name": "x", "shape": [{rows}, 3], "datatype": "FP32", "data": {data}}}]}}'.encode()
    assert 55 << 20 < len(body) < 64 << 20
    head = (
        f'{{"inputs": [{{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [{",".join(text[:2].ravel())}]}}]}}'
    )
    with serving(repository) as server:
        pid = worker_pid(server)
        assert call(server, "POST", INFER, one_row_request())[0] == 200
        before = memory_mb(pid, "VmHWM")
        with watching_live(server) as took:
            status, _, answer = call(server, "POST", INFER, body)
        assert status == 200, answer[:300]
        grown = memory_mb(pid, "VmHWM") - before
        first = call(server, "POST", INFER, head.encode())  # parsed whole, as every small body is
    assert grown < 256, f"the worker's peak grew by {grown:.0f} MB for {len(body) >> 20} MB of JSON"
    assert max(took) < 2, f"live took {max(took):.2f} s"
    assert json.loads(answer)["outputs"][0]["data"][:2] == json.loads(first[2])["outputs"][0]["data"]


# 6. Answers bounded before they are computed


@pytest.fixture
def wide(tmp_path):
    """A repository with a 3-4-512 model: 512 values per row out for 3 in."""
    repository = tmp_path / "wide"
    spec = random_spec(np.random.default_rng(6), (3, 4, 512), (Activation("relu"), Activation("sigmoid")))
    build_into(repository, "wide", spec)
    return repository


def executions(server) -> int:
    stats = json.loads(call(server, "GET", "/v2/models/wide/stats")[2])["model_stats"][0]
    return stats["execution_count"]


def test_an_answer_above_the_limit_is_refused_before_it_is_computed(wide):
    with serving(wide) as server:
        x = np.ones((32_768, 3), np.float32)  # 384 KB in; as JSON 32,768 x 512 values out (180 MB)
        header = json.dumps({"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                                         "parameters": {"binary_data_size": x.nbytes}}]}).encode()  # fmt: skip
        headers = {"Inference-Header-Content-Length": str(len(header))}
        answer = call(server, "POST", "/v2/models/wide/infer", header + x.tobytes(), headers)
        assert answer[0] == 413 and "--max-message-mb" in error(answer), answer[2][:300]
        assert executions(server) == 0
        message = pb.ModelInferRequest(model_name="wide")  # over gRPC: 64 MiB of raw float32 out
        message.inputs.add(name="x", datatype="FP32", shape=[40_000, 3])
        message.raw_input_contents.append(np.ones((40_000, 3), np.float32).tobytes())
        with grpc.insecure_channel(server.url) as channel:
            with pytest.raises(grpc.RpcError) as info:
                pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(message, timeout=60)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-message-mb" in info.value.details()
        assert executions(server) == 0
        small = np.ones((1_000, 3), np.float32)  # 2 MB of JSON out: answered
        document = {"inputs": [{"name": "x", "shape": [1_000, 3], "datatype": "FP32", "data": small.ravel().tolist()}]}
        assert call(server, "POST", "/v2/models/wide/infer", json.dumps(document).encode())[0] == 200
        assert executions(server) == 1


# 7. Static files


def test_unread_downloads_of_the_wasm_hold_it_once(tmp_path, repository):
    ort = tmp_path / "ort"  # onnxruntime-web's files, the wasm as large as the real one
    ort.mkdir()
    for name in ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs"):
        (ort / name).write_text("export {};\n")
    (ort / "ort-wasm-simd-threaded.wasm").write_bytes(os.urandom(14 << 20))
    path = "/static/ort/ort-wasm-simd-threaded.wasm"
    with serving(repository, "--page", "--ort-web-dir", str(ort)) as server, contextlib.ExitStack() as held:
        pid = worker_pid(server)
        assert len(call(server, "GET", path)[2]) == 14 << 20  # read whole once
        before = memory_mb(pid, "VmRSS")
        for _ in range(40):  # asked for, never read
            sock = held.enter_context(socket.create_connection(("127.0.0.1", port_of(server)), timeout=30))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        time.sleep(2)
        grown = memory_mb(pid, "VmRSS") - before
        assert grown < 100, f"the worker grew by {grown:.0f} MB for 40 unread downloads"
        assert call(server, "GET", "/v2/health/live")[0] == 200


# 8. /metrics


def test_metrics_connections_are_bounded_and_time_out(repository):
    port = free_port()
    with serving(repository, "--metrics-port", str(port)) as server:
        pid = worker_pid(server)
        assert scrape(port)  # a thread for the first scrape exists and is gone again
        before = len(os.listdir(f"/proc/{pid}/task"))
        with contextlib.ExitStack() as held:
            idle = [held.enter_context(socket.create_connection(("127.0.0.1", port), timeout=30)) for _ in range(100)]
            for sock in idle:
                sock.sendall(b"GET /metr")  # half a request, then silence
            time.sleep(1)
            threads = len(os.listdir(f"/proc/{pid}/task"))
            assert threads <= before + 16, (before, threads)
            waiting = [sock for sock in idle if is_open(sock)]  # those beyond the threads are closed at once
            assert 0 < len(waiting) <= 16, len(waiting)
            time.sleep(11)  # ... and the rest once they have been silent for 10 s
            assert not any(map(is_open, waiting))
        assert scrape(port)


# 9. Logs


def test_a_huge_name_is_cut_in_the_log(repository):
    document = {"id": "i" * 100_000, "inputs": [{"name": "n" * 1_000_000, "shape": [1, 3], "datatype": "FP32",
                                                 "data": [1, 2, 3]}]}  # fmt: skip
    with serving(repository) as server:
        answer = call(server, "POST", INFER, json.dumps(document).encode())
        assert answer[0] == 400 and "unexpected input" in error(answer)
        call(server, "POST", "/v2/models/" + "m" * 60_000 + "/infer", one_row_request())  # a long path too
        time.sleep(0.5)
    failures = [line for line in server.lines if '"event": "failed"' in line]
    assert len(failures) >= 2, server.output()[-2000:]
    assert max(map(len, failures)) < 2000, max(map(len, failures))
    assert all(re.search(r"\.\.\. \(\d{5,} characters\)", line) for line in failures), failures[0][-300:]
