"""The generated stubs are what protos/generate.py makes from the .proto files today."""

import subprocess
import sys

from forwardpass.protos import grpc_service_pb2, model_config_pb2

from harness import ROOT


def test_generated_stubs_are_not_stale():
    result = subprocess.run([sys.executable, "protos/generate.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr + result.stdout


def test_stubs_import_from_the_installed_package_path():
    source = (ROOT / "protos" / "grpc_service_pb2.py").read_text()
    assert "from forwardpass.protos import model_config_pb2" in source
    assert grpc_service_pb2.DESCRIPTOR.package == model_config_pb2.DESCRIPTOR.package == "inference"


def test_field_numbers_match_tritons():
    # A few of the numbers tritonclient depends on (Triton's grpc_service.proto and model_config.proto).
    fields = grpc_service_pb2.ModelInferRequest.DESCRIPTOR.fields_by_name
    assert {name: f.number for name, f in fields.items()} == {
        "model_name": 1, "model_version": 2, "id": 3, "parameters": 4, "inputs": 5, "outputs": 6,
        "raw_input_contents": 7,
    }  # fmt: skip
    assert grpc_service_pb2.ModelInferResponse.DESCRIPTOR.fields_by_name["raw_output_contents"].number == 6
    config = model_config_pb2.ModelConfig.DESCRIPTOR.fields_by_name
    assert (config["max_batch_size"].number, config["dynamic_batching"].number, config["backend"].number) == (4, 11, 17)
