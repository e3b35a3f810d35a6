"""A numpy-decorated run() for swagger generation."""

import numpy as np
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.schema_decorators import input_schema
from inference_schema.schema_decorators import output_schema


def init():
    print("Initializing")


@input_schema("data", NumpyParameterType(np.array([1.0, 2.0, 3.0])))
@output_schema(NumpyParameterType(np.array([10.0])))
def run(data):
    return np.array([float(data.sum())])
