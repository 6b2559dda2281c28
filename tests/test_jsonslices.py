"""A large JSON body parsed a slice at a time (server/jsonslices.py) reads as a whole parse does, and
refuses what a whole parse refuses; the worker's memory for it is measured in test_http_limits.py."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest

from forwardpass.errors import ForwardpassError
from forwardpass.server import jsonslices, restcodec


def request(data, *, before: str = "", after: str = "") -> bytes:
    return (
        f'{{{before}"id": "a", "inputs": [{{"name": "x", "shape": [1, 3], "datatype": "FP32", '
        f'"data": {json.dumps(data)}}}]{after}}}'
    ).encode()


def whole(body: bytes) -> tuple[dict, np.ndarray]:
    document = json.loads(body)
    data = np.asarray(document["inputs"][0].pop("data")).reshape(-1)
    return document, data


def sliced(body: bytes | bytearray) -> tuple[dict, np.ndarray]:
    document = jsonslices.parse(body)
    assert document is not None
    return document, document["inputs"][0].pop("data")


rng = np.random.default_rng(11)
FLOATS = rng.standard_normal((120_000, 3))


@pytest.mark.parametrize(
    "data",
    [
        FLOATS.ravel().tolist(),
        FLOATS.tolist(),
        FLOATS.reshape(-1, 4, 3).tolist(),  # three levels deep
        np.round(FLOATS * 1e6).astype(np.int64).ravel().tolist(),
        np.round(FLOATS * 1e6).astype(np.int64).tolist(),
        [1, 2.5] * 200_000,  # integers among floats: floats, as NumPy reads the whole list
    ],
    ids=["flat", "rows", "3-deep", "integers", "integer-rows", "mixed"],
)
def test_a_sliced_parse_reads_as_a_whole_one(data):
    body = request(data, after=', "outputs": [{"name": "y"}], "parameters": {"n": 1}')
    assert len(body) > jsonslices.LARGE_BODY
    document, values = sliced(body)
    expected_document, expected = whole(body)
    assert document == expected_document
    assert values.dtype == expected.dtype and np.array_equal(values, expected)
    _, values = sliced(bytearray(body))  # the server buffers a large body in a bytearray
    assert np.array_equal(values, expected)


def test_nan_and_infinity_read_as_python_writes_them():
    body = request([1.5] * 300_000).replace(b"1.5, 1.5, 1.5", b"NaN, -Infinity, Infinity", 1)
    _, values = sliced(body)
    assert np.isnan(values[0]) and values[1] == -np.inf and values[2] == np.inf and values[3] == 1.5


def test_a_small_body_is_left_to_a_whole_parse():
    assert jsonslices.parse(request([1.0, 2.0, 3.0])) is None
    assert jsonslices.parse(request([1.0] * 300_000).replace(b'"data"', b'"dat"')) is None  # no data list


def test_a_data_key_written_with_an_escaped_quote_is_not_cut():
    body = request([1.0] * 300_000).replace(b'"id": "a"', b'"\\"data": [' + b"1, " * 30_000 + b"1]")
    document, values = sliced(body)
    assert len(document['"data']) == 30_001 and values.size == 300_000


LONG = [1.5] * 300_000
REFUSED = {
    "ragged": (request(FLOATS[:-1].tolist() + [[1.0, 2.0]]), "not a rectangular list"),
    "ragged 3-deep": (request(FLOATS.reshape(-1, 4, 3).tolist() + [[[1.0, 2.0, 3.0]]]), "not a rectangular list"),
    "empty rows": (request([[]] * 300_000), "not valid JSON"),
    "trailing comma": (request([1.5] * 300_000).replace(b"1.5]", b"1.5, ]"), "not valid JSON"),
    "a missing comma": (request([[1.5, 2.5]] * 200_000).replace(b"], [", b"] [", 1), "not valid JSON"),
    "a plus sign": (request([1.5] * 300_000).replace(b"1.5", b"+1.5", 1), "not valid JSON"),
    "true": (request([1.5] * 300_000 + [True]), "numbers only"),
    "null": (request([1.5] * 300_000 + [None]), "numbers only"),
    "a string": (request([1.5] * 300_000 + ["1"]), "numbers only"),
    "an object": (request([1.5] * 300_000 + [{"a": 1}]), "numbers only"),
    "a list under parameters": (
        request([1.5], after=f', "parameters": {{"data": {[1.5] * 300_000}}}'),
        "only as an input",
    ),
    "a large id": (request([1.5] * 300_000, before=f'"tag": "{"p" * 1_100_000}", '), "besides lists of numbers"),
    "the marker sent": (
        request([1.5] * 300_000).replace(
            b'"inputs": [', b'"inputs": [{"name": "z", "data": {"\\u0000forwardpass cut-out data": 0}}, '
        ),
        "only as an input",
    ),
}


@pytest.mark.parametrize("body, words", REFUSED.values(), ids=REFUSED.keys())
def test_what_a_whole_parse_refuses_is_refused_naming_it(body, words):
    assert len(body) > jsonslices.LARGE_BODY
    with pytest.raises(ForwardpassError, match=words):
        request_of(body)


def request_of(body: bytes):
    return restcodec.infer_request("m", "", body, None, None)


def test_the_json_codec_takes_the_sliced_arrays_as_they_are():
    body = request(FLOATS.tolist())
    parsed = request_of(body)
    assert np.array_equal(parsed.inputs[0].data, FLOATS.ravel())
    assert orjson.loads(body)["id"] == parsed.id
