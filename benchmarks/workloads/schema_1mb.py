"""Benchmark workload `schema_1mb`: the numeric_1mb data decoded by inference-schema into a numpy array."""

from __future__ import annotations

import numpy as np
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.schema_decorators import input_schema

# Only the sample's dtype and trailing dimension are enforced: any number of 16-column rows is accepted.
_SAMPLE = np.zeros((2, 16), dtype=np.float64)


def init() -> None:
    """Nothing to load."""


@input_schema("data", NumpyParameterType(_SAMPLE))
def run(data: np.ndarray) -> list[float]:
    """Return the column sums; the server has already turned the JSON list into a float64 array."""
    return [float(value) for value in data.sum(axis=0)]
