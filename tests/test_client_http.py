"""The client over HTTP/REST, against a real server: the oracle's answers in binary and in JSON, a batch
split over several requests, the server's errors and statuses, TLS and tokens, one kept connection,
and `forwardpass infer --url http://...`."""

import contextlib
import re
import socket
import time

import numpy as np
import pytest

from forwardpass.builder.readback import read_file
from forwardpass.client import Client
from forwardpass.errors import ForwardpassError, Kind

from harness import TOKEN, ServerProcess, assert_one_error_line, in_threads, run_cli
from numerics import assert_matches_oracle, feed, random_input, unfeed

SERVER_LIMIT = 16 * 2**20  # the session server's --max-message-mb 16
ENCODINGS = pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])


@pytest.fixture(scope="module", params=[True, False], ids=["binary", "json"])
def client(server, request):
    with Client(server.http_url, timeout=30, binary=request.param) as client:
        yield client


def model_of(repository, name, version=1):
    return read_file(repository / name / str(version) / "model.onnx")


@contextlib.contextmanager
def raises(kind: Kind, message: str):
    """pytest.raises for a ForwardpassError of this kind whose message contains this text."""
    with pytest.raises(ForwardpassError, match=re.escape(message)) as info:
        yield info
    assert info.value.kind == kind, info.value


# Health and metadata


def test_server_and_models_report_health(client):
    assert client.live() and client.ready()
    assert client.model_ready("mlp_3_4_1") and client.model_ready("versions", "1")
    assert not client.model_ready("latest", "1")  # not loaded: latest only
    assert not client.model_ready("broken")
    assert not client.model_ready("nope")


def test_metadata_is_what_the_grpc_client_gets(client, server):
    with Client(server.url, timeout=30) as over_grpc:
        for model in ("mlp_3_4_1", "double", "columns", "hidden", "small", "versions"):
            assert client.metadata(model) == over_grpc.metadata(model)
        assert client.metadata("versions", "1") == over_grpc.metadata("versions", "1")


# Answers


@pytest.mark.parametrize("batch", [1, 7, 1000])
@pytest.mark.parametrize("model", ["mlp_3_4_1", "double", "columns"])
def test_answers_match_the_oracle(client, repository, model, batch):
    read = model_of(repository, model)
    X = random_input(np.random.default_rng(batch), 3, batch, read.dtype)
    y = client.infer(model, feed(X, read.layout))
    assert y.dtype == X.dtype
    assert_matches_oracle(read.spec, X, unfeed(y, read.layout), read.dtype)


def test_hidden_outputs_can_be_named(client, repository):
    spec = model_of(repository, "hidden").spec
    X = random_input(np.random.default_rng(3), 3, 6, "float32")
    answer = client.infer("hidden", X.T, outputs=["A2", "Z1", "y"])
    assert list(answer) == ["A2", "Z1", "y"]
    assert_matches_oracle(spec, X, answer["A2"].T, "float32", layer="A2")
    assert_matches_oracle(spec, X, answer["Z1"].T, "float32", layer="Z1")
    assert_matches_oracle(spec, X, answer["y"].T, "float32")
    assert_matches_oracle(spec, X, client.infer("hidden", X.T).T, "float32")  # all outputs come, y first


def test_model_version_picks_among_the_loaded(client, repository):
    X = random_input(np.random.default_rng(4), 3, 3, "float32")
    for version in (1, 2):
        y = client.infer("versions", X.T, str(version))
        assert_matches_oracle(model_of(repository, "versions", version).spec, X, y.T, "float32")


@ENCODINGS
def test_a_batch_above_the_servers_limit_goes_in_several_requests(server, repository, binary):
    rows = 1_500_000 if binary else 300_000  # 18 MB of float32, or about 18 MB of JSON
    X = random_input(np.random.default_rng(6), 3, rows, "float32")
    with Client(server.http_url, timeout=60, binary=binary) as whole, raises(Kind.TOO_LARGE, "HTTP 413"):
        whole.infer("mlp_3_4_1", X.T)
    with Client(server.http_url, timeout=60, binary=binary, max_message_bytes=SERVER_LIMIT) as pieces:
        y = pieces.infer("mlp_3_4_1", X.T)
    assert y.shape == (rows, 1)
    assert_matches_oracle(model_of(repository, "mlp_3_4_1").spec, X, y.T, "float32")


def test_callers_in_threads_share_one_client(client, repository):
    spec = model_of(repository, "mlp_3_4_1").spec

    def caller(seed):
        rng = np.random.default_rng(seed)
        for _ in range(5):
            X = random_input(rng, 3, int(rng.integers(1, 50)), "float32")
            assert_matches_oracle(spec, X, client.infer("mlp_3_4_1", X.T).T, "float32")

    errors = in_threads(caller, [(seed,) for seed in range(16)])
    assert not errors, errors[:3]


def test_a_connection_the_server_closed_while_idle_is_replaced(server):
    with Client(server.http_url, timeout=30) as client:
        assert client.ready()
        time.sleep(6)  # past the server's keep-alive timeout (5 s): it closes the connection
        assert client.infer("mlp_3_4_1", np.ones((2, 3), np.float32)).shape == (2, 1)


# Errors


@pytest.mark.parametrize(
    ("model", "x", "kind", "message"),
    [
        ("nope", np.zeros((1, 3)), Kind.NOT_FOUND, "HTTP 404 Not Found: unknown model 'nope'"),
        ("broken", np.zeros((1, 3)), Kind.UNAVAILABLE, "HTTP 503 Service Unavailable: model 'broken' is not ready"),
        ("small", np.zeros((9, 3)), Kind.BAD_INPUT, "HTTP 400 Bad Request: batch of 9 rows is above the max_batch"),
        ("mlp_3_4_1", np.zeros((2, 4)), Kind.BAD_INPUT, "unexpected shape for input 'x'"),
    ],
)
def test_errors_carry_the_servers_status_and_message(client, model, x, kind, message):
    with raises(kind, message):
        client.infer(model, x)
    assert client.infer("mlp_3_4_1", np.ones((1, 3))).shape == (1, 1)  # the connection still serves


def test_an_unreachable_server_is_named():
    with Client("http://127.0.0.1:1", timeout=5) as dead, raises(Kind.UNAVAILABLE, "cannot reach http://127.0.0.1:1"):
        dead.ready()


def test_a_server_that_does_not_answer_in_time_is_a_deadline():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # takes the connection, never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with Client(url, timeout=0.5) as client, raises(Kind.DEADLINE, "timed out after 0.5 s"):
            client.live()


def test_urls_and_encodings_that_do_not_fit_are_refused(server, pki):
    with pytest.raises(ForwardpassError, match="JSON is an HTTP encoding"):
        Client(server.url, binary=False)
    with pytest.raises(ForwardpassError, match="plain HTTP: TLS needs an https:// URL"):
        Client(server.http_url, tls_ca=pki / "ca.pem")
    with pytest.raises(ForwardpassError, match="expected http://HOST"):
        Client("http://:8000")


# TLS and tokens


@pytest.fixture(scope="module")
def secured(pki, repository):
    """HTTPS with client certificates, and a token."""
    server = ServerProcess(repository, "--skip-bad-models", "--workers", "1", "--tls-cert", str(pki / "server.pem"),
                           "--tls-key", str(pki / "server.key"), "--tls-client-ca", str(pki / "ca.pem"),
                           "--auth-token-file", str(pki / "token"))  # fmt: skip
    assert server.http_url.startswith("https://"), server.output()
    yield server
    assert server.stop() == 0
    assert TOKEN not in server.output()


def secure_client(secured, pki, token=TOKEN, cert=True) -> Client:
    files = dict(tls_cert=pki / "client.pem", tls_key=pki / "client.key") if cert else {}
    return Client(secured.http_url, timeout=10, tls_ca=pki / "ca.pem", token=token, **files)


def test_https_with_a_client_certificate_and_a_token(secured, pki):
    with secure_client(secured, pki) as client:
        assert client.infer("mlp_3_4_1", np.ones((2, 3), np.float32)).shape == (2, 1)


def test_a_missing_token_is_unauthenticated_but_probes_pass(secured, pki):
    with secure_client(secured, pki, token=None) as client:
        assert client.live() and client.ready()
        with raises(Kind.BAD_INPUT, "HTTP 401 Unauthenticated") as info:
            client.infer("mlp_3_4_1", np.ones((1, 3), np.float32))
    assert "Authorization: Bearer <token>" in str(info.value)
    with secure_client(secured, pki, token="wrong") as client, raises(Kind.BAD_INPUT, "HTTP 401"):
        client.metadata("mlp_3_4_1")


def test_tls_refusals_are_unavailable(secured, pki):
    with secure_client(secured, pki, cert=False) as client, raises(Kind.UNAVAILABLE, "cannot reach"):
        client.ready()
    with Client(secured.http_url, timeout=10) as client, raises(Kind.UNAVAILABLE, "CERTIFICATE_VERIFY_FAILED"):
        client.ready()  # the system roots do not know the test CA
    plain = secured.http_url.replace("https://", "http://")
    with Client(plain, timeout=10, token=TOKEN) as client, raises(Kind.UNAVAILABLE, "cannot reach"):
        client.ready()


# The command


@ENCODINGS
def test_infer_command_over_http_prints_the_oracles_numbers(server, repository, tmp_path, binary):
    X = random_input(np.random.default_rng(0), 3, 5, "float32")
    np.savetxt(tmp_path / "x.csv", X.T, delimiter=",")
    flags = [] if binary else ["--json"]
    result = run_cli("infer", "--url", server.http_url, "--model", "mlp_3_4_1", "--input", tmp_path / "x.csv", *flags)
    assert result.returncode == 0, result.stderr
    y = np.loadtxt(result.stdout.splitlines(), delimiter=",", ndmin=2)
    assert_matches_oracle(model_of(repository, "mlp_3_4_1").spec, X, y.T, "float32")


def test_infer_command_over_http_names_the_servers_error(server, tmp_path):
    np.savetxt(tmp_path / "x.csv", np.ones((2, 3)), delimiter=",")
    result = run_cli("infer", "--url", server.http_url, "--model", "nope", "--input", tmp_path / "x.csv")
    assert_one_error_line(result, "HTTP 404 Not Found: unknown model 'nope'")


def test_infer_command_refuses_json_over_grpc(server, tmp_path):
    np.savetxt(tmp_path / "x.csv", np.ones((2, 3)), delimiter=",")
    result = run_cli("infer", "--url", server.url, "--model", "mlp_3_4_1", "--input", tmp_path / "x.csv", "--json")
    assert_one_error_line(result, "JSON is an HTTP encoding: give an http:// or https:// URL")
