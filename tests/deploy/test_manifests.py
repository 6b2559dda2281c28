"""Every manifest under deploy/ parses and validates strictly, and says what docs/deploy.md promises.

Core objects go through pydantic models of the Kubernetes API (cloudcoil's) with `model_validate(...,
extra="forbid", strict=True)`, which refuses an unknown field at any depth (the official client's
`from_dict` drops it silently) and a value of the wrong type (no "2" for 2). KServe's objects are
walked along the KServe SDK's own models (`attribute_map` for the JSON names, `openapi_types` for the
types), refusing unknown keys, since KServe's CRDs cannot be read here. A misspelt field in each kind
must fail. `import kserve` loads KServe's protobuf package `inference`, which our stubs also define:
this runs in a pytest process of its own (FORWARDPASS_DEPLOY_TESTS=1 pytest tests/deploy; `make test`
does).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import kserve.models
import kubernetes.client.models
import pytest
import yaml
from cloudcoil.models.kubernetes.apps.v1 import Deployment
from cloudcoil.models.kubernetes.autoscaling.v2 import HorizontalPodAutoscaler
from cloudcoil.models.kubernetes.core.v1 import PersistentVolumeClaim, Service
from cloudcoil.models.kubernetes.policy.v1 import PodDisruptionBudget

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
CORE = {
    ("apps/v1", "Deployment"): Deployment,
    ("v1", "Service"): Service,
    ("v1", "PersistentVolumeClaim"): PersistentVolumeClaim,
    ("autoscaling/v2", "HorizontalPodAutoscaler"): HorizontalPodAutoscaler,
    ("policy/v1", "PodDisruptionBudget"): PodDisruptionBudget,
}
KSERVE = {
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "V1alpha1ServingRuntime",
    ("serving.kserve.io/v1beta1", "InferenceService"): "V1beta1InferenceService",
}
SCALARS = {"str": str, "int": int, "float": (int, float), "bool": bool, "datetime": str, "date": str}


def load_manifests() -> dict[str, dict]:
    """Every YAML document under deploy/, by "file:Kind/name"."""
    documents = {}
    for path in sorted(DEPLOY.rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            key = f"{path.relative_to(DEPLOY)}:{document['kind']}/{document['metadata']['name']}"
            documents[key] = document
    return documents


MANIFESTS = load_manifests()


def validate(document: dict) -> None:
    """Raise when the document has a field its kind does not, or a value of the wrong type."""
    kind = (document.get("apiVersion"), document.get("kind"))
    if kind in CORE:
        CORE[kind].model_validate(document, extra="forbid", strict=True)
    elif kind in KSERVE:
        walk(document, KSERVE[kind], document["kind"])
    else:
        raise AssertionError(f"no validator for {kind}: add its model here")


def walk(value, type_name: str, path: str) -> None:
    """Check value against an OpenAPI-generated model type of the KServe SDK or the Kubernetes client."""
    inner = re.fullmatch(r"(?:list|List)\[(.+)\]", type_name)
    mapping = re.fullmatch(r"(?:dict\(str, (.+)\)|Dict\[str, (.+)\])", type_name)
    if inner:
        assert isinstance(value, list), f"{path}: a list, not {value!r}"
        for i, item in enumerate(value):
            walk(item, inner[1], f"{path}[{i}]")
    elif mapping:
        assert isinstance(value, dict), f"{path}: a mapping, not {value!r}"
        for key, item in value.items():
            walk(item, mapping[1] or mapping[2], f"{path}.{key}")
    elif type_name == "object":  # int-or-string, free-form status
        pass
    elif type_name in SCALARS:
        wrong_bool = isinstance(value, bool) and type_name != "bool"
        assert isinstance(value, SCALARS[type_name]) and not wrong_bool, f"{path}: a {type_name}, not {value!r}"
    else:
        model = getattr(kserve.models, type_name, None) or getattr(kubernetes.client.models, type_name)
        assert isinstance(value, dict), f"{path}: a {type_name} object, not {value!r}"
        fields = {json: attr for attr, json in model.attribute_map.items()}
        unknown = sorted(set(value) - set(fields))
        assert not unknown, f"{path}: {type_name} has no field {', '.join(unknown)}"
        for key, item in value.items():
            walk(item, model.openapi_types[fields[key]], f"{path}.{key}")


@pytest.mark.parametrize("name", MANIFESTS)
def test_every_manifest_validates_strictly(name):
    validate(MANIFESTS[name])


# One misspelling per kind: (manifest, path to the mapping, the key, its misspelling).
MISSPELT = [
    ("kserve/servingruntime.yaml:ServingRuntime/forwardpass", ("spec",), "protocolVersions", "protocolVersion"),
    ("kserve/servingruntime.yaml:ServingRuntime/forwardpass", ("spec", "containers", 0), "args", "arg"),
    ("kserve/inferenceservice-http.yaml:InferenceService/mlp-3-4-1", ("spec", "predictor", "model"), "storageUri",
     "storageURI"),
    ("kserve/inferenceservice-grpc.yaml:InferenceService/mlp-3-4-1-grpc", ("spec", "predictor", "model", "ports", 0),
     "containerPort", "containerport"),
    ("kubernetes/deployment.yaml:Deployment/forwardpass", ("spec", "template", "spec"),
     "terminationGracePeriodSeconds", "terminationGracePeriod"),
    ("kubernetes/deployment.yaml:Deployment/forwardpass", ("spec", "template", "spec", "containers", 0,
     "startupProbe", "grpc"), "service", "serviceName"),
    ("kubernetes/services.yaml:Service/forwardpass-grpc", ("spec",), "clusterIP", "clusterIp"),
    ("kubernetes/hpa.yaml:HorizontalPodAutoscaler/forwardpass", ("spec",), "minReplicas", "minReplica"),
    ("kubernetes/pdb.yaml:PodDisruptionBudget/forwardpass", ("spec",), "maxUnavailable", "maxUnavailible"),
    ("kubernetes/pvc.yaml:PersistentVolumeClaim/forwardpass-models", ("spec",), "accessModes", "accessMode"),
]  # fmt: skip


@pytest.mark.parametrize("name, path, key, misspelt", MISSPELT, ids=[m[3] for m in MISSPELT])
def test_a_misspelt_field_fails(name, path, key, misspelt):
    document = copy.deepcopy(MANIFESTS[name])
    parent = document
    for step in path:
        parent = parent[step]
    parent[misspelt] = parent.pop(key)
    with pytest.raises((AssertionError, ValueError), match=misspelt):
        validate(document)


def test_every_kind_has_a_misspelling_test():
    assert {(MANIFESTS[m[0]]["apiVersion"], MANIFESTS[m[0]]["kind"]) for m in MISSPELT} == set(CORE) | set(KSERVE)


@pytest.mark.parametrize(
    "name, key, value, message",
    [
        ("kserve/servingruntime.yaml:ServingRuntime/forwardpass", "protocolVersions", "v2", "protocolVersions: a list"),
        ("kubernetes/deployment.yaml:Deployment/forwardpass", "replicas", "2", "spec.replicas"),
    ],
)
def test_a_value_of_the_wrong_type_fails(name, key, value, message):
    document = copy.deepcopy(MANIFESTS[name])
    document["spec"][key] = value
    with pytest.raises((AssertionError, ValueError), match=message):
        validate(document)


def flag(args: list[str], name: str) -> str:
    """The value of the last `--name=value` in args (the last wins, as argparse reads them)."""
    return [arg.split("=", 1)[1] for arg in args if arg.startswith(f"--{name}=")][-1]


def test_the_runtime_is_shaped_like_kserves_triton_runtime():
    spec = MANIFESTS["kserve/servingruntime.yaml:ServingRuntime/forwardpass"]["spec"]
    (container,) = spec["containers"]
    args = container["args"]
    assert spec["protocolVersions"] == ["v2", "grpc-v2"]
    assert [f["name"] for f in spec["supportedModelFormats"]] == ["onnx"]
    assert (flag(args, "http-port"), flag(args, "grpc-port"), flag(args, "metrics-port")) == ("8080", "9000", "8002")
    assert container["ports"] == [{"name": "http1", "containerPort": 8080, "protocol": "TCP"}]
    assert spec["annotations"] == {"prometheus.kserve.io/port": flag(args, "metrics-port"),
                                   "prometheus.kserve.io/path": "/metrics"}  # fmt: skip
    assert not any("{{" in arg for arg in args), "the whole repository is served, under its folders' names"
    for probe, path in (("readinessProbe", "/v2/health/ready"), ("livenessProbe", "/v2/health/live")):
        assert container[probe]["httpGet"] == {"path": path, "port": 8080}
    assert_locked_down(container["securityContext"])


def assert_locked_down(security: dict) -> None:
    assert security["allowPrivilegeEscalation"] is False and security["capabilities"] == {"drop": ["ALL"]}


def test_inference_services_use_the_runtime_under_dns_names():
    runtime = MANIFESTS["kserve/servingruntime.yaml:ServingRuntime/forwardpass"]["spec"]
    services = {k: v for k, v in MANIFESTS.items() if v["kind"] == "InferenceService"}
    assert len(services) == 2
    for document in services.values():
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", document["metadata"]["name"])
        model = document["spec"]["predictor"]["model"]
        assert model["runtime"] == "forwardpass" and model["modelFormat"]["name"] == "onnx"
        assert model["protocolVersion"] in runtime["protocolVersions"] and model["storageUri"]
    grpc = MANIFESTS["kserve/inferenceservice-grpc.yaml:InferenceService/mlp-3-4-1-grpc"]["spec"]["predictor"]["model"]
    grpc_port = int(flag(runtime["containers"][0]["args"], "grpc-port"))
    assert grpc["ports"] == [{"name": "h2c", "containerPort": grpc_port, "protocol": "TCP"}]
    assert grpc["readinessProbe"]["grpc"] == {"port": grpc_port, "service": ""}


def test_the_deployment_drains_within_its_termination_grace():
    pod = MANIFESTS["kubernetes/deployment.yaml:Deployment/forwardpass"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    grace = float(flag(container["args"], "grace"))
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pre_stop + grace + 5 <= pod["terminationGracePeriodSeconds"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 1000
    assert_locked_down(container["securityContext"])


def test_the_deployment_probes_v2_health_and_grpc_health():
    (container,) = MANIFESTS["kubernetes/deployment.yaml:Deployment/forwardpass"]["spec"]["template"]["spec"][
        "containers"
    ]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}  # the image's defaults and ENTRYPOINT
    assert container["startupProbe"]["grpc"] == {"port": ports["grpc"], "service": ""}
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}


def test_services_autoscaler_and_budget_point_at_the_deployment():
    deployment = MANIFESTS["kubernetes/deployment.yaml:Deployment/forwardpass"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels
    headless = MANIFESTS["kubernetes/services.yaml:Service/forwardpass-grpc"]["spec"]
    http = MANIFESTS["kubernetes/services.yaml:Service/forwardpass"]["spec"]
    assert headless["clusterIP"] == "None" and headless["selector"] == labels == http["selector"]
    assert [p["targetPort"] for p in headless["ports"]] == ["grpc"] and [p["targetPort"] for p in http["ports"]] == [
        "http"
    ]
    hpa = MANIFESTS["kubernetes/hpa.yaml:HorizontalPodAutoscaler/forwardpass"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "forwardpass"}
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"
    pdb = MANIFESTS["kubernetes/pdb.yaml:PodDisruptionBudget/forwardpass"]["spec"]
    assert pdb["selector"]["matchLabels"] == labels
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "models")
    assert volume["persistentVolumeClaim"]["claimName"] == "forwardpass-models"


SERVERS = ["kserve/servingruntime.yaml:ServingRuntime/forwardpass", "kubernetes/deployment.yaml:Deployment/forwardpass"]


@pytest.mark.parametrize("name", SERVERS)
def test_grpc_connections_age_so_clients_rebalance(name):
    """Each server sends GOAWAY after an age, so clients reconnect and re-resolve (docs/deploy.md), and an
    aged connection's calls get as long to finish as a drain gives them (--grace)."""
    spec = MANIFESTS[name]["spec"]
    (container,) = spec["template"]["spec"]["containers"] if "template" in spec else spec["containers"]
    args = container["args"]
    assert int(flag(args, "grpc-max-connection-age")) > 0
    assert int(flag(args, "grpc-max-connection-age-grace")) == float(flag(args, "grace")) * 1000
