"""Models loaded while serving: poll mode picks up new versions without a failed call; explicit mode
loads and unloads on request, on every worker; a corrupt version is refused and the old one serves."""

import shutil
import threading
import time

import grpc
import numpy as np
import pytest

from forwardpass.builder.export import export_to_repository
from forwardpass.builder.graph import ExportOptions
from forwardpass.builder.spec import Activation
from forwardpass.protos import grpc_service_pb2 as pb
from forwardpass.protos import grpc_service_pb2_grpc as pb_grpc
from forwardpass.tolerance import compare

from harness import ROOT, ServerProcess, answering_worker, free_port, scrape
from numerics import random_input, random_spec

ACTS = (Activation("relu"), Activation("sigmoid"))


def stub(url):
    channel = grpc.insecure_channel(url, options=[("grpc.use_local_subchannel_pool", 1)])  # a connection of its own
    return channel, pb_grpc.GRPCInferenceServiceStub(channel)


def infer(s, X, model="m"):
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="x", datatype="FP32", shape=[X.shape[1], 3])
    request.raw_input_contents.append(np.ascontiguousarray(X.T).tobytes())
    response = s.ModelInfer(request, timeout=10)
    return response.model_version, np.frombuffer(response.raw_output_contents[0], np.float32).reshape(-1, 1).T


def drop_version(repository, version, spec):
    """Write a version beside the repository, then rename it in: a poll never sees half a folder."""
    staging = repository.parent / f"staging-{version}"
    export_to_repository(spec, ExportOptions(), staging, "m", version, force=True)
    (repository / "m" / str(version)).parent.mkdir(exist_ok=True)
    shutil.move(str(staging / "m" / str(version)), str(repository / "m" / str(version)))


@pytest.fixture
def repository(tmp_path):
    repository = tmp_path / "models"
    export_to_repository(random_spec(np.random.default_rng(1), (3, 4, 1), ACTS), ExportOptions(), repository, "m", 1)
    return repository


def test_poll_mode_switches_to_a_new_version_without_a_failed_call(repository):
    v1 = random_spec(np.random.default_rng(1), (3, 4, 1), ACTS)
    v2 = random_spec(np.random.default_rng(2), (3, 4, 1), ACTS)
    server = ServerProcess(
        repository, "--workers", "2", "--model-control-mode", "poll", "--repository-poll-secs", "0.3"
    )
    X = random_input(np.random.default_rng(3), 3, 8, "float32")
    answers, errors, stop = [], [], threading.Event()

    def hammer():
        channel, s = stub(server.url)
        with channel:
            while not stop.is_set():
                try:
                    answers.append(infer(s, X))
                except grpc.RpcError as exc:
                    errors.append(exc.code().name)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        time.sleep(0.5)
        drop_version(repository, 2, v2)
        deadline = time.monotonic() + 20
        while not any(version == "2" for version, _ in answers[-50:]) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # every worker has rescanned
        stop.set()
        for t in threads:
            t.join()
        assert not errors, errors[:5]
        specs = {"1": v1, "2": v2}
        for version, y in answers:
            assert compare(specs[version], X, y, "float32").ok  # each answer is one version's, whole
        assert {version for version, _ in answers} == {"1", "2"}
        for _ in range(6):  # new connections, both workers: all on version 2 now
            channel, s = stub(server.url)
            with channel:
                assert infer(s, X)[0] == "2"
    finally:
        stop.set()
        assert server.stop() == 0


def test_poll_mode_refuses_a_corrupt_version_and_keeps_serving(repository):
    server = ServerProcess(
        repository, "--workers", "1", "--model-control-mode", "poll", "--repository-poll-secs", "0.2"
    )
    try:
        (repository.parent / "staging").mkdir()
        (repository.parent / "staging" / "model.onnx").write_bytes(b"corrupt")
        shutil.move(str(repository.parent / "staging"), str(repository / "m" / "2"))
        deadline = time.monotonic() + 20
        while "refusing m version 2" not in server.output() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "refusing m version 2" in server.output()
        channel, s = stub(server.url)
        with channel:
            assert infer(s, random_input(np.random.default_rng(4), 3, 2, "float32"))[0] == "1"
    finally:
        assert server.stop() == 0


def test_explicit_mode_loads_and_unloads_on_every_worker(repository):
    shutil.copytree(ROOT / "models" / "mlp_3_4_1", repository / "mlp_3_4_1")
    server = ServerProcess(repository, "--workers", "2", "--model-control-mode", "explicit", "--load-model", "m")

    def ready_everywhere(model, want):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            seen = set()
            for _ in range(12):
                channel, s = stub(server.url)
                with channel:
                    seen.add((answering_worker(s), s.ModelReady(pb.ModelReadyRequest(name=model), timeout=10).ready))
            if len({pid for pid, _ in seen}) == 2 and all(ready == want for _, ready in seen):
                return True
            time.sleep(0.2)
        return False

    try:
        assert ready_everywhere("m", True) and ready_everywhere("mlp_3_4_1", False)
        channel, s = stub(server.url)
        with channel:
            s.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="mlp_3_4_1"), timeout=30)
            assert ready_everywhere("mlp_3_4_1", True)
            s.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="m"), timeout=30)
            assert ready_everywhere("m", False)
            with pytest.raises(grpc.RpcError) as info:
                s.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="nope"), timeout=30)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        assert server.stop() == 0


@pytest.fixture
def explicit(repository):
    (repository.parent / "evil" / "1").mkdir(parents=True)  # a model folder outside the repository
    shutil.copy(repository / "m" / "1" / "model.onnx", repository.parent / "evil" / "1" / "model.onnx")
    server = ServerProcess(repository, "--workers", "1", "--model-control-mode", "explicit")
    channel, s = stub(server.url)
    yield s
    channel.close()
    assert server.stop() == 0


def load_status(s, name, **parameters) -> tuple[str, str]:
    request = pb.RepositoryModelLoadRequest(model_name=name)
    for key, value in parameters.items():
        request.parameters[key.replace("_", ":")].string_param = value
    try:
        s.RepositoryModelLoad(request, timeout=30)
        return "OK", ""
    except grpc.RpcError as exc:
        return exc.code().name, exc.details()


@pytest.mark.parametrize("name", ["../evil", "/etc", "/nonexistent", "m/../../evil", "./m", "m/", "..", ".", ".m"])
def test_a_model_name_that_is_a_path_is_refused_and_loads_nothing(explicit, name):
    code, details = load_status(explicit, name)
    assert code == "INVALID_ARGUMENT" and "not a model folder name" in details
    index = explicit.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=10)
    assert {m.name for m in index.models} == {"m"}  # nothing was served under that name


def test_an_unknown_name_gets_one_answer_whatever_exists_at_that_path(explicit, repository):
    (repository / "a-file").write_text("not a model folder")
    answers = {name: load_status(explicit, name) for name in ("etc", "nonexistent", "a-file", "evil")}
    assert {code for code, _ in answers.values()} == {"NOT_FOUND"}
    assert {details.replace(repr(name), "NAME") for name, (_, details) in answers.items()} == {
        "the model repository has no model NAME"
    }


def test_load_refuses_a_config_override_and_uploaded_files(explicit):
    assert load_status(explicit, "m", config='{"max_batch_size": 1}')[0] == "INVALID_ARGUMENT"
    code, details = load_status(explicit, "m", file_1_model_onnx="AAAA")
    assert code == "INVALID_ARGUMENT" and "load parameter 'file:1:model:onnx'" in details


def test_loads_on_two_workers_at_once_both_stay_loaded(tmp_path):
    """Two workers edit the wanted set at the same moment: neither change is lost, and each worker
    reconciles to both (ModelControl over a shared wanted file, as the workers have it)."""
    from forwardpass.server.control import ModelControl, read_wanted, write_wanted
    from forwardpass.server.repository import Repository

    repository = tmp_path / "models"
    for name in ("a", "b", "c"):
        export_to_repository(random_spec(np.random.default_rng(1), (3, 4, 1), ACTS), ExportOptions(), repository, name)
    wanted = tmp_path / "wanted.json"
    write_wanted(wanted, {"a": 0})
    workers = []
    for _ in range(2):
        models = Repository(repository, provider="cpu")
        control = ModelControl(models, "explicit", wanted, lambda: None)
        models.load(control.wanted())
        workers.append((models, control))
    threads = [threading.Thread(target=c.load, args=(n,)) for (_, c), n in zip(workers, ("b", "c"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(read_wanted(wanted)) == {"a", "b", "c"}
    workers[0][1].unload("a")
    for models, control in workers:
        control.reconcile()
        assert sorted(n for n, e in models.models.items() if e.ready) == ["b", "c"]


def test_load_and_unload_are_refused_outside_explicit_mode(repository):
    server = ServerProcess(repository, "--workers", "1")
    try:
        channel, s = stub(server.url)
        with channel, pytest.raises(grpc.RpcError) as info:
            s.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="m"), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "not allowed in model control mode 'none'" in info.value.details()
    finally:
        assert server.stop() == 0


def test_a_version_dropped_in_is_counted_in_the_metrics(repository):
    port = free_port()
    server = ServerProcess(
        repository,
        "--workers",
        "2",
        "--model-control-mode",
        "poll",
        "--repository-poll-secs",
        "0.2",
        "--metrics-port",
        str(port),
    )
    try:
        assert "nv_inference_request_success/m" in scrape(port)
        drop_version(repository, 2, random_spec(np.random.default_rng(5), (3, 4, 1), ACTS))
        X = random_input(np.random.default_rng(6), 3, 2, "float32")
        deadline, served = time.monotonic() + 20, 0
        while served < 10 and time.monotonic() < deadline:
            channel, s = stub(server.url)
            with channel:
                served += infer(s, X)[0] == "2"
        assert served == 10
        import urllib.request

        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        assert 'nv_inference_request_success{model="m",version="2"} 10' in body
        deadline = time.monotonic() + 10  # both workers rescan and drop version 1: it leaves the metrics
        while 'model="m",version="1"' in body and time.monotonic() < deadline:
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        assert 'model="m",version="1"' not in body
        for _ in range(8):  # every worker: version 2's own count, nothing of version 1's
            channel, s = stub(server.url)
            with channel:
                stats = s.ModelStatistics(pb.ModelStatisticsRequest(name="m"), timeout=10).model_stats
            assert [(v.version, v.inference_stats.success.count) for v in stats] == [("2", 10)]
    finally:
        assert server.stop() == 0


def not_found_both_ways(server, name) -> tuple[str, str]:
    """The status and message of a model's metadata over gRPC, and those of the same call over HTTP."""
    import json
    import urllib.error
    import urllib.request

    channel, s = stub(server.url)
    with channel, pytest.raises(grpc.RpcError) as info:
        s.ModelMetadata(pb.ModelMetadataRequest(name=name), timeout=10)
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(f"{server.http_url}/v2/models/{name}", timeout=10)
    message = json.loads(answer.value.read())["error"]
    assert message == info.value.details()  # one message, whichever door
    status = {404: "NOT_FOUND", 503: "UNAVAILABLE"}[answer.value.code]
    assert status == info.value.code().name
    return status, message


LOAD_HINT = "load it with POST /v2/repository/models/{}/load or the gRPC RepositoryModelLoad"


def test_explicit_mode_says_a_folder_is_not_loaded_and_how_to_load_it(repository):
    server = ServerProcess(repository, "--workers", "1", "--model-control-mode", "explicit")
    try:
        export_to_repository(
            random_spec(np.random.default_rng(2), (3, 4, 1), ACTS), ExportOptions(), repository, "late"
        )
        status, message = not_found_both_ways(server, "late")
        assert status == "NOT_FOUND" and message.startswith("unknown model 'late'; its folder is in the repository")
        assert LOAD_HINT.format("late") in message and message.endswith("; loaded: none")
        status, message = not_found_both_ways(server, "m")  # there at start-up, never loaded
        assert status == "UNAVAILABLE" and LOAD_HINT.format("m") in message
        (repository / "bad" / "1").mkdir(parents=True)
        (repository / "bad" / "1" / "model.onnx").write_bytes(b"not onnx")
        channel, s = stub(server.url)
        with channel, pytest.raises(grpc.RpcError):
            s.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="bad"), timeout=30)
        status, message = not_found_both_ways(server, "bad")  # added after start-up, its load failed
        assert status == "NOT_FOUND" and "; its last load failed: no version of " in message
        assert "model.onnx: not an ONNX model" in message
        assert not_found_both_ways(server, "nope") == ("NOT_FOUND", "unknown model 'nope'; loaded: none")
    finally:
        assert server.stop() == 0


def test_poll_mode_says_a_folder_is_not_rescanned_yet(repository):
    server = ServerProcess(
        repository, "--workers", "1", "--model-control-mode", "poll", "--repository-poll-secs", "600"
    )
    try:
        export_to_repository(
            random_spec(np.random.default_rng(2), (3, 4, 1), ACTS), ExportOptions(), repository, "late"
        )
        assert not_found_both_ways(server, "late") == (
            "NOT_FOUND",
            "unknown model 'late'; its folder is in the repository but the server has not rescanned it yet "
            "(--model-control-mode poll rescans every 600 s); loaded: m",
        )
    finally:
        assert server.stop() == 0


def test_a_failed_model_says_why_and_a_late_folder_says_models_load_at_start_up(repository):
    (repository / "broken" / "1").mkdir(parents=True)
    (repository / "broken" / "1" / "model.onnx").write_bytes(b"not onnx")
    server = ServerProcess(repository, "--workers", "1", "--skip-bad-models")
    try:
        status, message = not_found_both_ways(server, "broken")
        assert status == "UNAVAILABLE" and message.startswith("model 'broken' is not ready: it failed to load: ")
        assert "model.onnx" in message
        export_to_repository(
            random_spec(np.random.default_rng(2), (3, 4, 1), ACTS), ExportOptions(), repository, "late"
        )
        status, message = not_found_both_ways(server, "late")
        assert status == "NOT_FOUND" and "appeared after start-up" in message and message.endswith("; loaded: m")
    finally:
        assert server.stop() == 0


def test_not_found_lists_at_most_20_loaded_models_and_cuts_a_long_name(tmp_path):
    from forwardpass.errors import ForwardpassError, Kind
    from forwardpass.server.repository import Repository

    spec = random_spec(np.random.default_rng(1), (3, 4, 1), ACTS)
    for i in range(23):
        export_to_repository(spec, ExportOptions(), tmp_path, f"m{i:02d}")
    models = Repository(tmp_path, provider="cpu")
    models.load()
    with pytest.raises(ForwardpassError) as info:
        models.entry("x" * 5000)
    message = str(info.value)
    assert info.value.kind is Kind.NOT_FOUND and len(message) < 600, message
    assert message.startswith(f"unknown model {'x' * 200!r}... (5000 characters); loaded: m00, m01, ")
    assert message.endswith(", m19 and 3 more")
    with pytest.raises(ForwardpassError) as info:
        models.entry("/" + "x" * 5000)  # a path is refused as before, and cut as well
    assert info.value.kind is Kind.BAD_INPUT and len(str(info.value)) < 400


POLL = ("--model-control-mode", "poll", "--repository-poll-secs", "1")  # what `make run` serves with


def test_a_model_built_with_the_cli_into_a_polled_repository_is_served_within_2_s(repository):
    from forwardpass.builder.readback import read_file

    from harness import run_cli

    server = ServerProcess(repository, "--workers", "2", *POLL)
    try:
        built = run_cli("build", "--repository", repository, "--name", "fresh", "--sizes", "3,5,2",
                        "--activations", "relu,softmax", "--max-batch-size", "16")  # fmt: skip
        start = time.monotonic()
        assert built.returncode == 0, built.stderr
        X = random_input(np.random.default_rng(7), 3, 4, "float32")
        request = pb.ModelInferRequest(model_name="fresh")
        request.inputs.add(name="x", datatype="FP32", shape=[4, 3])
        request.raw_input_contents.append(np.ascontiguousarray(X.T).tobytes())
        answered = 0  # fresh connections in a row, so that both workers answer
        while answered < 8 and time.monotonic() < start + 10:
            channel, s = stub(server.url)
            with channel:
                try:
                    response = s.ModelInfer(request, timeout=10)
                    answered += 1
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.NOT_FOUND, exc.details()
                    answered = 0
                    time.sleep(0.05)
        waited = time.monotonic() - start
        assert answered == 8 and waited < 2.5, f"served {waited:.2f} s after the build"  # 1 s polls, and noise
        y = np.frombuffer(response.raw_output_contents[0], np.float32).reshape(4, 2).T
        assert compare(read_file(repository / "fresh" / "1" / "model.onnx").spec, X, y, "float32").ok
        channel, s = stub(server.url)
        with channel:
            assert s.ModelConfig(pb.ModelConfigRequest(name="fresh"), timeout=10).config.max_batch_size == 16
    finally:
        assert server.stop() == 0


def test_a_poll_never_sees_half_a_build(repository):
    """Builds land while the server rescans all the time: each new model serves with the config the
    build wrote (a version folder seen before its config.pbtxt would load with the default one)."""
    server = ServerProcess(
        repository, "--workers", "1", "--model-control-mode", "poll", "--repository-poll-secs", "0.005"
    )
    try:
        spec = random_spec(np.random.default_rng(1), (3, 4, 1), ACTS)
        names = [f"new{i}" for i in range(20)]
        for name in names:
            export_to_repository(spec, ExportOptions(), repository, name, max_batch_size=8)
            time.sleep(0.003)
        channel, s = stub(server.url)
        with channel:
            deadline = time.monotonic() + 20
            while not all(s.ModelReady(pb.ModelReadyRequest(name=n), timeout=10).ready for n in names):
                assert time.monotonic() < deadline, server.output()[-2000:]
                time.sleep(0.05)
            sizes = {n: s.ModelConfig(pb.ModelConfigRequest(name=n), timeout=10).config.max_batch_size for n in names}
        assert set(sizes.values()) == {8}, sizes
        assert "refusing" not in server.output() and not list(repository.glob(".*"))  # no staging folder left
    finally:
        assert server.stop() == 0
