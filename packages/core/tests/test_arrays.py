"""Large numeric arrays built a piece at a time give exactly what the whole-document path gives, in less memory."""

from __future__ import annotations

import json
import random
import tracemalloc
from typing import Any

import numpy as np
import pytest
from core_helpers import MakeClient
from flask import Request
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from werkzeug.test import EnvironBuilder

from azureml_inference_server_http.server import arrays
from azureml_inference_server_http.server import jsonio
from azureml_inference_server_http.server import user_script
from azureml_inference_server_http.server.inputs import run_arguments
from azureml_inference_server_http.server.inputs import to_numpy

ROWS = 6000  # about 1 MB of JSON with 16 columns


def _rows(rows: int = ROWS, cols: int = 16, seed: int = 7) -> list[list[float]]:
    rng = random.Random(seed)
    return [[round(rng.uniform(-1000, 1000), rng.randint(0, 9)) for _ in range(cols)] for _ in range(rows)]


def _usual(data: bytes, params: dict[str, Any]) -> dict[str, Any]:
    """The whole-document path: parse everything, then convert the numpy parameters."""
    document = jsonio.loads(data)
    for name, param_type in params.items():
        if name in document:
            document[name] = to_numpy(param_type, document[name])
    return document  # type: ignore[no-any-return]


def _assert_same(got: dict[str, Any], expected: dict[str, Any]) -> None:
    assert list(got) == list(expected)
    for key, value in expected.items():
        if isinstance(value, np.ndarray):
            assert isinstance(got[key], np.ndarray)
            assert got[key].dtype == value.dtype
            assert got[key].shape == value.shape
            assert np.array_equal(got[key], value, equal_nan=True)
            assert got[key].flags.c_contiguous and got[key].flags.writeable
        else:
            assert got[key] == value


def _check_taken(data: bytes, params: dict[str, Any], piece_bytes: int = arrays.PIECE_BYTES) -> dict[str, Any]:
    got = arrays.loads_document(data, arrays.array_specs(params), piece_bytes=piece_bytes)
    assert got is not None, "the piecewise path was not taken"
    _assert_same(got, _usual(data, params))
    return got


FLOAT_2D = {"data": NumpyParameterType(np.zeros((2, 16), dtype=np.float64))}


def test_float_matrix_is_built_from_pieces() -> None:
    data = json.dumps({"data": _rows()}, separators=(",", ":")).encode()
    assert len(data) > 4 * arrays.PIECE_BYTES
    got = _check_taken(data, FLOAT_2D)
    assert got["data"].shape == (ROWS, 16)


@pytest.mark.parametrize(
    "dumps",
    [
        lambda doc: json.dumps(doc),  # ", " between numbers, "], [" between rows
        lambda doc: json.dumps(doc, indent=2),  # newlines everywhere
        lambda doc: json.dumps(doc).replace("], [", "] , ["),  # rows never cut: one piece
        lambda doc: json.dumps(doc)[:-1] + ' , "after": "x[1],[2]"}',
        lambda doc: '{"before": {"data": [1, "]"]}, "s": "\\"data\\": [[1]]",' + json.dumps(doc)[1:],
    ],
    ids=["spaces", "indented", "uncut", "key-after", "keys-before"],
)
@pytest.mark.parametrize("piece_bytes", [arrays.PIECE_BYTES, 1, 1000, 10**7])
def test_layouts_give_the_same_document(dumps: Any, piece_bytes: int) -> None:
    _check_taken(dumps({"data": _rows()}).encode(), FLOAT_2D, piece_bytes)


@pytest.mark.parametrize(
    ("sample", "values"),
    [
        (np.zeros(3, dtype=np.float64), [random.Random(1).uniform(-1, 1) for _ in range(60000)]),
        (np.zeros((2, 4), dtype=np.int64), [[i, -i, i * 7, 10**17 + i] for i in range(20000)]),
        (np.zeros((2, 8), dtype=np.float32), _rows(8000, 8)),
        (np.zeros((1, 3, 4)), [[[i, i + 0.5, -i, 1e-300], [0, 1, 2, 3], [9, 8, 7, 6]] for i in range(4000)]),
        (np.zeros((2, 3), dtype=np.bool_), [[1, 0, 1]] * 30000),
        (np.zeros((2, 16), dtype=np.float64), [[None if i % 5 == 0 else i for i in range(16)]] * 5000),
    ],
    ids=["1d", "int64", "float32", "3d", "bool", "null-is-nan"],
)
def test_dtypes_and_dimensions(sample: np.ndarray, values: Any) -> None:
    _check_taken(json.dumps({"data": values}).encode(), {"data": NumpyParameterType(sample)})


def test_two_array_parameters_and_other_values() -> None:
    params = {
        "a": NumpyParameterType(np.zeros((2, 16))),
        "b": NumpyParameterType(np.zeros(2, dtype=np.int64)),
    }
    doc = {"b": list(range(30000)), "meta": {"x": [1, 2]}, "a": _rows(), "flag": True}
    got = _check_taken(json.dumps(doc).encode(), params)
    assert got["meta"] == {"x": [1, 2]} and got["flag"] is True


def _big(prefix: str = "", rows: str | None = None, suffix: str = "") -> bytes:
    rows = rows if rows is not None else ",".join(json.dumps(row) for row in _rows())
    return f'{{{prefix}"data": [{rows}]{suffix}}}'.encode()


GOOD_ROWS = ",".join(json.dumps(row) for row in _rows())


@pytest.mark.parametrize(
    "data",
    [
        _big(rows=GOOD_ROWS + ',[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,"16"]'),  # a string in the array
        _big(rows=GOOD_ROWS + ",[1,2,3]"),  # ragged
        _big(rows=GOOD_ROWS + ",[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,NaN]"),  # the policy refuses NaN
        _big(rows=GOOD_ROWS + ",[1e999,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]"),  # overflows a float
        _big(rows=GOOD_ROWS + ",[12345678901234567890123,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]"),  # long integer
        _big(rows=GOOD_ROWS + ",[01,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]"),  # not JSON
        _big(rows=GOOD_ROWS + ",,[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]"),  # empty element
        _big(rows=GOOD_ROWS + ","),  # trailing comma
        _big(rows=GOOD_ROWS + ",{}"),  # an object in the array
        _big(rows=GOOD_ROWS.replace("],[", "]],[[", 1)),  # not one array
        _big(suffix=', "data": 1'),  # a later duplicate key wins
        _big(prefix='"x": ', suffix=', "data": 1').replace(b'"x": "data": ', b'"x": {"data": ') + b"}",  # nested
        _big(prefix='"x": 1, ').replace(b'"data"', b'"d\\u0061ta"'),  # the key spelled with an escape
        _big(suffix=', "x": "' + arrays._PLACEHOLDER + '0"'),  # the placeholder itself
        _big(suffix=', "x": tru'),  # invalid JSON after the array
        _big().replace(b"[", b"[\x00", 1),  # a control character
        b"[" + _big() + b"]",  # not an object at the top level
    ],
    ids=[
        "string",
        "ragged",
        "nan",
        "overflow",
        "long-int",
        "leading-zero",
        "empty-element",
        "trailing-comma",
        "object",
        "two-arrays",
        "duplicate-key",
        "nested-key",
        "escaped-key",
        "placeholder",
        "invalid-after",
        "control-char",
        "top-level-array",
    ],
)
@pytest.mark.parametrize("piece_bytes", [arrays.PIECE_BYTES, 1, 1000, 10**7])
def test_anything_unusual_takes_the_usual_path(data: bytes, piece_bytes: int) -> None:
    assert arrays.loads_document(data, arrays.array_specs(FLOAT_2D), piece_bytes=piece_bytes) is None


@pytest.mark.parametrize("piece_bytes", [arrays.PIECE_BYTES, 1, 1000, 10**7])
@pytest.mark.parametrize("numbers", ["{0},", "{0},,1", ",{0}", "{0}, ,1", "{0},1,"])
def test_vector_with_an_empty_element_takes_the_usual_path(numbers: str, piece_bytes: int) -> None:
    values = ",".join(str(value) for row in _rows() for value in row)
    data = ('{"data": [' + numbers.format(values) + "]}").encode()
    with pytest.raises(jsonio.JSONInputError):
        jsonio.loads(data)
    specs = arrays.array_specs({"data": NumpyParameterType(np.zeros(2))})
    assert arrays.loads_document(data, specs, piece_bytes=piece_bytes) is None


def test_small_arrays_and_other_dtypes_take_the_usual_path() -> None:
    small = json.dumps({"data": _rows(20)}).encode()
    assert arrays.loads_document(small, arrays.array_specs(FLOAT_2D)) is None
    specs = arrays.array_specs(
        {
            "s": NumpyParameterType(np.array(["a", "b"])),
            "t": NumpyParameterType(np.array(["2020-01-01"], dtype="datetime64[D]")),
            "o": NumpyParameterType(np.array([1, "x"], dtype=object)),
            "free": NumpyParameterType(np.zeros((2, 2)), enforce_column_type=False),
        }
    )
    assert specs == {}


def test_shape_mismatch_takes_the_usual_path() -> None:
    params = {"data": NumpyParameterType(np.zeros((2, 15)))}
    data = json.dumps({"data": _rows()}).encode()
    assert arrays.loads_document(data, arrays.array_specs(params)) is None
    unenforced = {"data": NumpyParameterType(np.zeros((2, 15)), enforce_shape=False)}
    _check_taken(data, unenforced)


def test_peak_memory_is_a_fraction_of_the_whole_document_path() -> None:
    data = json.dumps({"data": _rows()}, separators=(",", ":")).encode()
    specs = arrays.array_specs(FLOAT_2D)

    def peak(parse: Any) -> int:
        tracemalloc.start()
        try:
            result = parse()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            del result

    usual = peak(lambda: _usual(data, FLOAT_2D))
    pieces = peak(lambda: arrays.loads_document(data, specs))
    array_bytes = ROWS * 16 * 8
    # The usual path holds every row as Python lists (several times the array); pieces hold one piece's lists.
    assert usual > 4 * array_bytes
    assert pieces < 2 * array_bytes + 4 * arrays.PIECE_BYTES


BIG_SCHEMA = """
import numpy as np
from inference_schema.schema_decorators import input_schema
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
def init(): pass
@input_schema("data", NumpyParameterType(np.zeros((2, 16))))
def run(data):
    return {"type": type(data).__name__, "shape": list(data.shape), "sum": float(data.sum())}
"""


def test_score_route_answers_the_same_either_way(client: MakeClient) -> None:
    rows = _rows()
    app = client(BIG_SCHEMA)
    ok = app.post("/score", data=json.dumps({"data": rows}), content_type="application/json")
    assert ok.status_code == 200
    assert ok.get_json() == {"type": "ndarray", "shape": [ROWS, 16], "sum": float(np.array(rows).sum())}
    # A refused body gets the usual path's message, not one about a piece of it.
    bad = _big(rows=GOOD_ROWS + ",[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,NaN]")
    refused = app.post("/score", data=bad, content_type="application/json")
    assert refused.status_code == 400
    with pytest.raises(jsonio.JSONInputError) as usual:
        jsonio.loads(bad)
    assert refused.get_json() == {"message": f"POST body could not be decoded as JSON: {usual.value}"}


def test_model_data_collection_keeps_the_lists(write_script: Any) -> None:
    path = write_script(BIG_SCHEMA, "big.py")
    script = user_script.load(str(path), str(path.parent))
    rows = _rows()
    body = json.dumps({"data": rows}).encode()

    def arguments(keep_input: bool) -> tuple[dict[str, Any], Any]:
        environ = EnvironBuilder(method="POST", data=body, content_type="application/json").get_environ()
        return run_arguments(script, Request(environ), keep_input=keep_input)

    kwargs, model_input = arguments(keep_input=True)
    assert model_input == {"data": rows}  # the JSON values, which model data collection records
    built_kwargs, built_input = arguments(keep_input=False)
    assert isinstance(built_input["data"], np.ndarray)  # built from pieces: no lists were made
    assert np.array_equal(kwargs["data"], built_kwargs["data"])
