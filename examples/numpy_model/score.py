"""A numpy model loaded from the model directory, with typed input (``@input_schema``).

The model is a linear regression stored in ``model/linear.txt`` (four weights, then the bias). init() finds it
through ``AZUREML_MODEL_DIR``, which ``--model_dir`` sets, exactly as on Azure ML. run() takes
``{"data": [[f1, f2, f3, f4], ...]}`` and returns one prediction per row. The decorators turn "data" into a numpy
array of shape (rows, 4) and describe the input and output in ``/swagger.json``.

Run it from the repository root::

    azmlinfsrv --entry_script examples/numpy_model/score.py --model_dir examples/numpy_model/model
    curl -s localhost:5001/score -H "Content-Type: application/json" -d '{"data": [[1, 2, 3, 4]]}'
"""

import os

import numpy as np
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.schema_decorators import input_schema
from inference_schema.schema_decorators import output_schema

MODEL_FILE = "linear.txt"
FEATURES = 4

weights = None
bias = 0.0


def init():
    """Load the model once per worker process, before the first request."""
    global weights, bias
    model_dir = os.environ.get("AZUREML_MODEL_DIR")
    if not model_dir:
        raise RuntimeError("AZUREML_MODEL_DIR is not set: start the server with --model_dir <folder>")
    values = np.loadtxt(os.path.join(model_dir, MODEL_FILE), ndmin=1)
    if values.shape != (FEATURES + 1,):
        raise ValueError(f"{MODEL_FILE} must hold {FEATURES} weights and a bias, found {values.shape[0]} values")
    weights, bias = values[:FEATURES], float(values[FEATURES])
    print(f"Loaded a linear model with {FEATURES} features from {model_dir}")


@input_schema("data", NumpyParameterType(np.array([[1.0, 2.0, 3.0, 4.0]])))
@output_schema(NumpyParameterType(np.array([17.0])))
def run(data):
    """``data`` arrives as a numpy array of shape (rows, 4); the result is one float per row.

    ``tolist()`` keeps the script portable to upstream 1.5.1, which cannot serialize numpy arrays (this server
    converts them itself).
    """
    return (data @ weights + bias).tolist()
