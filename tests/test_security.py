"""TLS, mutual TLS and bearer tokens, against a real server with certificates made for the test."""

import json
import shutil
import subprocess
import sys

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from forwardpass.client import Client
from forwardpass.credentials import BearerToken
from forwardpass.errors import ForwardpassError
from forwardpass.protos import grpc_service_pb2 as pb
from forwardpass.protos import grpc_service_pb2_grpc as pb_grpc

from harness import ROOT, TOKEN, ServerProcess, assert_one_error_line, serve_command


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    target = tmp_path_factory.mktemp("secure") / "models"
    shutil.copytree(ROOT / "models", target)
    return target


@pytest.fixture(scope="module")
def secured(pki, repository):
    """TLS with client certificates, and a token."""
    server = ServerProcess(repository, "--workers", "1", "--tls-cert", str(pki / "server.pem"), "--tls-key",
                           str(pki / "server.key"), "--tls-client-ca", str(pki / "ca.pem"), "--auth-token-file",
                           str(pki / "token"))  # fmt: skip
    yield server
    assert server.stop() == 0
    assert TOKEN not in server.output()


def client(server, pki, token=TOKEN, cert=True):
    files = {"tls_cert": pki / "client.pem", "tls_key": pki / "client.key"} if cert else {}
    return Client(server.url, timeout=10, tls_ca=pki / "ca.pem", token=token, **files)


def test_tls_with_token_answers(secured, pki):
    with client(secured, pki) as c:
        assert c.ready()
        assert c.infer("mlp_3_4_1", np.ones((2, 3), np.float32)).shape == (2, 1)


@pytest.mark.parametrize("token", [None, "wrong", TOKEN + "x"])
def test_a_missing_or_wrong_token_is_unauthenticated(secured, pki, token):
    with client(secured, pki, token=token) as c, pytest.raises(ForwardpassError, match="UNAUTHENTICATED"):
        c.infer("mlp_3_4_1", np.ones((1, 3), np.float32))


def test_overall_health_needs_no_token_and_reflection_does(secured, pki):
    with grpc.secure_channel(secured.url, channel_credentials(pki)) as channel:
        for service in ("", "inference.GRPCInferenceService"):
            status = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=10
            )
            assert status.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as info:
            ProtoReflectionDescriptorDatabase(channel).get_services()
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("model", ["mlp_3_4_1", "no_such_model"])
def test_per_model_health_needs_the_token(secured, pki, model):
    """Per-model health would tell which model names exist: only with the token."""
    health = health_pb2.HealthCheckRequest(service=model)
    with grpc.secure_channel(secured.url, channel_credentials(pki)) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Check(health, timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as info:
            next(stub.Watch(health, timeout=10))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        if model == "mlp_3_4_1":
            answer = stub.Check(health, metadata=(("authorization", f"Bearer {TOKEN}"),), timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING


def channel_credentials(pki) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        (pki / "ca.pem").read_bytes(), (pki / "client.key").read_bytes(), (pki / "client.pem").read_bytes()
    )


def https_get(server, pki, path, token=None, cert=True) -> tuple[int, dict]:
    import http.client
    import ssl
    from urllib.parse import urlsplit

    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if cert:
        context.load_cert_chain(pki / "client.pem", pki / "client.key")
    connection = http.client.HTTPSConnection(urlsplit(server.http_url).netloc, timeout=10, context=context)
    try:
        connection.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
        response = connection.getresponse()
        response.read()
        return response.status, dict(response.getheaders())
    finally:
        connection.close()


def test_https_with_mutual_tls_and_the_token(secured, pki):
    assert secured.http_url.startswith("https://")
    assert https_get(secured, pki, "/v2/health/ready")[0] == 200  # probes need no token
    assert https_get(secured, pki, "/v2/models/mlp_3_4_1", token=TOKEN)[0] == 200
    for token in (None, "wrong"):
        status, headers = https_get(secured, pki, "/v2/models/mlp_3_4_1", token=token)
        assert status == 401 and headers["www-authenticate"] == "Bearer"
    with pytest.raises(OSError):  # no client certificate: the TLS handshake fails
        https_get(secured, pki, "/v2/health/ready", cert=False)


def test_mutual_tls_refuses_a_client_without_a_certificate(secured, pki):
    with client(secured, pki, cert=False) as c, pytest.raises(ForwardpassError, match="UNAVAILABLE"):
        c.ready()


def test_plaintext_is_refused_by_a_tls_server(secured):
    with Client(secured.url, timeout=5, token=TOKEN) as c, pytest.raises(ForwardpassError):
        c.ready()


def test_token_only_over_plaintext(repository, pki):
    server = ServerProcess(repository, "--workers", "1", "--auth-token-file", str(pki / "token"))
    try:
        with grpc.insecure_channel(server.url) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.ServerReady(pb.ServerReadyRequest(), timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert stub.ServerReady(pb.ServerReadyRequest(), metadata=(("authorization", f"Bearer {TOKEN}"),)).ready
            assert stub.ServerReady(pb.ServerReadyRequest(), metadata=(("authorization", f"bearer {TOKEN}"),)).ready
            # Of two authorization entries the last counts, as in a dict of the metadata.
            wrong, right = ("authorization", f"Bearer {TOKEN}x"), ("authorization", f"Bearer {TOKEN}")
            assert stub.ServerReady(pb.ServerReadyRequest(), metadata=(wrong, right)).ready
            with pytest.raises(grpc.RpcError) as info:
                stub.ServerReady(pb.ServerReadyRequest(), metadata=(right, wrong), timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize(
    ("authorization", "carried"),
    [
        ("Bearer t\u00f6ken", True),  # the usual spelling: one comparison of its bytes
        ("bearer t\u00f6ken", True),  # the scheme in any case (RFC 7235)
        ("  BEARER   t\u00f6ken  ", True),
        ("Bearer t\u00f6ke", False),
        ("Bearer t\u00f6kenx", False),
        ("Basic t\u00f6ken", False),
        ("t\u00f6ken", False),
        ("Bearer", False),
        ("", False),
    ],
)
def test_a_bearer_token_is_carried_in_any_spelling_of_its_scheme_only(authorization, carried):
    token = BearerToken("t\u00f6ken")  # not ASCII: compared as bytes, as its header carries it
    assert token.carried_by(authorization) is carried
    # HTTP hands the header decoded as latin-1, as its bytes came: the UTF-8 bytes of the token then match.
    assert token.carried_by(authorization.encode().decode("latin-1"), "latin-1") is carried


def test_infer_command_takes_the_tls_and_token_flags(secured, pki, tmp_path):
    np.savetxt(tmp_path / "x.csv", np.ones((2, 3)), delimiter=",")
    command = [sys.executable, "-m", "forwardpass", "infer", "--url", secured.url, "--model", "mlp_3_4_1", "--input",
               str(tmp_path / "x.csv"), "--tls-ca", str(pki / "ca.pem"), "--tls-cert", str(pki / "client.pem"),
               "--tls-key", str(pki / "client.key")]  # fmt: skip
    good = subprocess.run([*command, "--auth-token-file", str(pki / "token")], cwd=ROOT, capture_output=True, text=True)
    assert good.returncode == 0 and len(good.stdout.splitlines()) == 2, good.stderr
    bad = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "UNAUTHENTICATED" in bad.stderr and TOKEN not in bad.stderr


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.2.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.1.2.3", False),
        ("example.org", False),
    ],
)
def test_what_counts_as_loopback_for_the_exposure_warning(host, loopback):
    # Tests bind loopback only, so the warning's condition is checked here rather than by listening.
    from forwardpass.server.workers import is_loopback

    assert is_loopback(host) is loopback


def test_metrics_beyond_loopback_are_warned_about_and_the_api_with_a_token_is_not(pki):
    from forwardpass.server.options import ServeOptions
    from forwardpass.server.workers import exposure_warnings

    assert exposure_warnings(ServeOptions()) == []
    assert exposure_warnings(ServeOptions(metrics_host="0.0.0.0")) == []  # no metrics port: nothing listens there
    (warning,) = exposure_warnings(ServeOptions(metrics_port=8002, metrics_host="0.0.0.0"))
    assert warning.startswith("metrics on 0.0.0.0")
    (warning,) = exposure_warnings(ServeOptions(host="::"))
    assert warning.startswith("listening on :: without TLS or a token")
    assert exposure_warnings(ServeOptions(host="::", auth_token_file=pki / "token")) == []


def test_tls_flags_must_come_together(repository, pki):
    command = serve_command("--model-repository", str(repository), "--port", "0", "--http-port", "0")
    result = subprocess.run([*command, "--tls-cert", str(pki / "server.pem")], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and "--tls-cert and --tls-key go together" in result.stderr
    result = subprocess.run([*command, "--auth-token-file", str(pki / "missing")], cwd=ROOT, capture_output=True,
                            text=True)  # fmt: skip
    assert result.returncode == 2 and "cannot read the token file" in result.stderr


def test_a_token_file_of_two_lines_is_refused_at_start(repository, tmp_path):
    # No header can carry a line break: a server with this token could not be called.
    (tmp_path / "token").write_text(f"{TOKEN}\nsecond-line\n")
    command = serve_command("--model-repository", str(repository), "--port", "0", "--http-port", "0")
    result = subprocess.run([*command, "--auth-token-file", str(tmp_path / "token")], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert_one_error_line(result, "more than one line")
    assert str(tmp_path / "token") in result.stderr and TOKEN not in result.stderr


# A local server is local: what a browser's Origin and Host may do (DNS rebinding, cross-site POSTs)


def http_call(server, method: str, path: str, headers: dict, body: bytes | None = None) -> tuple[int, bytes]:
    """(status, body) of one plain HTTP request, with exactly the Host and Origin headers given."""
    import http.client
    from urllib.parse import urlsplit

    connection = http.client.HTTPConnection(urlsplit(server.http_url).netloc, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def refusal(answer: tuple[int, bytes]) -> tuple[int, str]:
    return answer[0], json.loads(answer[1]).get("error", "") if answer[0] >= 400 else ""


ALLOWED_ORIGIN = "http://allowed.example:8080"
WEIGHTS = (  # the page's routes
    ("GET", "network"),
    ("GET", "network/model.onnx"),
    ("GET", "network/editable.onnx"),
    ("POST", "network/oracle"),
    ("POST", "network/weights.npz"),
)


@pytest.fixture(scope="module")
def explicit(repository):
    server = ServerProcess(repository, "--workers", "1", "--model-control-mode", "explicit", "--load-model", "*",
                           "--allowed-origins", ALLOWED_ORIGIN.upper())  # fmt: skip
    yield server
    assert server.stop() == 0, server.output()


def test_a_foreign_origin_may_not_unload_a_model_nor_read_its_weights(explicit):
    model = "/v2/models/mlp_3_4_1"
    zeros = {"W": [[[0] * 3] * 4, [[0] * 4]], "b": [[0] * 4, [0]]}  # mlp_3_4_1's shapes, for the oracle and the .npz
    oracle = json.dumps({"x": [1, 2, 3], **zeros}).encode()
    infer = b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}'
    # A web page's text/plain POST needs no preflight: the browser sends it, with the page's Origin.
    for origin in ("http://evil.example", "null", explicit.http_url.replace("127.0.0.1", "localhost")):
        headers = {"Origin": origin, "Content-Type": "text/plain"}
        for action in ("unload", "load"):
            status, message = refusal(http_call(explicit, "POST", f"/v2/repository/models/mlp_3_4_1/{action}", headers))
            assert status == 403 and "--allowed-origins" in message and origin in message, (origin, status, message)
        for method, route in WEIGHTS:
            answer = http_call(explicit, method, f"{model}/{route}", headers, oracle if method == "POST" else None)
            assert refusal(answer)[0] == 403, (origin, route)
        # What holds no weights answers any origin (a later CORS option decides what a browser may read).
        assert http_call(explicit, "POST", f"{model}/infer", headers, infer)[0] == 200
    assert http_call(explicit, "GET", f"{model}/ready", {})[0] == 200  # still served
    # No Origin (tritonclient, the KServe SDK, curl), the server's own, or an allowed one: let through.
    for headers in ({}, {"Origin": explicit.http_url}, {"Origin": ALLOWED_ORIGIN}):
        for method, route in WEIGHTS:
            answer = http_call(explicit, method, f"{model}/{route}", headers, oracle if method == "POST" else None)
            assert answer[0] == 200, (headers, route, answer)
    for headers in ({"Origin": ALLOWED_ORIGIN}, {"Origin": explicit.http_url}, {}):
        assert http_call(explicit, "POST", "/v2/repository/models/mlp_3_4_1_sigmoid/unload", headers)[0] == 200
        assert http_call(explicit, "POST", "/v2/repository/models/mlp_3_4_1_sigmoid/load", headers)[0] == 200


def test_a_loopback_server_answers_only_loopback_host_names(repository):
    server = ServerProcess(repository, "--workers", "1", "--allowed-hosts", "Served.Example")
    port = server.http_url.rsplit(":", 1)[1]
    try:
        for host in ("evil.example", f"evil.example:{port}", "localhost.evil.example", "127.0.0.1.nip.io", "10.0.0.1"):
            status, message = refusal(http_call(server, "GET", "/v2/health/ready", {"Host": host}))
            assert status == 421 and "--allowed-hosts" in message and host in message, (host, status, message)
        for host in (f"127.0.0.1:{port}", "127.9.9.9", f"localhost:{port}", "LOCALHOST", f"page.localhost:{port}",
                     f"[::1]:{port}", f"served.example:{port}"):  # fmt: skip
            assert http_call(server, "GET", "/v2/health/ready", {"Host": host})[0] == 200, host
        # gRPC's :authority is never checked.
        options = [("grpc.default_authority", "evil.example")]
        with grpc.insecure_channel(server.url, options=options) as channel:
            assert pb_grpc.GRPCInferenceServiceStub(channel).ServerReady(pb.ServerReadyRequest(), timeout=10).ready
    finally:
        assert server.stop() == 0, server.output()


@pytest.mark.parametrize(
    ("bound", "checked"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True), ("0.0.0.0", False), ("::", False),
     ("10.1.2.3", False)],
)  # fmt: skip
def test_the_host_check_guards_a_loopback_address_only(bound, checked):
    # Tests bind loopback only: a server on 0.0.0.0 (the image, Kubernetes, probes) is checked here.
    from forwardpass.server.rest import BodyLimits, RestApp

    assert (RestApp(None, 1, 1, BodyLimits(60, 0, 1), bound=bound).hosts is not None) is checked


@pytest.mark.parametrize(
    ("flag", "value"),
    [("allowed_origins", ("evil.example",)), ("allowed_origins", ("http://a.example/path",)),
     ("allowed_hosts", ("a.example:8000",))],
)  # fmt: skip
def test_allowed_origins_and_hosts_are_checked_at_start(flag, value):
    from forwardpass.errors import InputError
    from forwardpass.server.options import ServeOptions

    with pytest.raises(InputError, match="--" + flag.replace("_", "-")):
        ServeOptions(**{flag: value})
