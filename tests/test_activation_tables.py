"""Each layer of the system keeps its own table keyed by activation name: the oracle's functions,
the graph's ops and attributes, readback's inverse, the tolerance's error rules, and what each
importer maps. A name added to spec.ACTIVATIONS and missed by any one of them fails here."""

import numpy as np
import pytest

from forwardpass import tolerance
from forwardpass.builder import graph, oracle, readback, trained
from forwardpass.builder.graph import ExportOptions, build_model
from forwardpass.builder.readback import read_model
from forwardpass.builder.spec import ACTIVATIONS, OUTPUT_ONLY, Activation

from numerics import random_spec

TABLES = {
    "oracle": oracle.FUNCTIONS,
    "graph op": graph.ONNX_OP,
    "graph attributes": graph.ONNX_ATTRIBUTES,
    "readback parameters": readback.PARAMETER_OF,
    "tolerance": tolerance.ERROR_THROUGH,
}
IMPORTERS = {  # what each maps (its name -> ours), and what it cannot produce, with the reason
    "scikit-learn": (trained.SKLEARN_ACTIVATIONS, trained.SKLEARN_CANNOT),
    "PyTorch": (trained.TORCH_ACTIVATIONS, trained.TORCH_CANNOT),
}


def activation(name: str) -> Activation:
    return Activation(name, 0.2 if name == "leaky_relu" else None)


@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_every_table_has_an_entry_for_every_activation(name, table):
    assert name in TABLES[table], f"the {table} table has no entry for {name!r}"


@pytest.mark.parametrize("table", TABLES)
def test_no_table_names_an_activation_the_spec_does_not_know(table):
    assert set(TABLES[table]) <= set(ACTIVATIONS)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_readback_maps_the_graph_op_back_to_the_same_activation(name):
    assert readback.ACTIVATION_OF[graph.ONNX_OP[name]] == name


@pytest.mark.parametrize("layout", ["rows", "columns"])
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_a_written_activation_reads_back_as_itself(name, layout):
    act = activation(name)
    hidden = Activation("relu") if name in OUTPUT_ONLY else act
    spec = random_spec(np.random.default_rng(0), (3, 4, 2), (hidden, act))
    assert read_model(build_model(spec, ExportOptions(layout=layout))).spec.activations == (hidden, act)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_the_oracle_and_the_tolerance_handle_every_activation(name):
    z = np.linspace(-3.0, 3.0, 12).reshape(4, 3)
    a = oracle.g(activation(name), z)
    bound = tolerance.error_through(name, activation(name).alpha, np.full_like(z, 1e-7), np.abs(a), 2.0**-24)
    assert a.shape == bound.shape == z.shape and np.all(np.isfinite(a)) and np.all(bound > 0)


@pytest.mark.parametrize("importer", IMPORTERS)
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_each_importer_maps_every_activation_or_says_why_it_cannot(name, importer):
    maps, cannot = IMPORTERS[importer]
    produced = name in maps.values()
    assert produced != (name in cannot), f"{importer}: {name!r} must be mapped or listed as unmappable, not both"
    assert produced or cannot[name], f"{importer}: no reason given for not producing {name!r}"


@pytest.mark.parametrize("importer", IMPORTERS)
def test_importers_produce_only_activations_the_spec_knows(importer):
    maps, cannot = IMPORTERS[importer]
    assert set(maps.values()) | set(cannot) <= set(ACTIVATIONS)


def test_a_made_up_activation_makes_the_tolerance_raise_rather_than_count_it_exact():
    zeros = np.zeros((2, 1))
    with pytest.raises(ValueError, match="no error bound for activation 'swish'"):
        tolerance.error_through("swish", None, zeros, zeros, 2.0**-24)
