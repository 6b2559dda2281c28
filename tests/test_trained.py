"""Trained weights in: scikit-learn MLPs and PyTorch nn.Sequential models answer as they did before."""

import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

from forwardpass.builder.oracle import forward
from forwardpass.builder.readback import read_file
from forwardpass.builder.trained import import_trained
from forwardpass.errors import SpecError
from forwardpass.runtime import Runtime

from harness import ROOT, ServerProcess
from numerics import assert_matches_oracle, model_bytes

sklearn = pytest.importorskip("sklearn.neural_network", reason="scikit-learn is not installed (the interop extra)")


def fitted(kind, classes=2, activation="relu", hidden=(5,), seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((200, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a few iterations do not converge; the weights are what we test
        if kind == "regressor":
            model = sklearn.MLPRegressor(
                hidden_layer_sizes=hidden, activation=activation, max_iter=30, random_state=seed
            )
            return model.fit(X, X @ rng.standard_normal(4)), X
        model = sklearn.MLPClassifier(hidden_layer_sizes=hidden, activation=activation, max_iter=30, random_state=seed)
        return model.fit(X, rng.integers(0, classes, 200)), X


def save(model, path):
    if path.suffix == ".joblib":
        import joblib

        joblib.dump(model, path)
    else:
        path.write_bytes(pickle.dumps(model))
    return path


@pytest.mark.parametrize(
    ("kind", "classes", "activation", "output"),
    [
        ("classifier", 2, "relu", "sigmoid"),
        ("classifier", 4, "tanh", "softmax"),
        ("classifier", 3, "logistic", "softmax"),
        ("regressor", 0, "identity", "identity"),
    ],
)
def test_sklearn_mlp_answers_like_predict_proba(tmp_path, kind, classes, activation, output):
    model, X = fitted(kind, classes, activation, hidden=(6, 5))
    spec = import_trained(save(model, tmp_path / ("m.joblib" if classes == 4 else "m.pkl")))
    assert spec.activations[-1].name == output and spec.sizes == (4, 6, 5, model.n_outputs_)
    ours = forward(spec, X.T).output.T
    if kind == "regressor":
        expected = model.predict(X).reshape(-1, 1)
    else:
        proba = model.predict_proba(X)
        expected = proba[:, 1:] if classes == 2 else proba  # binary: one sigmoid unit, predict_proba[:, 1]
    assert_matches_oracle(spec, X.T, expected.T, "float64")  # scikit-learn computes in float64 too
    assert ours.shape == expected.shape
    runtime = Runtime(model_bytes(spec), provider="cpu")
    assert_matches_oracle(spec, X.T.astype(np.float32), runtime.predict(X.astype(np.float32)).T, "float32")


def test_sklearn_refusals_name_the_problem(tmp_path):
    from sklearn.preprocessing import StandardScaler

    with pytest.raises(SpecError, match="holds a StandardScaler; forwardpass imports MLPClassifier and MLPRegressor"):
        import_trained(save(StandardScaler(), tmp_path / "s.pkl"))
    with pytest.raises(SpecError, match="is not fitted"):
        import_trained(save(sklearn.MLPClassifier(), tmp_path / "u.pkl"))
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle")
    with pytest.raises(SpecError, match="cannot load it"):
        import_trained(tmp_path / "junk.pkl")
    with pytest.raises(SpecError, match="unknown kind of model file"):
        import_trained(save(sklearn.MLPClassifier(), tmp_path / "m.bin"))


torch = pytest.importorskip("torch", reason="PyTorch is not installed (the interop extra)")


def torch_model(*layers):
    torch.manual_seed(0)
    return torch.nn.Sequential(*layers).eval()


@pytest.mark.parametrize("whole", [True, False])
def test_torch_sequential_answers_like_its_forward(tmp_path, whole):
    nn = torch.nn
    model = torch_model(
        nn.Linear(3, 8), nn.LeakyReLU(0.1), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 4), nn.Softmax(dim=1)
    )
    path = tmp_path / "m.pt"
    torch.save(model if whole else model.state_dict(), path)
    spec = import_trained(path, None if whole else "leaky_relu:0.1,tanh,softmax")
    assert spec.sizes == (3, 8, 8, 4)
    X = np.random.default_rng(0).standard_normal((50, 3))
    model[1].negative_slope = float(np.float32(0.1))  # as ONNX stores it, and so the import
    with torch.no_grad():
        expected = model.double()(torch.from_numpy(X)).numpy()
    assert_matches_oracle(spec, X.T, expected.T, "float64")


def test_torch_linear_after_linear_and_no_bias(tmp_path):
    nn = torch.nn
    model = torch_model(nn.Linear(3, 4, bias=False), nn.Linear(4, 2), nn.Sigmoid())
    torch.save(model, tmp_path / "m.pt")
    spec = import_trained(tmp_path / "m.pt")
    assert [a.name for a in spec.activations] == ["identity", "sigmoid"]
    X = np.random.default_rng(1).standard_normal((10, 3))
    with torch.no_grad():
        expected = model.double()(torch.from_numpy(X)).numpy()
    assert_matches_oracle(spec, X.T, expected.T, "float64")


def test_torch_refusals_name_the_layer(tmp_path):
    nn = torch.nn
    torch.save(torch_model(nn.Linear(3, 4), nn.GELU(), nn.Linear(4, 1)), tmp_path / "gelu.pt")
    with pytest.raises(SpecError, match="holds torch.nn.modules.activation.GELU, which forwardpass cannot map"):
        import_trained(tmp_path / "gelu.pt")
    torch.save(torch_model(nn.Linear(3, 4), nn.Softmax(dim=0)), tmp_path / "dim0.pt")
    with pytest.raises(SpecError, match="Softmax over dim 0"):
        import_trained(tmp_path / "dim0.pt")
    torch.save(torch_model(nn.Linear(3, 4), nn.Softmax(dim=1), nn.Linear(4, 1)), tmp_path / "hidden.pt")
    with pytest.raises(SpecError, match="layer 1 is hidden: softmax is an output-only activation"):
        import_trained(tmp_path / "hidden.pt")
    torch.save(torch_model(nn.Linear(3, 4)).state_dict(), tmp_path / "sd.pt")
    with pytest.raises(SpecError, match="a state dict holds no activations"):
        import_trained(tmp_path / "sd.pt")


def test_imported_models_are_built_served_and_answer_like_the_original(tmp_path):
    classifier, X = fitted("classifier", 3, "relu", hidden=(8,))
    save(classifier, tmp_path / "clf.pkl")
    nn = torch.nn
    net = torch_model(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 1), nn.Sigmoid())
    torch.save(net, tmp_path / "net.pt")
    repository = tmp_path / "models"
    for name, source in (("clf", "clf.pkl"), ("net", "net.pt")):
        command = [sys.executable, "-m", "forwardpass", "build", "--from", str(tmp_path / source), "--name", name,
                   "--repository", str(repository)]  # fmt: skip
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    server = ServerProcess(repository)
    try:
        from forwardpass.client import Client

        x = X[:20].astype(np.float32)
        with Client(server.url, timeout=30) as client:
            clf_answer, net_answer = client.infer("clf", x), client.infer("net", x)
        with torch.no_grad():
            net_expected = net(torch.from_numpy(x)).numpy()
        # The oracle of what was built is the original, to float64 rounding; the served answers are
        # within float32's bound of that oracle, as are PyTorch's own float32 answers.
        clf_spec = read_file(repository / "clf" / "1" / "model.onnx").spec
        # (the file holds the weights rounded to float32, which the float32 bound allows for)
        assert_matches_oracle(clf_spec, x.T, classifier.predict_proba(x.astype(np.float64)).T, "float32")
        assert_matches_oracle(clf_spec, x.T, clf_answer.T, "float32")
        net_spec = read_file(repository / "net" / "1" / "model.onnx").spec
        assert_matches_oracle(net_spec, x.T, net_answer.T, "float32")
        assert_matches_oracle(net_spec, x.T, net_expected.T, "float32")
    finally:
        assert server.stop() == 0
