"""Weights from where users train: a fitted scikit-learn MLP, or a PyTorch nn.Sequential.

scikit-learn stores coefs_[l] as (n_in, n_out); the slides' W[l] is its transpose. Its hidden
`activation` and its `out_activation_` map onto ours (logistic is sigmoid; a multiclass classifier
ends in softmax, a binary one in one sigmoid unit equal to predict_proba[:, 1]). PyTorch's
nn.Linear.weight already is (n_out, n_in). Whatever does not map is refused by name.

Pickles run code when loaded: load only files you trust. scikit-learn models come as pickles
(.pkl, .joblib) by design; PyTorch files are loaded with weights_only=True, which admits only
tensors and the module classes forwardpass maps, never arbitrary code.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import numpy as np

from forwardpass.errors import Kind, SpecError

from .spec import Activation, NetworkSpec, parse_activations

# What each importer maps onto our activations: its own name -> ours. Every name in
# spec.ACTIVATIONS is either produced by an importer or listed, with the reason, as one it cannot.
SKLEARN_ACTIVATIONS = {
    "identity": "identity",
    "logistic": "sigmoid",
    "tanh": "tanh",
    "relu": "relu",
    "softmax": "softmax",
}
SKLEARN_CANNOT = {
    "leaky_relu": "MLPClassifier and MLPRegressor offer no leaky ReLU (activation is identity, logistic, tanh or relu)",
}
TORCH_ACTIVATIONS = {  # the torch.nn class name -> ours; torch is imported only when a file is loaded
    "Identity": "identity",
    "Sigmoid": "sigmoid",
    "Tanh": "tanh",
    "ReLU": "relu",
    "LeakyReLU": "leaky_relu",
    "Softmax": "softmax",
}
TORCH_CANNOT: dict[str, str] = {}  # torch.nn has a module for every activation we have
SKLEARN_MODELS = ("MLPClassifier", "MLPRegressor")
TORCH_SUFFIXES = (".pt", ".pth")
SKLEARN_SUFFIXES = (".pkl", ".pickle", ".joblib")


def import_trained(path: str | os.PathLike, activations: str | None = None) -> NetworkSpec:
    """A spec from a trained model file, by its suffix: .pkl/.joblib (scikit-learn) or .pt/.pth (PyTorch).

    `activations` (as `forwardpass build --activations` takes them) only for a PyTorch state dict,
    which holds none; a whole model's activations come from the file.
    """
    path = Path(path)
    if not path.exists():
        raise SpecError(f"{path}: no such file", Kind.NOT_FOUND)
    if path.suffix in SKLEARN_SUFFIXES:
        if activations is not None:
            raise SpecError(f"{path}: a scikit-learn model carries its activations; leave out --activations")
        return from_sklearn(path)
    if path.suffix in TORCH_SUFFIXES:
        return from_torch(path, activations)
    raise SpecError(f"{path}: unknown kind of model file; use {', '.join(SKLEARN_SUFFIXES + TORCH_SUFFIXES)}")


def from_sklearn(path: Path) -> NetworkSpec:
    """A fitted MLPClassifier or MLPRegressor, pickled or saved with joblib."""
    try:
        if path.suffix == ".joblib":
            import joblib

            model = joblib.load(path)
        else:
            with open(path, "rb") as f:
                model = pickle.load(f)  # noqa: S301 - documented: scikit-learn models are pickles
    except ImportError as exc:
        raise SpecError(f"{path}: loading it needs {exc.name} (pip install scikit-learn)") from None
    except Exception as exc:  # unpickling fails in many ways; all mean "not a model we can read"
        raise SpecError(f"{path}: cannot load it ({type(exc).__name__}: {exc})") from None
    kind = type(model).__name__
    if kind not in SKLEARN_MODELS:
        raise SpecError(f"{path}: holds a {kind}; forwardpass imports {' and '.join(SKLEARN_MODELS)}")
    if not hasattr(model, "coefs_"):
        raise SpecError(f"{path}: the {kind} is not fitted (it has no coefs_)")
    hidden, output = model.activation, getattr(model, "out_activation_", "identity")
    for name in (hidden, output):
        if name not in SKLEARN_ACTIVATIONS:
            raise SpecError(f"{path}: activation {name!r} has no forwardpass equivalent")
    depth = len(model.coefs_)
    acts = [Activation(SKLEARN_ACTIVATIONS[hidden])] * (depth - 1) + [Activation(SKLEARN_ACTIVATIONS[output])]
    weights = [np.asarray(w, dtype=np.float64).T for w in model.coefs_]
    biases = [np.asarray(b, dtype=np.float64).reshape(-1, 1) for b in model.intercepts_]
    sizes = (weights[0].shape[1], *(w.shape[0] for w in weights))
    return NetworkSpec(sizes, tuple(acts), tuple(weights), tuple(biases))


def from_torch(path: Path, activations: str | None = None) -> NetworkSpec:
    """An nn.Sequential of Linear layers and the activations we map, saved whole or as a state dict.

    A state dict holds no activations: give them (one per Linear layer).
    """
    try:
        import torch
    except ImportError:
        raise SpecError(f"{path}: loading it needs PyTorch (pip install torch)") from None
    nn = torch.nn
    allowed = [nn.Sequential, nn.Linear, *(getattr(nn, cls) for cls in TORCH_ACTIVATIONS)]
    try:
        with torch.serialization.safe_globals(allowed):
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # an unpickling error names the class it would not load
        refused = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if refused:
            raise SpecError(f"{path}: holds {refused.group(1)}, which forwardpass cannot map") from None
        raise SpecError(f"{path}: cannot load it with weights_only ({str(exc).strip().splitlines()[0]})") from None
    if isinstance(loaded, nn.Module):
        if activations is not None:
            raise SpecError(f"{path}: a whole module carries its activations; leave out --activations")
        return _from_module(path, loaded)
    if isinstance(loaded, dict):
        return _from_state_dict(path, loaded, activations)
    raise SpecError(f"{path}: holds a {type(loaded).__name__}; expected an nn.Sequential or its state dict")


def _from_module(path: Path, module) -> NetworkSpec:
    import torch.nn as nn

    if not isinstance(module, nn.Sequential):
        raise SpecError(f"{path}: holds a {type(module).__name__}; forwardpass imports an nn.Sequential")
    weights, biases, acts = [], [], []
    pending_linear = False
    for index, layer in enumerate(module):
        if isinstance(layer, nn.Linear):
            if pending_linear:
                acts.append(Activation("identity"))  # Linear after Linear: a linear layer between
            weights.append(layer.weight.detach().double().numpy())
            bias = layer.bias.detach().double().numpy() if layer.bias is not None else np.zeros(layer.out_features)
            biases.append(bias.reshape(-1, 1))
            pending_linear = True
            continue
        activation = _torch_activation(path, index, layer)
        if not pending_linear:
            raise SpecError(f"{path}: layer {index} ({type(layer).__name__}) does not follow a Linear layer")
        acts.append(activation)
        pending_linear = False
    if pending_linear:
        acts.append(Activation("identity"))
    if not weights:
        raise SpecError(f"{path}: the nn.Sequential has no Linear layer")
    sizes = (weights[0].shape[1], *(w.shape[0] for w in weights))
    return NetworkSpec(sizes, tuple(acts), tuple(weights), tuple(biases))


def _torch_activation(path: Path, index: int, layer) -> Activation:
    import torch.nn as nn

    # The exact class, not a subclass: a subclass may compute something else under the same name.
    name = TORCH_ACTIVATIONS.get(type(layer).__name__)
    if name is None or type(layer) is not getattr(nn, type(layer).__name__):
        raise SpecError(f"{path}: layer {index} is {type(layer).__name__}, which forwardpass cannot map")
    if name == "leaky_relu":
        return Activation(name, float(layer.negative_slope))
    if name == "softmax" and layer.dim not in (1, -1):
        raise SpecError(f"{path}: layer {index} is Softmax over dim {layer.dim}; forwardpass takes dim=1 (classes)")
    return Activation(name)


def _from_state_dict(path: Path, state: dict, activations: str | None) -> NetworkSpec:
    names = [key[: -len(".weight")] for key in state if key.endswith(".weight")]
    if not names:
        raise SpecError(f"{path}: a state dict without any '<layer>.weight'")
    if activations is None:
        raise SpecError(
            f"{path}: a state dict holds no activations: give --activations, one per Linear layer ({len(names)})"
        )
    names.sort(key=lambda name: [int(p) if p.isdigit() else p for p in name.split(".")])
    weights = [state[f"{name}.weight"].detach().double().numpy() for name in names]
    biases = []
    for name, w in zip(names, weights):
        bias = state.get(f"{name}.bias")
        biases.append((bias.detach().double().numpy() if bias is not None else np.zeros(w.shape[0])).reshape(-1, 1))
    sizes = (weights[0].shape[1], *(w.shape[0] for w in weights))
    return NetworkSpec(sizes, parse_activations(activations, len(names)), tuple(weights), tuple(biases))
