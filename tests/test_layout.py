"""The repository layout's one set of rules: model names are folder entries, versions have one spelling."""

import logging
import shutil

import grpc
import pytest

from forwardpass.errors import ForwardpassError
from forwardpass.layout import check_model_name, model_folder, parse_version, version_folders
from forwardpass.protos import grpc_service_pb2 as pb
from forwardpass.protos import grpc_service_pb2_grpc as pb_grpc

from harness import ROOT, ServerProcess

ODD_VERSION_FOLDERS = ["²", "01", "１", "0", "v2", "1.5"]


@pytest.mark.parametrize("text, number", [("1", 1), ("2", 2), ("10", 10), ("123456789012345678", 123456789012345678)])
def test_a_version_is_ascii_digits_without_a_leading_zero(text, number):
    assert parse_version(text) == number


@pytest.mark.parametrize("text", ODD_VERSION_FOLDERS + ["", "-1", "٣", "1234567890123456789"])
def test_other_spellings_are_not_versions(text):
    with pytest.raises(ForwardpassError, match="is not a version"):
        parse_version(text)


@pytest.mark.parametrize("name", ["mlp_3_4_1", "a.b", "名前", "x-y", "with space"])
def test_a_folder_entry_is_a_model_name(name):
    assert check_model_name(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", ".git", "a/b", "/etc", "a\\b", "../x", "x\0"])
def test_a_path_is_not_a_model_name(name):
    with pytest.raises(ForwardpassError):
        check_model_name(name)


def test_a_model_folder_is_found_only_inside_the_repository(tmp_path):
    (tmp_path / "models" / "m").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "models" / "a-file").write_text("")
    assert model_folder(tmp_path / "models", "m") == tmp_path / "models" / "m"
    assert model_folder(tmp_path / "models", "a-file") is None and model_folder(tmp_path / "models", "outside") is None


def test_odd_version_folders_are_skipped_with_a_warning(tmp_path, caplog):
    for name in ["1", "3", *ODD_VERSION_FOLDERS]:
        (tmp_path / name).mkdir()
    with caplog.at_level(logging.WARNING):
        assert list(version_folders(tmp_path)) == [1, 3]
    assert {r.getMessage().split("'")[1] for r in caplog.records} == set(ODD_VERSION_FOLDERS)


def test_a_server_serves_a_repository_with_odd_version_folders(tmp_path):
    repository = tmp_path / "models"
    shutil.copytree(ROOT / "models" / "mlp_3_4_1", repository / "mlp_3_4_1")
    for odd in ODD_VERSION_FOLDERS:
        shutil.copytree(repository / "mlp_3_4_1" / "1", repository / "mlp_3_4_1" / odd)
    server = ServerProcess(repository, "--workers", "1", "--skip-bad-models")
    try:
        with grpc.insecure_channel(server.url) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            meta = stub.ModelMetadata(pb.ModelMetadataRequest(name="mlp_3_4_1"), timeout=10)
            assert list(meta.versions) == ["1"]
            assert stub.ModelReady(pb.ModelReadyRequest(name="mlp_3_4_1", version="1"), timeout=10).ready
            for odd in ("01", "１", "²"):
                with pytest.raises(grpc.RpcError) as info:
                    stub.ModelReady(pb.ModelReadyRequest(name="mlp_3_4_1", version=odd), timeout=10)
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        assert server.stop() == 0
    assert "skipping folder '²'" in server.output()
